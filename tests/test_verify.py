"""Re-verification end to end: real notebooks exported in real kernels, then verified in fresh kernels."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from scidex_nbcapsule.errors import UnsafeArchive
from scidex_nbcapsule.execute import run_notebook
from scidex_nbcapsule.verify import verify

from helpers import make_notebook, nbcapsule

DETERMINISTIC = (
    "%load_ext scidex_nbcapsule",
    """
    import csv, json, datetime
    from pathlib import Path
    rows = list(csv.DictReader(open("data/input.csv")))
    total = sum(float(r["x"]) * float(r["y"]) for r in rows)
    Path("results").mkdir(exist_ok=True)
    with open("results/out.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["n", "total"], [len(rows), total]])
    Path("results/out.json").write_text(json.dumps({"total": total, "n": len(rows)}))
    print("total", total, "from", len(rows), "rows")
    print("object", object(), "at", datetime.datetime.now().isoformat())
    """,
    """
    from IPython.display import HTML, display
    display(HTML("<table><tr><th>n</th><th>total</th></tr><tr><td>%d</td><td>%.3f</td></tr></table>"
                 % (len(rows), total)))
    display({"application/json": {"total": total}}, raw=True)
    """,
    """
    from PIL import Image, ImageDraw
    image = Image.new("RGB", (40, 30), (250, 250, 250))
    ImageDraw.Draw(image).line([(0, 0), (39, int(total) % 30)], fill=(200, 0, 0))
    image.save("results/pic.png")
    image
    """,
    "%capsule status",
)


def export_crate(base: Path, name: str, *cells: str) -> Path:
    """A tiny project with data/input.csv, run with capture on and exported; returns the crate folder."""
    project = base / name
    (project / "data").mkdir(parents=True)
    (project / "data" / "input.csv").write_text("x,y\n1,2\n3,4\n")
    make_notebook(project / "nb.ipynb", *cells)
    result = run_notebook(project / "nb.ipynb", export_argv=["--dest", str(base / f"{name}-crates"),
                                                             "--license", "CC0-1.0", "--author", "Test Author"])
    assert result.error is None, result.error
    return Path(result.capsule["crate"])


@pytest.fixture(scope="module")
def crates(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("verify")
    return {
        "good": export_crate(base, "good", *DETERMINISTIC),
        "random": export_crate(base, "random", "import random\nprint('draw', random.random())"),
        "noise": export_crate(base, "noise", "import random\nprint(0.5 + 1e-12 * random.random())"),
        "env": export_crate(base, "env", "print('start')",
                            "import os\nassert os.environ.get('NBCAPSULE_VERIFYING') is None, 'verifying!'"),
        "dies": export_crate(base, "dies", "print('start')",
                             "import os\nif os.environ.get('NBCAPSULE_VERIFYING'):\n    os._exit(1)\nprint('ok')"),
        "slow": export_crate(base, "slow", "import os, time\nif os.environ.get('NBCAPSULE_VERIFYING'):\n"
                                           "    time.sleep(60)\nprint('done')"),
    }


def test_deterministic_notebook_is_verified(crates):
    report = verify(crates["good"], record=False)
    assert report.verdict == "verified", report.summary()
    assert report.exit_code == 0 and report.ok
    data = json.loads(report.to_json())
    assert data["capsule_id"].startswith("capsule-") and data["fixity"] == [] and data["execution"] is None
    assert "verified" in report._repr_html_()


def test_zip_crate_is_verified(crates, tmp_path):
    crate = crates["good"]
    archive = tmp_path / "crate.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(crate.rglob("*")):
            if path.is_file():
                out.write(path, f"{crate.name}/{path.relative_to(crate).as_posix()}")
    report = verify(archive, record=False)
    assert report.verdict == "verified", report.summary()


def test_one_altered_byte_is_a_fixity_failure_naming_the_file(crates, tmp_path):
    copy = tmp_path / "crate"
    shutil.copytree(crates["good"], copy)
    target = copy / "results" / "out.csv"
    data = bytearray(target.read_bytes())
    data[0] ^= 1
    target.write_bytes(bytes(data))
    (copy / "sneaky.txt").write_text("not listed")
    (copy / "results" / "pic.png").unlink()
    report = verify(copy, record=False)
    assert report.verdict == "fixity-failed" and report.exit_code == 12
    kinds = {(p.path, p.kind) for p in report.fixity}
    assert ("results/out.csv", "sha256") in kinds and ("results/out.csv", "metadata") in kinds
    assert ("sneaky.txt", "extra") in kinds and ("results/pic.png", "missing") in kinds
    assert report.execution is None and not report.differences
    result = nbcapsule("verify", str(copy), "--json")
    assert result.returncode == 12 and "results/out.csv" in result.stdout


def test_edited_manifest_is_a_fixity_failure(crates, tmp_path):
    copy = tmp_path / "crate"
    shutil.copytree(crates["good"], copy)
    manifest = json.loads((copy / "capsule.json").read_text())
    manifest["title"] = "Something else"
    (copy / "capsule.json").write_text(json.dumps(manifest))
    report = verify(copy, record=False)
    assert report.verdict == "fixity-failed"
    assert report.fixity[0].path == "capsule.json" and "altered" in report.fixity[0].message


def test_unseeded_random_numbers_are_a_mismatch_with_a_diff(crates, tmp_path):
    html_file = tmp_path / "report.html"
    result = nbcapsule("verify", str(crates["random"]), "--json", "--html", str(html_file))
    assert result.returncode == 10, result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == "mismatch"
    [difference] = data["differences"]
    assert difference["where"] == "cell 2" and difference["what"] == "stdout"
    lines = difference["diff"].splitlines()
    assert any(line.startswith("-draw 0.") for line in lines) and any(line.startswith("+draw 0.") for line in lines)
    assert "mismatch" in html_file.read_text() and "background:#ffebe9" in html_file.read_text()


def test_float_noise_below_tolerance_is_verified_within_tolerance(crates):
    report = verify(crates["noise"], record=False)
    assert report.verdict == "verified-within-tolerance", report.summary()
    assert report.exit_code == 0
    assert verify(crates["noise"], record=False, config={"rtol": 0, "atol": 0}).verdict == "mismatch"


def test_a_raising_cell_is_execution_failed_with_cell_and_traceback(crates):
    report = verify(crates["env"], record=False)
    assert report.verdict == "execution-failed" and report.exit_code == 11
    problem = report.execution
    assert problem.kind == "cell-error" and problem.cell_index == 2
    assert "NBCAPSULE_VERIFYING" in problem.source
    assert "AssertionError" in problem.traceback and "verifying!" in problem.traceback
    assert "AssertionError" in report.to_html()


def test_a_dying_kernel_is_execution_failed_not_a_hang(crates):
    started = time.monotonic()
    report = verify(crates["dies"], record=False, cell_timeout=120)
    assert report.verdict == "execution-failed"
    assert report.execution.kind == "dead-kernel" and report.execution.cell_index == 2
    assert time.monotonic() - started < 60


def test_total_timeout_bounds_the_run(crates):
    started = time.monotonic()
    report = verify(crates["slow"], record=False, total_timeout=4)
    assert report.verdict == "execution-failed" and report.execution.kind == "total-timeout"
    assert time.monotonic() - started < 30


def test_zip_climbing_out_is_refused_and_writes_nothing(tmp_path):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    archive = work / "evil.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("crate/ro-crate-metadata.json", "{}")
        out.writestr("../evil.txt", "escaped")
        out.writestr("crate/../../evil2.txt", "escaped")
    with pytest.raises(UnsafeArchive, match="climbs out"):
        verify(archive, record=False)
    assert not list(tmp_path.rglob("evil*.txt"))
    result = nbcapsule("verify", str(archive))
    assert result.returncode == 2 and "refused" in result.stderr


def test_registered_capsule_verification_is_recorded(crates, tmp_path):
    from scidex_nbcapsule.registry import open_registry

    url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    with open_registry(url) as registry:
        capsule_id = registry.register_capsule(str(crates["good"])).capsule_id
    report = verify(capsule_id, db=url)
    assert report.verdict == "verified" and report.recorded, report.summary()
    with open_registry(url) as registry:
        assert registry.get_capsule(capsule_id)["status"] == "verified"


@pytest.mark.slow
def test_repo2docker_would_install_the_crate_binder_requirements(crates):
    exe = Path(sys.executable).with_name("repo2docker")
    result = subprocess.run([str(exe), "--no-build", "--debug", str(crates["good"])], capture_output=True, text=True,
                            timeout=300)
    output = result.stdout + result.stderr
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in output, output[-3000:]


def test_the_rerun_kernel_and_its_children_are_traced(tmp_path):
    from scidex_nbcapsule.verify.rerun import rerun_notebook

    (tmp_path / "in.txt").write_text("b\na\n")
    nb = make_notebook(tmp_path / "nb.ipynb", "import subprocess\n"
                       "subprocess.run(['sort', 'in.txt', '-o', 'out.txt'], check=True)")
    result = rerun_notebook(nb)
    assert result.problem is None
    seen = {(e.op, Path(e.path).name) for e in result.accesses if Path(e.path).parent == tmp_path}
    assert {("read", "in.txt"), ("write", "out.txt")} <= seen
