"""A corpus of small analysis notebooks, one per way an analysis touches files.

Each case builds its project (data files, symlinks, a folder outside the
project), gives the notebook's code cells, and says what the code does to which
file: the expected capsule roles, written here from the code, not from what the
capture reports. ``tests/capture/test_corpus.py`` runs every case in real kernels
and compares; ``test_corpus_strace.py`` checks these expectations against strace.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nbformat


@dataclass
class Case:
    name: str
    cells: list[str]
    #: Crate path → role ("input" | "output" | "code") of every file the code reads or writes in the project.
    expected: dict[str, str]
    setup: Callable[[Path, Path], None] = lambda project, outside: None
    #: Files outside the project the code reads, relative to the ``outside`` folder.
    external: list[str] = field(default_factory=list)
    #: Crate path → the file it is a symlink to.
    links: dict[str, str] = field(default_factory=dict)
    #: Where the notebook sits below the project folder (the project root is the notebook's folder: no git).
    notebook_dir: str = ""
    #: Python modules the case needs.
    needs: tuple[str, ...] = ()

    def build(self, base: Path) -> tuple[Path, Path, Path]:
        """Project folder, outside folder and notebook path for this case under ``base``."""
        project = base / "project"
        outside = base / "shared"
        folder = project / self.notebook_dir
        (folder / "data").mkdir(parents=True)
        (folder / "results").mkdir()
        outside.mkdir()
        self.setup(folder, outside)
        nb = nbformat.v4.new_notebook()
        nb.cells.append(nbformat.v4.new_markdown_cell(f"# Corpus case {self.name}"))
        for source in self.cells:
            source = textwrap.dedent(source).strip("\n").replace("@OUTSIDE@", str(outside))
            nb.cells.append(nbformat.v4.new_code_cell(source))
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = folder / "analysis.ipynb"
        nbformat.write(nb, str(path))
        return folder, outside, path


def _text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _csv(project: Path, outside: Path) -> None:
    _text(project / "data/in.csv", "x,y\n1,2\n3,4\n5,6\n")
    _text(project / "data/unused.csv", "never,read\n")


def _parquet(project: Path, outside: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1, 2, 3], "y": [0.5, 1.5, 2.5]}), project / "data/in.parquet")


def _npy(project: Path, outside: Path) -> None:
    import numpy as np

    np.save(project / "data/a.npy", np.arange(12).reshape(3, 4))


def _h5(project: Path, outside: Path) -> None:
    import h5py

    with h5py.File(project / "data/in.h5", "w") as f:
        f["values"] = list(range(10))


def _sqlite(project: Path, outside: Path) -> None:
    import sqlite3

    with sqlite3.connect(project / "data/in.sqlite") as conn:
        conn.execute("create table t (x integer)")
        conn.executemany("insert into t values (?)", [(i,) for i in range(5)])
    conn.close()


def _netcdf(project: Path, outside: Path) -> None:
    import netCDF4

    with netCDF4.Dataset(project / "data/in.nc", "w") as ds:
        ds.createDimension("t", 4)
        ds.createVariable("v", "f8", ("t",))[:] = [1.0, 2.0, 3.0, 4.0]


def _lines(project: Path, outside: Path) -> None:
    _text(project / "data/in.txt", "pear\napple\nfig\n")
    _text(project / "data/other.txt", "one\ntwo\n")
    _text(project / "data/c.txt", "a\nb\nc\n")


def _globbed(project: Path, outside: Path) -> None:
    _text(project / "data/a.csv", "a\n1\n")
    _text(project / "data/b.csv", "b\n2\n")
    _text(project / "data/notes.txt", "not a csv, never read\n")


def _links(project: Path, outside: Path) -> None:
    _text(project / "data/real.csv", "r\n1\n")
    os.symlink("real.csv", project / "data/link.csv")
    _text(outside / "ext.csv", "e\n9\n")
    os.symlink(outside / "ext.csv", project / "data/outlink.csv")


def _absolute(project: Path, outside: Path) -> None:
    _text(outside / "reference.csv", "ref\n42\n")
    _text(project / "data/local.csv", "loc\n1\n")


def _sibling(project: Path, outside: Path) -> None:
    # notebooks/ + ../data without git: the project root is notebooks/, so ../data lies outside it
    _text(project.parent / "data/raw.csv", "raw\n7\n")


CASES: list[Case] = [
    Case("pandas-csv", [
        "import pandas as pd\ndf = pd.read_csv('data/in.csv')",
        "df.describe().to_csv('results/summary.csv')",
    ], {"data/in.csv": "input", "results/summary.csv": "output"}, _csv, needs=("pandas",)),
    Case("pandas-parquet", [
        "import pandas as pd\ndf = pd.read_parquet('data/in.parquet')",
        "(df * 2).to_parquet('results/out.parquet')",
        "import pyarrow.csv as pacsv, pyarrow as pa\npacsv.write_csv(pa.Table.from_pandas(df), 'results/out.csv')",
    ], {"data/in.parquet": "input", "results/out.parquet": "output", "results/out.csv": "output"}, _parquet,
        needs=("pandas", "pyarrow")),
    Case("numpy", [
        "import numpy as np\na = np.load('data/a.npy')",
        "np.savetxt('results/a.txt', a)\nnp.save('results/b.npy', a * 2)",
    ], {"data/a.npy": "input", "results/a.txt": "output", "results/b.npy": "output"}, _npy, needs=("numpy",)),
    Case("h5py", [
        "import h5py\nwith h5py.File('data/in.h5', 'r') as f:\n    values = f['values'][:]",
        "with h5py.File('results/out.h5', 'w') as f:\n    f['doubled'] = values * 2",
    ], {"data/in.h5": "input", "results/out.h5": "output"}, _h5, needs=("h5py",)),
    Case("sqlite3", [
        "import sqlite3\nrows = sqlite3.connect('data/in.sqlite').execute('select sum(x) from t').fetchall()",
        "out = sqlite3.connect('results/out.sqlite')\nout.execute('create table s (total integer)')\n"
        "out.execute('insert into s values (?)', rows[0])\nout.commit()\nout.close()",
    ], {"data/in.sqlite": "input", "results/out.sqlite": "output"}, _sqlite),
    Case("netcdf", [
        "import netCDF4\nwith netCDF4.Dataset('data/in.nc') as ds:\n    v = ds['v'][:]",
        "with netCDF4.Dataset('results/out.nc', 'w') as ds:\n    ds.createDimension('t', len(v))\n"
        "    ds.createVariable('w', 'f8', ('t',))[:] = v * 10",
    ], {"data/in.nc": "input", "results/out.nc": "output"}, _netcdf, needs=("netCDF4",)),
    Case("matplotlib", [
        "import csv\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "rows = list(csv.DictReader(open('data/in.csv')))",
        "plt.plot([float(r['x']) for r in rows], [float(r['y']) for r in rows])\n"
        "plt.savefig('results/fig.png')\nplt.savefig('results/fig.svg')",
    ], {"data/in.csv": "input", "results/fig.png": "output", "results/fig.svg": "output"}, _csv,
        needs=("matplotlib",)),
    Case("shell-commands", [
        "!sort data/in.txt -o results/sorted.txt",
        "!cat data/other.txt > results/copy.txt",
        "first = open('results/sorted.txt').read().split()[0]",  # written by a child, then read: an output
    ], {"data/in.txt": "input", "data/other.txt": "input", "results/sorted.txt": "output",
        "results/copy.txt": "output"}, _lines),
    Case("subprocess", [
        "import subprocess, os\nsubprocess.run(['cp', 'data/in.txt', 'results/b.txt'], check=True)",
        "os.system('wc -l data/c.txt > results/count.txt')",
        "count = open('results/count.txt').read()",
    ], {"data/in.txt": "input", "data/c.txt": "input", "results/b.txt": "output", "results/count.txt": "output"},
        _lines),
    Case("chdir-glob", [
        "import glob, os\nos.chdir('data')\ntexts = [open(f).read() for f in sorted(glob.glob('*.csv'))]",
        "os.chdir('..')\nopen('results/all.txt', 'w').write(''.join(texts))",
    ], {"data/a.csv": "input", "data/b.csv": "input", "results/all.txt": "output"}, _globbed),
    Case("atomic-rename", [
        "import json, os, tempfile\nwith open('results/.summary.json.part', 'w') as f:\n    json.dump({'n': 1}, f)\n"
        "os.replace('results/.summary.json.part', 'results/summary.json')",
        "fd, tmp = tempfile.mkstemp(dir='results')\nos.write(fd, b'ok')\nos.close(fd)\n"
        "os.rename(tmp, 'results/report.txt')",
    ], {"results/summary.json": "output", "results/report.txt": "output"}),
    Case("write-then-read", [
        "open('results/step1.txt', 'w').write('1\\n2\\n')",
        "total = sum(int(x) for x in open('results/step1.txt'))\nopen('results/step2.txt', 'w').write(str(total))",
    ], {"results/step1.txt": "output", "results/step2.txt": "output"}),
    Case("symlinks", [
        "inside = open('data/link.csv').read()",
        "outside = open('data/outlink.csv').read()",
        "open('results/both.txt', 'w').write(inside + outside)",
    ], {"data/link.csv": "input", "results/both.txt": "output"}, _links, external=["ext.csv"],
        links={"data/link.csv": "data/real.csv"}),
    Case("absolute-outside", [
        "ref = open('@OUTSIDE@/reference.csv').read()\nloc = open('data/local.csv').read()",
        "open('results/joined.txt', 'w').write(ref + loc)",
    ], {"data/local.csv": "input", "results/joined.txt": "output"}, _absolute, external=["reference.csv"]),
    Case("sibling-data", [
        "raw = open('../data/raw.csv').read()",
        "open('results/clean.csv', 'w').write(raw.upper())",
    ], {"results/clean.csv": "output"}, _sibling, external=["../project/data/raw.csv"], notebook_dir="notebooks"),
]


def available(case: Case) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in case.needs)
