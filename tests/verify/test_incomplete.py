"""A re-run that knows what it touched: inputs the crate lacks are ``incomplete``, unrecorded outputs are not compared.

Real notebooks exported in real kernels (with the interposer), verified in fresh traced kernels; the
registry round trip runs on SQLite and on the real PostgreSQL server.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from scidex_nbcapsule.capture import interposer
from scidex_nbcapsule.execute import run_notebook
from scidex_nbcapsule.verify import EXIT_CODES, VERDICTS, verify
from scidex_nbcapsule.verify.accesses import IncompleteFile, NotCompared, missing_file_candidates
from scidex_nbcapsule.verify.compare import Difference
from scidex_nbcapsule.verify.fixity import FixityProblem
from scidex_nbcapsule.verify.report import decide
from scidex_nbcapsule.verify.rerun import ExecutionProblem

from helpers import make_notebook, nbcapsule

#: The kernel tests need the interposer: without it nothing here could be seen (the last test shows what is said).
traced = pytest.mark.skipif(interposer.library_path() is None,
                            reason=f"the interposer cannot be built here: {interposer.unavailable_reason()}")

#: Unseeded random numbers, written only by native code (pyarrow, HDF5), never printed.
RANDOM_FILES = """
import numpy as np, pandas as pd, h5py
pd.DataFrame({"x": np.random.rand(5)}).to_parquet("draws.parquet")
with h5py.File("draws.h5", "w") as handle:
    handle["x"] = np.random.rand(5)
print("written")
"""
#: A name that must be escaped in HTML.
ODD_NAME = "ext<b>&'x.csv"


def _export(base: Path, name: str, *cells: str, extra: tuple[str, ...] = ()) -> Path:
    project = base / name
    (project / "data").mkdir(parents=True)
    (project / "data" / "input.csv").write_text("x,y\n1,2\n3,4\n")
    (project / "data" / "private.csv").write_text("p\n7\n")
    make_notebook(project / "nb.ipynb", *cells)
    result = run_notebook(project / "nb.ipynb", export_argv=["--dest", str(base / f"{name}-crates"), "--license",
                                                             "CC0-1.0", "--author", "Test Author", *extra])
    assert result.error is None, result.error
    return Path(result.capsule["crate"])


@pytest.fixture(scope="module")
def outside_file(tmp_path_factory) -> Path:
    """A file in another temporary folder, outside every project: it exists on this machine."""
    path = tmp_path_factory.mktemp("elsewhere") / ODD_NAME
    path.write_text("a\n1\n2\n")
    return path


@pytest.fixture(scope="module")
def plain_outside_file(outside_file) -> Path:
    """Beside it, one with a plain name (ro-crate-metadata.json percent-encodes odd names in @id, and fixity
    matches the raw path: a crate packing ``ODD_NAME`` fails fixity, a separate matter)."""
    path = outside_file.with_name("plain.csv")
    path.write_text("b\n3\n")
    return path


@pytest.fixture(scope="module")
def crates(tmp_path_factory, outside_file, plain_outside_file) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("incomplete")
    read_outside = f"print(open({str(outside_file)!r}).read())"
    return {
        "random": _export(base, "random", RANDOM_FILES),
        "random-excluded": _export(base, "random-excluded", RANDOM_FILES, extra=("--exclude", "draws.*")),
        "outside": _export(base, "outside", read_outside),
        "outside-packed": _export(base, "outside-packed", f"print(open({str(plain_outside_file)!r}).read())",
                                  extra=("--include-external",)),
        "excluded-input": _export(base, "excluded-input", "import pandas as pd\n"
                                  "print(pd.read_csv('data/private.csv').sum())",
                                  extra=("--exclude", "data/private.csv")),
        "recorded-input": _export(base, "recorded-input", "print(open('data/input.csv').read())"),
    }


# -- the verdict and its evidence, without kernels ---------------------------------------------------

def test_precedence_fixity_incomplete_execution_mismatch_tolerance():
    fixity = [FixityProblem("a", "missing", "gone")]
    gap = [IncompleteFile("/x", "outside", "read outside")]
    failed = ExecutionProblem("cell-error", "boom")
    differs = [Difference("file", "f", "different", "text/csv")]
    close = [Difference("file", "f", "within-tolerance", "text/csv")]
    unrecorded = [NotCompared("out.parquet", "not compared")]
    assert decide(fixity, failed, differs, gap, unrecorded) == "fixity-failed"
    assert decide([], failed, differs, gap, unrecorded) == "incomplete"
    assert decide([], failed, differs, [], unrecorded) == "execution-failed"
    assert decide([], None, differs, [], unrecorded) == "mismatch"
    assert decide([], None, [], [], unrecorded) == "verified-within-tolerance"
    assert decide([], None, close, [], []) == "verified-within-tolerance"
    assert decide([], None, [], [], []) == "verified"
    assert "incomplete" in VERDICTS and EXIT_CODES["incomplete"] == 13
    assert sorted(EXIT_CODES.values()).count(13) == 1


@pytest.mark.parametrize("evalue, expected", [
    ("[Errno 2] No such file or directory: 'data/miss.csv'", ["data/miss.csv"]),  # open, pandas, numpy
    ("[Errno 2] No such file or directory: '/nonexist/a.txt'", ["/nonexist/a.txt"]),
    ("miss.parquet", ["miss.parquet"]),  # pyarrow, pandas.read_parquet
    ("[Errno 2] Unable to synchronously open file (unable to open file: name = 'miss.h5', errno = 2, error "
     "message = 'No such file or directory', flags = 0, o_flags = 0)", ["miss.h5"]),  # h5py
    ("File miss.h5 does not exist", ["miss.h5"]),  # pandas.read_hdf
    ("miss.txt not found.", ["miss.txt"]),  # numpy.loadtxt
    ("nothing that looks like a file", []),
])
def test_missing_file_errors_name_their_file(evalue, expected):
    assert missing_file_candidates(evalue) == expected


# -- real kernels ------------------------------------------------------------------------------------

@traced
def test_unseeded_native_outputs_recorded_by_capture_are_a_mismatch(crates):
    report = verify(crates["random"], record=False)
    assert report.verdict == "mismatch", report.summary()
    assert {d.where for d in report.differences} == {"draws.parquet", "draws.h5"}
    assert report.traced is True and not report.not_compared and not report.incomplete


@traced
def test_unseeded_native_outputs_not_in_the_capsule_are_not_compared(crates, tmp_path):
    html_file = tmp_path / "report.html"
    result = nbcapsule("verify", str(crates["random-excluded"]), "--json", "--html", str(html_file))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == "verified-within-tolerance", data
    assert data["traced"] is True and data["differences"] == [] and data["incomplete"] == []
    assert {n["path"] for n in data["not_compared"]} == {"draws.parquet", "draws.h5"}
    assert all("not compared" in n["message"] for n in data["not_compared"])
    page = html_file.read_text()
    assert "Not compared" in page and "draws.parquet" in page
    assert "not compared: draws.h5" in nbcapsule("verify", str(crates["random-excluded"])).stdout


@traced
def test_an_input_read_outside_the_project_is_incomplete_although_it_exists(crates, outside_file, tmp_path):
    assert outside_file.is_file()
    html_file = tmp_path / "report.html"
    result = nbcapsule("verify", str(crates["outside"]), "--json", "--html", str(html_file))
    assert result.returncode == 13, result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == "incomplete" and data["ok"] is False and data["execution"] is None
    [gap] = data["incomplete"]
    assert gap["path"] == str(outside_file) and gap["kind"] == "outside"
    assert "exists on this machine" in gap["message"] and "external_inputs" in gap["message"]
    page = html_file.read_text()
    assert "ext&lt;b&gt;&amp;&#x27;x.csv" in page and ODD_NAME not in page
    text = nbcapsule("verify", str(crates["outside"]))
    assert text.returncode == 13 and text.stdout.startswith("incomplete:") and ODD_NAME in text.stdout


@traced
def test_an_external_input_packed_in_the_crate_but_read_from_its_original_place_is_incomplete(crates,
                                                                                             plain_outside_file):
    report = verify(crates["outside-packed"], record=False)
    assert report.verdict == "incomplete", report.summary()
    [gap] = report.incomplete
    assert gap.path == str(plain_outside_file) and "packed as external/" in gap.message


@traced
def test_an_input_the_capsule_never_recorded_is_incomplete_not_execution_failed(crates):
    assert not (crates["excluded-input"] / "data" / "private.csv").exists()
    report = verify(crates["excluded-input"], record=False)
    assert report.verdict == "incomplete" and report.exit_code == 13, report.summary()
    [gap] = report.incomplete
    assert gap.path == "data/private.csv" and gap.kind == "missing" and "not in the crate" in gap.message
    assert report.execution is not None and "FileNotFoundError" in report.execution.message  # kept as evidence
    assert "data/private.csv" in report.summary().splitlines()[1]


@traced
def test_a_recorded_input_deleted_from_the_crate_is_still_a_fixity_failure(crates, tmp_path):
    copy = tmp_path / "crate"
    shutil.copytree(crates["recorded-input"], copy)
    assert verify(copy, record=False).verdict == "verified"
    (copy / "data" / "input.csv").unlink()
    report = verify(copy, record=False)
    assert report.verdict == "fixity-failed" and report.exit_code == 12
    assert ("data/input.csv", "missing") in {(p.path, p.kind) for p in report.fixity}
    assert report.traced is None and not report.incomplete


@traced
def test_without_the_interposer_the_report_says_the_run_was_not_traced(crates):
    result = nbcapsule("verify", str(crates["outside"]), "--json", env={"NBCAPSULE_INTERPOSER": "0"})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == "verified" and data["traced"] is False and data["incomplete"] == []
    [note] = [n for n in data["notes"] if "not traced" in n]
    assert "NBCAPSULE_INTERPOSER=0" in note and "were not checked" in note


@traced
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_incomplete_is_recorded_in_the_registry(backend, crates, outside_file, request, tmp_path):
    from scidex_nbcapsule.registry import open_registry

    url = f"sqlite:///{tmp_path / 'registry.sqlite3'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    with open_registry(url) as registry:
        capsule_id = registry.register_capsule(str(crates["outside"])).capsule_id
    report = verify(capsule_id, db=url)
    assert report.verdict == "incomplete" and report.recorded, report.summary()
    with open_registry(url) as registry:
        assert registry.get_capsule(capsule_id)["status"] == "incomplete"
        assert [c["capsule_id"] for c in registry.list_capsules(status="incomplete")] == [capsule_id]
        [stored] = registry.history(capsule_id)["verifications"]
    assert stored["verdict"] == "incomplete"
    stored_report = stored["report"] if isinstance(stored["report"], dict) else json.loads(stored["report"])
    assert [i["path"] for i in stored_report["incomplete"]] == [str(outside_file)]


@traced
def test_the_server_job_reports_incomplete_as_documented(crates, tmp_path):
    import jsonschema
    import yaml
    from importlib import resources

    from scidex_nbcapsule.registry import open_registry
    from scidex_nbcapsule.server.app import CapsuleServer

    url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    with open_registry(url) as registry:
        capsule_id = registry.register_capsule(str(crates["outside"])).capsule_id
    server = CapsuleServer(root_dir=str(tmp_path), db_url=url)
    job = server.submit_verification(capsule_id)
    deadline = time.monotonic() + 300
    while job.status not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.status == "done", job
    assert job.verdict == "incomplete" and job.report["incomplete"][0]["kind"] == "outside"
    spec = yaml.safe_load(resources.files("scidex_nbcapsule.server").joinpath("openapi.yaml").read_text())
    verdict = spec["components"]["schemas"]["Job"]["properties"]["verdict"]
    assert set(verdict["enum"]) == {*VERDICTS, None}
    jsonschema.Draft202012Validator(dict(spec["components"]["schemas"]["Job"],
                                         components=spec["components"])).validate(job.to_dict())


@pytest.mark.parametrize("variable", ["XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR"])
def test_cache_and_configuration_folders_are_the_environment_wherever_they_are(variable, tmp_path):
    """Font lists and matplotlib's cache under a visible $XDG_CACHE_HOME are no inputs; /tmp itself stays data."""
    import os
    import subprocess
    import sys
    import tempfile

    probe = ("import sys; from scidex_nbcapsule.capture.paths import is_environment_path as e; "
             "print(e(sys.argv[1]), e(sys.argv[2]))")
    for folder, expected in ((tmp_path / "cache", "True"), (Path(tempfile.gettempdir()), "False")):
        env = dict(os.environ, **{variable: str(folder)})
        done = subprocess.run([sys.executable, "-c", probe, str(folder / "fontlist.json"),
                               str(tmp_path / "project" / "data.csv")], env=env, capture_output=True, text=True,
                              check=True)
        assert done.stdout.split() == [expected, "False"], (folder, done.stdout, done.stderr)
