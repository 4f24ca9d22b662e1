"""One-pass hashing and copying agrees with hashlib and with git."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from scidex_nbcapsule import hashing
from scidex_nbcapsule.errors import InputFileError
from scidex_nbcapsule.hashing import COPY_STEP, PARALLEL_THRESHOLD, copy_and_hash, hash_bytes, hash_file


@pytest.mark.parametrize("size", [0, 1, 1000, PARALLEL_THRESHOLD - 1, PARALLEL_THRESHOLD + 12345, 2 * COPY_STEP + 7])
def test_copy_and_hash_matches_hashlib_and_git(tmp_path: Path, size: int):
    source = tmp_path / "src.bin"
    source.write_bytes(os.urandom(size))
    digests = copy_and_hash(source, tmp_path / "sub" / "dst.bin")
    data = source.read_bytes()
    assert (tmp_path / "sub" / "dst.bin").read_bytes() == data
    assert digests.sha256 == hashlib.sha256(data).hexdigest()
    assert digests.size == size
    git = subprocess.run(["git", "hash-object", str(source)], capture_output=True, text=True, check=True)
    assert digests.sha1_git == git.stdout.strip()
    assert hash_file(source) == digests
    assert hash_bytes(data).sha256 == digests.sha256


def test_executable_mode_is_kept(tmp_path: Path):
    source = tmp_path / "run.sh"
    source.write_text("#!/bin/sh\n")
    source.chmod(0o755)
    assert hash_file(source).mode == 0o100755
    assert copy_and_hash(source, tmp_path / "copy.sh").mode == 0o100755


def test_missing_and_directory_sources_are_clear(tmp_path: Path):
    with pytest.raises(InputFileError, match="does not exist"):
        hash_file(tmp_path / "nope")
    with pytest.raises(InputFileError, match="is a directory"):
        hash_file(tmp_path)


def test_a_source_that_shrinks_during_the_copy_is_refused(tmp_path: Path, monkeypatch):
    source = tmp_path / "growing.bin"
    with open(source, "wb") as handle:
        for _ in range(256):
            handle.write(os.urandom(1 << 20))
    dest = tmp_path / "copy.bin"
    monkeypatch.setattr(hashing, "COPY_STEP", 1 << 20)  # many steps, so the truncation lands mid-copy

    def truncate_once_the_copy_starts() -> None:
        deadline = time.monotonic() + 30
        while not dest.exists() and time.monotonic() < deadline:
            time.sleep(0.0005)
        os.truncate(source, 1 << 20)

    writer = threading.Thread(target=truncate_once_the_copy_starts)
    writer.start()
    try:
        with pytest.raises(InputFileError, match="changed while it was being copied"):
            copy_and_hash(source, dest)
    finally:
        writer.join()
