"""The wheel of the scidex-nbcapsule that is running, so every capsule carries its own verifier.

No package index needs to hold this version: ``binder/requirements.txt`` installs the
wheel from the crate by relative path. The wheel is assembled from the installed files
(an editable checkout or a normal install alike), byte for byte the same for the same files
(fixed timestamps, sorted entries), and kept in the user cache until a file changes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from .errors import CapsuleError
from .hashing import replace_file

DIST = "scidex-nbcapsule"
#: The server extension enabled on install, as ``pip install`` of the real wheel does.
SERVER_CONFIG = ("etc/jupyter/jupyter_server_config.d/scidex_nbcapsule.json",
                 b'{\n  "ServerApp": {\n    "jpserver_extensions": {\n      "scidex_nbcapsule.server": true\n    }\n  }\n}\n')
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _package_files() -> list[tuple[str, Path]]:
    package = Path(__file__).resolve().parent
    found = []
    for dirpath, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo", ".so")) or name.startswith("."):
                continue
            full = Path(dirpath, name)
            found.append((f"scidex_nbcapsule/{full.relative_to(package).as_posix()}", full))
    return found


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def wheel_name() -> str:
    return f"scidex_nbcapsule-{_version()}-py3-none-any.whl"


def _version() -> str:
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        from . import __version__

        return __version__


def _dist_info_files(version: str) -> dict[str, bytes]:
    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError as exc:
        raise CapsuleError("scidex-nbcapsule is not installed as a distribution, so its wheel cannot be made",
                           hint="pip install scidex-nbcapsule (or pip install -e . in a checkout)") from exc
    info = f"scidex_nbcapsule-{version}.dist-info"
    fields = dist.read_text("METADATA") or dist.read_text("PKG-INFO")  # PKG-INFO: a checkout's .egg-info
    if not fields:
        raise CapsuleError("the installed scidex-nbcapsule has no metadata (METADATA or PKG-INFO)",
                           hint="reinstall it: pip install --force-reinstall scidex-nbcapsule")
    files = {f"{info}/METADATA": fields.encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: scidex-nbcapsule\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n"}
    for extra in ("entry_points.txt", "top_level.txt"):
        text = dist.read_text(extra)
        if text:
            files[f"{info}/{extra}"] = text.encode()
    for item in dist.files or []:
        if "licenses/" in str(item) or str(item).endswith("LICENSE"):
            located = Path(str(dist.locate_file(item)))
            if located.is_file():
                files[f"{info}/licenses/{located.name}"] = located.read_bytes()
    return files


def build_wheel() -> tuple[str, bytes]:
    """The name and bytes of this scidex-nbcapsule's wheel (cached while its files are unchanged)."""
    version = _version()
    sources = _package_files()
    key = hashlib.sha256("\0".join(f"{n}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for n, p in sources)
                         .encode() + version.encode()).hexdigest()[:20]
    cached = _cache_dir() / f"{key}-{wheel_name()}"
    if cached.is_file():
        return wheel_name(), cached.read_bytes()
    entries = {name: path.read_bytes() for name, path in sources}
    entries[f"scidex_nbcapsule-{version}.data/data/{SERVER_CONFIG[0]}"] = _server_config()
    entries.update(_dist_info_files(version))
    record = f"scidex_nbcapsule-{version}.dist-info/RECORD"
    lines = [_record_line(name, data) for name, data in sorted(entries.items())] + [f"{record},,"]
    entries[record] = ("\n".join(lines) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        dist_info = sorted(n for n in entries if ".dist-info/" in n)  # RECORD and its metadata last, as is usual
        for name in sorted(n for n in entries if ".dist-info/" not in n) + dist_info:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entries[name])
    data = buffer.getvalue()
    try:
        replace_file(cached, data)
    except OSError:
        pass  # no cache: built again next time
    return wheel_name(), data


def _server_config() -> bytes:
    installed = Path(sys.prefix, SERVER_CONFIG[0])
    try:
        return installed.read_bytes()
    except OSError:
        return SERVER_CONFIG[1]


def _cache_dir() -> Path:
    from .config import user_cache

    return user_cache("wheels")


__all__ = ["build_wheel", "wheel_name"]
