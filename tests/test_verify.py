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


# -- issue 14: deterministic work is not a mismatch, and a mismatch says what would help ------------------------
GREEK = "{'alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta'}"


def _export_with_env(base: Path, name: str, *cells: str, extra_env: dict | None = None) -> Path:
    project = base / name
    make_notebook(project / "nb.ipynb", *cells)
    result = run_notebook(project / "nb.ipynb", extra_env=extra_env,
                          export_argv=["--dest", str(base / f"{name}-crates"), "--license", "CC0-1.0",
                                       "--author", "Test Author"])
    assert result.error is None, result.error
    return Path(result.capsule["crate"])


@pytest.fixture(scope="module")
def issue14(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("issue14")
    return {
        "svg": _export_with_env(base, "svg", """
            %config InlineBackend.figure_formats = ['svg']
            import matplotlib.pyplot as plt
            from pathlib import Path
            Path("results").mkdir(exist_ok=True)
            fig, ax = plt.subplots(figsize=(3, 2))
            ax.plot([1, 2, 3], [1, 4, 9], label="squares")
            ax.legend()
            fig.savefig("results/fig.svg", format="svg")
            plt.show()
            """),
        "tqdm": _export_with_env(base, "tqdm", """
            import sys, time
            from tqdm import tqdm
            for i in tqdm(range(50)):
                time.sleep(0.01)
            for i in tqdm(range(20), file=sys.stdout, desc="stdout"):
                time.sleep(0.01)
            print("done")
            """),
        "set": _export_with_env(base, "set", f"print({GREEK})", extra_env={"PYTHONHASHSEED": "1"}),
        "stamp": _export_with_env(base, "stamp", """
            import datetime
            print("saved run_" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S.%f") + ".csv")
            """),
        "hostile": _export_with_env(base, "hostile", f"""
            import random
            from pathlib import Path
            from IPython.display import display
            bomb = {BILLION_LAUGHS_SVG!r}.replace("lol", "lol%d" % random.randrange(10**9))
            Path("bomb.svg").write_text(bomb)
            display({{"image/svg+xml": bomb}}, raw=True)
            """),
    }


_LAUGHS = "".join(f'<!ENTITY l{i} "{("&l%d;" % (i - 1)) * 10}">' for i in range(1, 10))
BILLION_LAUGHS_SVG = (f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY l0 "lol">{_LAUGHS}]>'
                      '<svg xmlns="http://www.w3.org/2000/svg"><text>&l9;</text></svg>')


def _without(monkeypatch, name: str) -> None:
    """Verify as if normaliser or text pass ``name`` were not installed."""
    from scidex_nbcapsule.verify import normalizers

    classes = normalizers.normalizer_classes
    monkeypatch.setattr(normalizers, "normalizer_classes", lambda: {k: v for k, v in classes().items() if k != name})


def test_default_matplotlib_svg_figure_and_file_are_verified(issue14, monkeypatch):
    report = verify(issue14["svg"], record=False)
    assert report.verdict in ("verified", "verified-within-tolerance"), report.summary()
    assert not [d for d in report.differences if d.status == "different"]
    files = {d.where: d for d in report.differences if d.kind == "file"}
    assert "results/fig.svg" in files and "(svg)" in files["results/fig.svg"].detail  # the bytes did differ
    # without the SVG normaliser the same capsule is a mismatch: random ids and dates, and the hint says why
    _without(monkeypatch, "svg")
    without = verify(issue14["svg"], record=False)
    assert without.verdict == "mismatch", without.summary()
    kinds = {(d.kind, d.what) for d in without.differences if d.status == "different"}
    assert ("cell", "image/svg+xml") in kinds and any(kind == "file" for kind, _what in kinds)
    assert all("`svg` normaliser would accept" in d.hint for d in without.differences if d.status == "different")


def test_text_tqdm_progress_bars_are_not_a_mismatch(issue14, monkeypatch):
    report = verify(issue14["tqdm"], record=False)
    assert report.verdict in ("verified", "verified-within-tolerance"), report.summary()
    _without(monkeypatch, "progress")  # then the rates, clocks and number of redraws differ
    without = verify(issue14["tqdm"], record=False)
    assert without.verdict == "mismatch", without.summary()
    assert {d.what for d in without.differences} == {"stderr", "stdout"}
    assert all("`progress` text pass would accept" in d.hint for d in without.differences)


def test_printed_set_in_another_hash_seed_order_is_verified(issue14, monkeypatch):
    orders = {subprocess.run([sys.executable, "-c", f"print({GREEK})"], capture_output=True, text=True, check=True,
                             env={"PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(orders) == 2  # the two seeds really print the set in two orders
    monkeypatch.setenv("PYTHONHASHSEED", "2")  # the re-run kernel inherits it
    report = verify(issue14["set"], record=False)
    assert report.verdict == "verified", report.summary()
    _without(monkeypatch, "set-repr")
    without = verify(issue14["set"], record=False)
    assert without.verdict == "mismatch" and "`set-repr`" in without.differences[0].hint, without.summary()


def test_a_real_mismatch_stays_one_and_says_what_would_help(crates, issue14, tmp_path):
    import tomllib

    random_report = verify(crates["random"], record=False)
    assert random_report.verdict == "mismatch"
    assert "random seed" in random_report.differences[0].hint
    html_file = tmp_path / "report.html"
    result = nbcapsule("verify", str(issue14["stamp"]), "--json", "--html", str(html_file))
    assert result.returncode == 10, result.stderr
    [difference] = json.loads(result.stdout)["differences"]
    hint = difference["hint"]
    assert "differ only in a compact timestamp" in hint and "sanitize = [{regex = " in hint, hint
    assert "hint:" in html_file.read_text()
    assert "hint: " in nbcapsule("verify", str(issue14["stamp"])).stdout
    # the rule in the hint, given as configuration, turns the mismatch into a verification
    config = tomllib.loads(hint[hint.index("sanitize = ["):])
    assert verify(issue14["stamp"], record=False, config=config).verdict == "verified"


def test_a_hostile_svg_is_compared_quickly_without_expansion(issue14):
    started = time.monotonic()
    report = verify(issue14["hostile"], record=False)
    assert time.monotonic() - started < 60
    assert report.verdict == "mismatch", report.summary()  # a random number in it: a real difference
    details = {(d.kind, d.status): d.detail for d in report.differences}
    assert "never expanded" in details[("cell", "different")] and "never expanded" in details[("file", "different")]
