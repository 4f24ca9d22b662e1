"""The crate checksum: one SHA-256 over every file's digest and path, the same for a folder and its zip."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..hashing import hash_file


def crate_checksum(root: Path) -> str:
    """SHA-256 over ``<sha256>  <path>`` lines of every file under ``root``."""
    lines = []
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            full = Path(dirpath, name)
            lines.append(f"{hash_file(full).sha256}  {full.relative_to(root).as_posix()}\n")
    return checksum_of_lines(lines)


def checksum_of_lines(lines: list[str]) -> str:
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()
