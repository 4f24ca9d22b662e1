"""``make bench``: every benchmark in one run, then one table.

Ratios compare ours with a baseline measured in the same run on the same machine;
they are figures to read, not pass/fail tests. ``--quick`` uses small sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_capture  # noqa: E402
import bench_cli  # noqa: E402
import bench_export  # noqa: E402


def _skipped(name: str, why: str) -> dict:
    print(f"SKIPPED {name}: {why}", flush=True)
    return {"name": f"{name} (skipped: {why})"[:58], "ours_s": None, "baseline": why, "baseline_s": None,
            "ratio": None, "target": None, "pass": None, "skipped": why}


def _script(name: str, *args: str) -> str | None:
    """A benchmark script written by another helper; None (and a clear line) when it is absent or fails."""
    if not (HERE / name).is_file():
        print(f"\n== SKIPPED {name}: benchmarks/{name} does not exist yet", flush=True)
        return None
    print(f"\n== {name} {' '.join(args)}", flush=True)
    done = subprocess.run([sys.executable, str(HERE / name), *args], capture_output=True, text=True)
    print(done.stdout, flush=True)
    if done.returncode:
        print(f"== SKIPPED {name}: exit status {done.returncode}\n{done.stderr[-2000:]}", flush=True)
        return None
    return done.stdout


def verify_rows(quick: bool) -> list[dict]:
    out = _script("bench_verify.py", "--repeat", "1" if quick else "3")
    if out is None:
        return [_skipped("bench_verify.py", "missing or failed")]
    plain = float(re.search(r"plain nbclient execution:\s+([\d.]+)", out).group(1))
    checked = float(re.search(r"verify \(fixity\+run\+compare\):\s+([\d.]+)", out).group(1))
    ratio = checked / plain
    return [{"name": "verify 20-cell notebook vs plain nbclient run", "ours_s": checked, "baseline": "nbclient execution",
             "baseline_s": plain, "ratio": round(ratio, 3), "target": 1.2, "pass": ratio <= 1.2}]


def registry_rows(n: int) -> list[dict]:
    out = _script("bench_registry.py", "--n", str(n), "--rounds", "300" if n > 10_000 else "1000")
    if out is None:
        return [_skipped(f"bench_registry.py --n {n}", "missing or failed")]
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in ("sqlite", "postgres") and len(parts) >= 7:
            show_p95 = float(parts[4].split("/")[1])
            find_p95 = float(parts[6].split("/")[1])
            for what, p95 in (("show", show_p95), ("find_by_digest", find_p95)):
                rows.append({"name": f"registry {parts[0]} {what} p95 at {int(parts[1]):,} capsules (ms)",
                             "ours_s": None, "baseline": "limit 10 ms", "baseline_s": None, "ratio": None,
                             "target": 10, "p95_ms": p95, "pass": p95 < 10})
    return rows


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def table(rows: list[dict]) -> str:
    lines = [f"{'benchmark':<58} {'ours':>10} {'baseline':>10} {'ratio/value':>12} {'target':>8}  result"]
    for r in rows:
        value = r.get("ratio")
        for key in ("rss_mib", "p95_ms", "per_file_ms", "extra_ms_per_cell"):
            if value is None and r.get(key) is not None:
                value = r[key]
        ours = "" if r.get("ours_s") is None else f"{r['ours_s']:.3f}s"
        base = "" if r.get("baseline_s") is None else f"{r['baseline_s']:.3f}s"
        target = "" if r.get("target") is None else f"≤{r['target']}"
        result = {True: "pass", False: "MISS", None: ""}[r.get("pass")]
        lines.append(f"{r['name'][:58]:<58} {ours:>10} {base:>10} {value if value is not None else '':>12} "
                     f"{target:>8}  {result}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["cli", "export", "capture", "verify", "rebuild", "registry"],
                        action="append")
    parser.add_argument("--registry-large", type=int, default=100_000,
                        help="capsules for the large registry run (0 skips it)")
    args = parser.parse_args(argv)
    chosen = set(args.only or ["cli", "export", "capture", "verify", "rebuild", "registry"])
    started = time.time()
    rows: list[dict] = []
    if "cli" in chosen:
        print("== CLI start-up", flush=True)
        rows += bench_cli.run(3 if args.quick else 7)
    if "export" in chosen:
        print("== export (hardware limit, peers, memory, scaling, the CLI as users run it)", flush=True)
        import tempfile

        workdir = Path(tempfile.mkdtemp(prefix="nbcapsule-bench-"))
        try:
            rows += bench_export.run(args.quick, workdir)
            rows += bench_export.run_cli(args.quick, workdir)
        finally:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    if "capture" in chosen:
        print("== capture overhead", flush=True)
        rows += bench_capture.run(args.quick)
    if "verify" in chosen:
        rows += verify_rows(args.quick)
    if "rebuild" in chosen:
        out = _script("bench_rebuild.py", "--count", "5" if args.quick else "20")
        rows += [json.loads(line) for line in (out or "").splitlines() if line.startswith("{")] or \
            [_skipped("bench_rebuild.py", "missing or failed")]
    if "registry" in chosen:
        rows += registry_rows(1000 if args.quick else 10_000)
        if not args.quick and args.registry_large:
            rows += registry_rows(args.registry_large)
    machine = {"cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg(), "quick": args.quick,
               "page_cache": bench_export.CACHE_MODE, "seconds": round(time.time() - started),
               "git_commit": _git_commit()}
    print(f"\nmachine: os.cpu_count() = {os.cpu_count()}; page cache: {machine['page_cache']}; load average at "
          f"the end {machine['load_average_at_end'][0]:.1f}; {machine['seconds']} s in all\n")
    print(table(rows))
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    out = results / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
