"""Cost of re-verification over plain re-execution (a benchmark, not a test).

    python benchmarks/bench_verify.py [--repeat 3] [--cells 20]

Exports a 20-cell notebook (numbers, a text table, a CSV output, a small image)
once, then alternates plain ``nbclient`` execution of the same notebook with
``verify()`` on its crate and reports the medians and their ratio. Both start
one kernel; verification adds fixity hashing, the crate copy, the environment
snapshot and the comparison. The target is a ratio of at most 1.2.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nbformat

from scidex_nbcapsule.execute import run_notebook
from scidex_nbcapsule.verify import verify


def build_notebook(path: Path, cells: int) -> None:
    sources = ["%load_ext scidex_nbcapsule", "import csv, math\nfrom pathlib import Path\nvalues = []"]
    for i in range(cells - 4):
        sources.append(f"values.append(sum(math.sin(k * {i + 1}) for k in range(20000)))\n"
                       f"print('step {i}', round(values[-1], 9))")
    sources.append("Path('results').mkdir(exist_ok=True)\n"
                   "with open('results/values.csv', 'w', newline='') as handle:\n"
                   "    csv.writer(handle).writerows([[i, v] for i, v in enumerate(values)])\n"
                   "from PIL import Image\nimage = Image.new('RGB', (64, 48), (30, 120, 200))\nimage")
    sources.append("%capsule status")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


def plain_run(notebook: Path) -> float:
    from nbclient import NotebookClient

    nb = nbformat.read(str(notebook), as_version=4)
    started = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    return time.perf_counter() - started


def verify_run(crate: Path) -> float:
    started = time.perf_counter()
    report = verify(crate, record=False)
    elapsed = time.perf_counter() - started
    if not report.ok:
        raise SystemExit(f"verification failed: {report.summary()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cells", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nbcapsule-bench-") as tmp:
        notebook = Path(tmp) / "project" / "bench.ipynb"
        build_notebook(notebook, args.cells)
        result = run_notebook(notebook, export_argv=["--dest", str(Path(tmp) / "crates"), "--license", "CC0-1.0"])
        if result.error:
            raise SystemExit(result.error)
        crate = Path(result.capsule["crate"])
        plain_run(notebook)
        plain, checked = [], []
        for _ in range(args.repeat):
            plain.append(plain_run(notebook))
            checked.append(verify_run(crate))
        p, v = statistics.median(plain), statistics.median(checked)
        print(f"{args.cells}-cell notebook, median of {args.repeat}")
        print(f"  plain nbclient execution: {p:6.2f} s   {', '.join(f'{x:.2f}' for x in plain)}")
        print(f"  verify (fixity+run+compare): {v:6.2f} s   {', '.join(f'{x:.2f}' for x in checked)}")
        print(f"  ratio verify / plain: {v / p:.2f}x (target ≤ 1.2x)")


if __name__ == "__main__":
    main()
