"""Rebuilding a capsule's environment, cold and from the cache, and verifying many capsules that share it.

``nbcapsule rebuild`` of the demo capsule with an empty environment cache (uv's download cache warm,
as on any machine that installs Python packages) and again from the environment cache; then
``nbcapsule verify --fresh-env`` of N capsules exported from one project, which share one
environment: the first builds it, the rest reuse it. Each step is a fresh CLI process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def _cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "nbcapsule"), *args], capture_output=True, text=True, env=env, cwd=cwd)
    return time.perf_counter() - start, done


def _demo_crate(workdir: Path, env: dict[str, str]) -> Path:
    shutil.copytree(HERE.parent / "notebooks", workdir / "notebooks",
                    ignore=shutil.ignore_patterns("capsules", "results", ".ipynb*", "registry.sqlite3"))
    seconds, done = _cli("export", str(workdir / "notebooks" / "demo.ipynb"), "--execute", "--license", "CC0-1.0",
                         "--dest", str(workdir / "demo-caps"), "--json", env=env, cwd=workdir / "notebooks")
    if done.returncode:
        raise SystemExit(f"exporting the demo failed:\n{done.stderr[-3000:]}")
    return Path(json.loads(done.stdout)["crate"])


def run(count: int = 20) -> list[dict]:
    workdir = Path(tempfile.mkdtemp(prefix="nbcapsule-bench-rebuild-"))
    uv_cache = subprocess.run([str(BIN / "uv"), "cache", "dir"], capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, XDG_CACHE_HOME=str(workdir / "cache"), UV_CACHE_DIR=uv_cache)
    rows = []
    try:
        crate = _demo_crate(workdir, env)
        cold, done = _cli("rebuild", str(crate), "--json", env=env)
        if done.returncode:
            raise SystemExit(f"rebuild failed:\n{done.stderr[-3000:]}")
        warm, _ = _cli("rebuild", str(crate), "--json", env=env)
        print(f"rebuild of the demo capsule: {cold:.2f} s cold (empty environment cache), {warm:.2f} s cached")
        rows.append({"name": "rebuild demo env: cold vs from the cache", "ours_s": round(cold, 3),
                     "baseline": "the same rebuild, cached", "baseline_s": round(warm, 3),
                     "ratio": round(cold / warm, 1), "target": None, "pass": None})
        project = workdir / "shared"
        project.mkdir()
        subprocess.run(["git", "init", "-q", str(project)], check=True)
        import nbformat

        crates = []
        for i in range(count):
            nb = nbformat.v4.new_notebook()
            nb.cells = [nbformat.v4.new_markdown_cell(f"# Capsule {i}"),
                        nbformat.v4.new_code_cell(f"import tqdm\nprint(sum(range({i + 10})))")]
            nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
            path = project / f"n{i:02d}.ipynb"
            nbformat.write(nb, str(path))
            _, done = _cli("export", str(path), "--execute", "--license", "MIT", "--dest", str(workdir / "caps"),
                           "--json", env=env, cwd=project)
            crates.append(json.loads(done.stdout)["crate"])
        times, verdicts = [], []
        for crate_path in crates:
            seconds, done = _cli("verify", crate_path, "--fresh-env", "--json", "--no-record", env=env)
            times.append(seconds)
            verdicts.append(json.loads(done.stdout)["verdict"] if done.stdout.strip() else f"exit {done.returncode}")
        builds = len(list((workdir / "cache" / "scidex-nbcapsule" / "envs").glob("[0-9a-f]*"))) - 1
        print(f"verify --fresh-env of {count} capsules sharing one environment: first {times[0]:.2f} s, then median "
              f"{statistics.median(times[1:]):.2f} s per capsule; {builds} environment build(s) for them; "
              f"verdicts {sorted(set(verdicts))}")
        rows.append({"name": f"verify --fresh-env, {count} capsules, one env: per capsule", "ours_s":
                     round(statistics.median(times[1:]), 3), "baseline": "the first, which built the env",
                     "baseline_s": round(times[0], 3), "ratio": round(statistics.median(times[1:]) / times[0], 3),
                     "target": None, "pass": builds == 1 and set(verdicts) == {"verified"}})
        return rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args(argv)
    for row in run(args.count):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
