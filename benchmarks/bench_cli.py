"""How long ``nbcapsule`` takes before it does anything: wall time of whole CLI processes.

Each command runs as a fresh process, as a user types it, beside ``python -c pass`` (the
interpreter's own start-up) in the same rounds; medians are reported. The registration is of
a small real crate into an empty SQLite registry each time. ``-X importtime`` lists what the
CLI's import costs, largest first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

BIN = Path(sys.executable).parent
#: Wall-time limits in seconds (issue 13).
LIMITS = {"--help": 0.3, "list": 0.3, "register": 0.5}


def _wall(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def _crate(workdir: Path, env: dict[str, str]) -> Path:
    project = workdir / "project"
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    (project / "data.csv").write_text("x,y\n1,2\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# CLI benchmark"), nbformat.v4.new_code_cell("print(1)")]
    nbformat.write(nb, str(project / "a.ipynb"))
    out = subprocess.run([str(BIN / "nbcapsule"), "export", str(project / "a.ipynb"), "--input",
                          str(project / "data.csv"), "--license", "MIT", "--dest", str(workdir / "caps"), "--json"],
                         check=True, capture_output=True, text=True, env=env)
    return Path(json.loads(out.stdout)["crate"])


def import_profile(top: int = 12) -> list[tuple[int, str]]:
    """The CLI's heaviest imports (cumulative microseconds, module) from ``python -X importtime``, parser built."""
    code = "from scidex_nbcapsule.cli import build_parser; build_parser()"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                          capture_output=True, text=True, check=True)
    rows = []
    for line in done.stderr.splitlines():
        found = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if found:
            rows.append((int(found.group(1)), found.group(3)))
    return sorted(rows, reverse=True)[:top]


def run(rounds: int = 7) -> list[dict]:
    workdir = Path(tempfile.mkdtemp(prefix="nbcapsule-bench-cli-"))
    env = dict(os.environ, XDG_CACHE_HOME=str(workdir / "cache"))
    try:
        crate = _crate(workdir, env)
        db = workdir / "registry.sqlite3"
        url = f"sqlite:///{db}"
        subprocess.run([str(BIN / "nbcapsule"), "list", "--db", url], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=env)
        commands = {
            "--help": [str(BIN / "nbcapsule"), "--help"],
            "list": [str(BIN / "nbcapsule"), "list", "--db", url],
            "register": [str(BIN / "nbcapsule"), "register", str(crate), "--db", url],
        }
        times: dict[str, list[float]] = {name: [] for name in ["python -c pass", *commands]}
        for _ in range(rounds):
            times["python -c pass"].append(_wall([sys.executable, "-c", "pass"], env))
            for name, argv in commands.items():
                if name == "register":
                    db.unlink(missing_ok=True)  # a first registration each round, not "already registered"
                times[name].append(_wall(argv, env))
        base = statistics.median(times["python -c pass"])
        rows = []
        for name in commands:
            wall = statistics.median(times[name])
            print(f"nbcapsule {name}: median {wall:.3f} s of {rounds} (python -c pass {base:.3f} s)", flush=True)
            rows.append({"name": f"CLI nbcapsule {name} wall (limit {LIMITS[name]} s)", "ours_s": round(wall, 3),
                         "baseline": "python -c pass", "baseline_s": round(base, 3), "ratio": round(wall / base, 1),
                         "target": None, "pass": wall <= LIMITS[name]})
        print("heaviest imports of the CLI with its parser built (cumulative):")
        for micros, module in import_profile():
            print(f"  {micros / 1000:8.1f} ms  {module}")
        return rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    for row in run(args.rounds):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
