"""The wheel holds every data file the package reads at run time (a source checkout hides a missing one)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT

#: Files the code opens from its own folder, by the path it opens them with.
RUNTIME_FILES = [
    "scidex_nbcapsule/capture/interposer.c",  # compiled on first use: without it no system-level capture
    "scidex_nbcapsule/schemas/capsule.schema.json",
    "scidex_nbcapsule/server/openapi.yaml",
    "scidex_nbcapsule/contexts/ro-crate-1.1-context.jsonld",
    "scidex_nbcapsule/contexts/workflow-run-context.jsonld",
]


@pytest.mark.slow
def test_the_wheel_holds_every_file_the_package_reads(tmp_path):
    for name in RUNTIME_FILES:
        assert (ROOT / name).is_file(), f"{name} is not in the source tree"
    # from a copy of the files git knows: a checkout's stale *.egg-info would smuggle missing files in
    source = tmp_path / "source"
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    wheel = next(Path(tmp_path).glob("scidex_nbcapsule-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in RUNTIME_FILES if name not in names]
    assert not missing, f"missing from {wheel.name}: {missing}"
