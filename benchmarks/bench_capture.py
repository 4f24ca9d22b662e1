"""Capture overhead in a real kernel: the extension loaded against a kernel without it.

Two workloads, timed from the client as a user would feel them: one cell that
opens and closes a file 10,000 times, and 200 trivial cells.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from kernel import KernelSession  # noqa: E402

OPEN_LOOP = "for _ in range(10_000):\n    open('data.csv').close()"


def measure(workdir: Path, *, load: bool, cells: int, rounds: int) -> dict[str, float]:
    session = KernelSession(cwd=workdir)
    try:
        if load:
            session.ok("%load_ext scidex_nbcapsule")
        session.ok(OPEN_LOOP)  # warm up
        loop = []
        for _ in range(rounds):
            start = time.perf_counter()
            session.ok(OPEN_LOOP)
            loop.append(time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(cells):
            session.ok(f"x = {i}")
        per_cell = (time.perf_counter() - start) / cells
    finally:
        session.close()
    return {"open_loop_s": min(loop), "per_cell_s": per_cell}


def run(quick: bool = False) -> list[dict]:
    cells, rounds = (50, 3) if quick else (200, 5)
    with tempfile.TemporaryDirectory(prefix="nbcapsule-capture-") as tmp:
        workdir = Path(tmp)
        (workdir / "data.csv").write_text("a,b\n1,2\n")
        without = measure(workdir, load=False, cells=cells, rounds=rounds)
        with_ext = measure(workdir, load=True, cells=cells, rounds=rounds)
    loop_ratio = with_ext["open_loop_s"] / without["open_loop_s"]
    cell_ratio = with_ext["per_cell_s"] / without["per_cell_s"]
    extra_ms = 1000 * (with_ext["per_cell_s"] - without["per_cell_s"])
    return [
        {"name": "capture: 10,000 open()/close() in a cell", "ours_s": round(with_ext["open_loop_s"], 4),
         "baseline": "same kernel work, extension not loaded", "baseline_s": round(without["open_loop_s"], 4),
         "ratio": round(loop_ratio, 3), "target": 1.05, "pass": loop_ratio <= 1.05},
        {"name": f"capture: {cells} trivial cells", "ours_s": round(with_ext["per_cell_s"], 5),
         "baseline": "per cell, extension not loaded", "baseline_s": round(without["per_cell_s"], 5),
         "ratio": round(cell_ratio, 3), "target": 1.05, "pass": cell_ratio <= 1.05,
         "extra_ms_per_cell": round(extra_ms, 3)},
        {"name": "capture: added time per cell (ms)", "ours_s": None, "baseline": "limit 1 ms", "baseline_s": None,
         "ratio": None, "target": 1.0, "extra_ms_per_cell": round(extra_ms, 3), "pass": extra_ms < 1.0},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for row in run(args.quick):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
