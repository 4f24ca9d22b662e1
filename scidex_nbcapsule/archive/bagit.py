"""Pack a crate folder as a BagIt 1.0 bag (RFC 8493), the way RO-Crate recommends.

The crate goes under ``data/``; the bag carries SHA-256 and SHA-512 payload
and tag manifests and names the capsule in ``bag-info.txt``
(``External-Identifier: urn:uuid:…``). Each file is read once: the copy and
both digests come from the same pass (several files at a time, see
:mod:`scidex_nbcapsule.hashing`), and the capsule's own SHA-256 fixity is
checked on the way so a corrupted crate is never sealed into a valid-looking
bag. The bag is built in a hidden folder beside the destination and renamed
into place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import uuid
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Iterator

import bagit as bagit_lib

from .. import __version__
from ..capture import io_pool, ordered_map
from ..errors import ArchiveError, DestinationExists, FixityError
from ..hashing import copy_with_digests
from ..manifest import Manifest
from . import SUCCEEDED, Archiver, ArchiveResult

BAGIT_VERSION = "1.0"
ALGORITHMS = ("sha256", "sha512")


def capsule_uuid(capsule_id: str) -> str:
    """The UUID inside a ``capsule-<uuid>`` id, for ``External-Identifier: urn:uuid:…``."""
    try:
        return str(uuid.UUID(capsule_id.removeprefix("capsule-")))
    except (ValueError, AttributeError) as exc:
        raise ArchiveError(f"{capsule_id!r} is not a capsule id of the form capsule-<uuid>") from exc


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _encode_path(relpath: str) -> str:
    # Line breaks would split a manifest line; bagit-python decodes exactly these two escapes.
    return relpath.replace("\r", "%0D").replace("\n", "%0A")


def _payload(crate_path: Path) -> Iterator[tuple[Path, str]]:
    for dirpath, dirnames, filenames in os.walk(crate_path):
        dirnames.sort()
        here = Path(dirpath)
        for name in dirnames:
            if (here / name).is_symlink():
                raise ArchiveError(f"{here / name} is a symbolic link; a bag cannot hold links",
                                   hint="replace the link by the folder it points to, or re-export the capsule")
        for name in sorted(filenames):
            path = here / name
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                raise ArchiveError(f"{path} is not a regular file; a bag can only hold files",
                                   hint="remove it from the crate folder or re-export the capsule")
            yield path, path.relative_to(crate_path).as_posix()


def _write_lines(path: Path, lines: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(line + "\n" for line in lines)


def _tag_manifests(bag: Path) -> None:
    tag_files = sorted(p.name for p in bag.iterdir() if p.is_file() and not p.name.startswith("tagmanifest-"))
    for alg in ALGORITHMS:
        lines = []
        for name in tag_files:
            lines.append(f"{hashlib.new(alg, (bag / name).read_bytes()).hexdigest()}  {name}")
        _write_lines(bag / f"tagmanifest-{alg}.txt", lines)


def build_bag(crate_path: Path, dest: Path, manifest: Manifest, *, validate: str = "completeness",
              extra_info: dict[str, str] | None = None) -> dict[str, Any]:
    """Write ``crate_path`` as a BagIt 1.0 bag at ``dest`` (which must not exist); returns bag facts.

    ``validate`` is ``"full"`` (re-read and re-hash everything with bagit-python),
    ``"completeness"`` (structure, Payload-Oxum and file lists only) or ``"none"``.
    """
    crate_path, dest = Path(crate_path), Path(dest)
    if dest.exists() or dest.is_symlink():
        raise DestinationExists(f"{dest} already exists; bags are never overwritten",
                                hint="choose another --dest, or remove the old bag first")
    if not (crate_path / "capsule.json").is_file():
        raise ArchiveError(f"{crate_path} is not a crate folder (no capsule.json)")
    if dest.resolve().is_relative_to(crate_path.resolve()):
        raise ArchiveError(f"{dest} lies inside the crate {crate_path}; the bag would contain itself",
                           hint="choose a --dest outside the crate folder")
    expected = {r.path: r.sha256 for r in manifest.files if r.in_crate}
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        data = work / "data"
        data.mkdir()
        entries: dict[str, list[str]] = {alg: [] for alg in ALGORITHMS}
        total_bytes = total_files = 0
        payload = list(_payload(crate_path))

        def copy(item: tuple[Path, str]) -> tuple[dict[str, str], os.stat_result]:
            return copy_with_digests(item[0], data / item[1], ALGORITHMS)

        with io_pool() as pool:
            copies = ordered_map(pool, copy, payload)
            try:
                for (source, rel), (digests, st) in zip(payload, copies):
                    size = st.st_size
                    if rel in expected and digests["sha256"] != expected.pop(rel):
                        raise FixityError(f"{rel} in {crate_path} does not match the SHA-256 its capsule records",
                                          hint="the crate was altered or damaged; archive a pristine copy")
                    for alg in ALGORITHMS:
                        entries[alg].append(f"{digests[alg]}  data/{_encode_path(rel)}")
                    total_bytes += size
                    total_files += 1
            finally:
                copies.close()  # nothing still copying while the partial bag is removed
        if expected:
            raise FixityError(f"{len(expected)} file(s) the capsule records are missing from {crate_path}, "
                              f"e.g. {sorted(expected)[0]}", hint="archive a complete copy of the crate")
        for alg in ALGORITHMS:
            _write_lines(work / f"manifest-{alg}.txt", entries[alg])
        _write_lines(work / "bagit.txt", [f"BagIt-Version: {BAGIT_VERSION}", "Tag-File-Character-Encoding: UTF-8"])
        external_id = f"urn:uuid:{capsule_uuid(manifest.capsule_id)}"
        info = {
            "Bag-Software-Agent": f"scidex-nbcapsule {__version__}",
            "Bagging-Date": date.today().isoformat(),
            "External-Description": _one_line(f"RO-Crate capsule {manifest.capsule_id}: {manifest.title}"),
            "External-Identifier": external_id,
            "Payload-Oxum": f"{total_bytes}.{total_files}",
        }
        info.update({k: _one_line(v) for k, v in (extra_info or {}).items()})
        _write_lines(work / "bag-info.txt", [f"{k}: {v}" for k, v in sorted(info.items())])
        _tag_manifests(work)
        if validate != "none":
            _validate(work, full=validate == "full")
        if dest.exists():
            raise DestinationExists(f"{dest} appeared while the bag was being written; nothing was overwritten")
        os.rename(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {"bag": str(dest), "external_identifier": external_id, "payload_oxum": info["Payload-Oxum"],
            "bagit_version": BAGIT_VERSION, "algorithms": list(ALGORITHMS)}


def _validate(bag: Path, *, full: bool) -> None:
    try:
        bag_obj = bagit_lib.Bag(str(bag))
        bag_obj.validate(completeness_only=not full)
    except bagit_lib.BagError as exc:
        details = "; ".join(str(d) for d in getattr(exc, "details", None) or [])
        raise ArchiveError(f"{bag} is not a valid BagIt bag: {exc}{': ' + details if details else ''}",
                           hint="the bag was damaged; rebuild it from the crate") from exc


def read_bag(bag_path: Path, *, validate: str = "full") -> dict[str, Any]:
    """Validate a bag and return its ``bag-info.txt`` fields plus the path of the crate inside it (``crate``)."""
    bag_path = Path(bag_path)
    if not (bag_path / "bagit.txt").is_file():
        raise ArchiveError(f"{bag_path} is not a BagIt bag (no bagit.txt)")
    if validate != "none":
        _validate(bag_path, full=validate == "full")
    bag_obj = bagit_lib.Bag(str(bag_path))
    info = dict(bag_obj.info)
    info["BagIt-Version"] = ".".join(str(n) for n in bag_obj.version_info)
    info["crate"] = str(bag_path / "data")
    return info


@contextmanager
def unpacked_crate(bag_path: Path, *, validate: str = "full") -> Iterator[Path]:
    """The crate folder inside a bag (``data/``), after checking the bag, so it can be verified as a crate."""
    info = read_bag(bag_path, validate=validate)
    crate = Path(info["crate"])
    if not (crate / "capsule.json").is_file():
        raise ArchiveError(f"the bag {bag_path} does not contain a capsule (no data/capsule.json)")
    yield crate


class BagItArchiver(Archiver):
    """Archive a crate as a local BagIt bag, ready for a repository or tape that speaks BagIt."""

    name = "bagit"

    def archive(self, crate_path: Path, manifest: Manifest, *, dest: Path | str | None = None,
                validate: str = "completeness", **options: Any) -> ArchiveResult:
        crate_path = Path(crate_path)
        if dest is None:
            dest = crate_path.parent / f"{crate_path.name}.bag"
        facts = build_bag(crate_path, Path(dest), manifest, validate=validate)
        return ArchiveResult(archiver=self.name, status=SUCCEEDED, target=str(Path(dest)),
                             capsule_id=manifest.capsule_id, location=str(Path(dest).resolve()), details=facts)
