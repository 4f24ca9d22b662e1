"""How a crate folder is packed: as it is (folder), as an RO-Crate zip, or as an .eln archive."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path


def _zip_folder(folder: Path, target: Path, top: str) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for dirpath, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                full = Path(dirpath, name)
                rel = full.relative_to(folder).as_posix()
                kind = zipfile.ZIP_STORED if name.endswith((".png", ".jpg", ".gz", ".zip")) else zipfile.ZIP_DEFLATED
                archive.write(full, f"{top}/{rel}", compress_type=kind)
    with open(target, "rb") as handle:
        os.fsync(handle.fileno())
