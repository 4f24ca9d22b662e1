"""Every benchmark in one run, then one table (name, ours, baseline, ratio, target, pass/fail).

Ratios compare ours with a baseline measured in the same run on the same machine;
they are figures to read, not timed tests. ``--quick`` uses small sizes, ``--only NAME``
runs one group (export, capture, verify, registry; repeatable). Results go to
``benchmarks/results/`` as JSON.

This runner reuses ``run_all.py``'s verification/registry collectors and table, the
capture benchmark, and ``bench_export_run.py`` (whose BagIt row times the bag step alone).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_capture  # noqa: E402
import bench_export_run  # noqa: E402
import run_all  # noqa: E402

GROUPS = ("export", "capture", "verify", "registry")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for trying changes")
    parser.add_argument("--only", choices=GROUPS, action="append", help="run only this group (repeatable)")
    parser.add_argument("--registry-large", type=int, default=100_000,
                        help="capsules for the large registry run (0 skips it)")
    args = parser.parse_args(argv)
    chosen = set(args.only or GROUPS)
    started = time.time()
    rows: list[dict] = []
    notes: list[str] = []
    if "export" in chosen:
        print("== export (hardware limit, peers, memory, scaling)", flush=True)
        cache = bench_export_run.drop_caches()
        notes.append("page cache: " + ("dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before each timed step"
                                       if cache == "dropped" else
                                       "not droppable here; every contender starts with the files read once (warm)"))
        workdir = Path(tempfile.mkdtemp(prefix="nbcapsule-bench-"))
        try:
            rows += bench_export_run.run(args.quick, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    if "capture" in chosen:
        print("== capture overhead (real kernels)", flush=True)
        rows += bench_capture.run(args.quick)
    if "verify" in chosen:
        rows += run_all.verify_rows(args.quick)
    if "registry" in chosen:
        rows += run_all.registry_rows(1000 if args.quick else 10_000)
        if not args.quick and args.registry_large:
            rows += run_all.registry_rows(args.registry_large)
    elapsed = time.time() - started
    try:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    print(f"\nmachine: os.cpu_count() = {os.cpu_count()}; load average at the end {load}; "
          f"{elapsed:.0f} s in all{' (--quick sizes)' if args.quick else ''}")
    for note in notes:
        print(note)
    print()
    print(run_all.table(rows))
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    out = results / f"run-bench-{time.strftime('%Y%m%dT%H%M%S')}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps({"cpu_count": os.cpu_count(), "load_average": load, "quick": args.quick,
                               "notes": notes, "seconds": round(elapsed, 1), "rows": rows}, indent=2))
    print(f"\nwritten {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
