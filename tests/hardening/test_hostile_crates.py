"""Hostile crates: whatever ro-crate-metadata.json, capsule.json or a crate zip hold, reading ends in a
CapsuleError with a message or a verdict, and a zip never writes outside the working folder.

Extends tests/test_crate.py (which has one case per zip attack) with generated mutations and a snapshot of
the whole tree around the working folder.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from scidex_nbcapsule.crate import METADATA_FILE, MANIFEST_FILE, open_crate, safe_extract
from scidex_nbcapsule.errors import CapsuleError, UnsafeArchive
from scidex_nbcapsule.manifest import digest
from scidex_nbcapsule.verify import _read_capsule_id, verify
from scidex_nbcapsule.verify.fixity import check_fixity

GROUP = "hostile crates"
EXAMPLES = 150

# -- generated mutations of the two JSON files -------------------------------------------------------------
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
           | st.sampled_from(["", "../../etc/passwd", "/etc/passwd", "ro-crate-metadata.json", "capsule.json",
                              "a" * 64, "0" * 64, "9" * 5000, "-1", "1e400", "\x00", "\ud7ff\u202e"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=16)
KINDS = ["replace", "delete", "wrong-type", "huge", "unknown-type", "targeted", "deep-raw", "deep-moderate",
         "random-bytes", "not-utf8", "truncate", "add-key", "raw-number"]
#: Keys the readers look at: a mutation aimed at one of them reaches past the first checks.
INTERESTING = {"@graph", "@id", "@type", "@context", "contentSize", "sha256", "hasPart", "files", "path", "size",
               "role", "linked_from", "manifest_digest", "capsule_id", "notebook", "execution", "cells", "mode",
               "authors", "withheld", "swhids", "git"}
#: Keys whose values the readers turn into numbers.
NUMERIC = {"contentSize", "size", "mode", "execution_count"}
MARK = "@@hostile-placeholder@@"


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, prefix + (index,))


def _wrong_type(old):
    if isinstance(old, bool) or old is None:
        return "true"
    if isinstance(old, (int, float)):
        return str(old)
    if isinstance(old, str):
        return [old] if len(old) % 2 else len(old)
    if isinstance(old, list):
        return {"0": old[:1]}
    return list(old)[:2]


def _mutate_json(original: bytes, kind: str, choice: int, value, size: int) -> bytes:
    """Bytes of ``original`` (a JSON document) broken in the way ``kind`` names."""
    if kind == "random-bytes":
        return bytes((choice * 131 + i * 7 + (i >> 3)) % 256 for i in range(size % 4096 + 1))
    if kind == "not-utf8":
        at = choice % max(1, len(original))
        return original[:at] + b"\xff\xfe\xc3\x28\xed\xa0\x80" + original[at:]
    if kind == "truncate":
        return original[:choice % max(1, len(original))]
    data = json.loads(original)
    paths = [p for p in _paths(data) if p]
    if kind == "targeted" or (kind == "wrong-type" and choice % 2):
        paths = [p for p in paths if isinstance(p[-1], str) and p[-1] in INTERESTING] or paths
    elif kind == "raw-number":
        paths = [p for p in paths if isinstance(p[-1], str) and p[-1] in NUMERIC] or paths
    path = paths[choice % len(paths)]
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    raw = None
    if kind == "delete":
        del parent[last]
    elif kind == "wrong-type":
        parent[last] = _wrong_type(parent[last])
    elif kind == "huge":
        parent[last] = "ÿ" * (1 << 20) + "x" * (size * 997 % (3 << 20))
    elif kind == "unknown-type":
        target = parent if isinstance(parent, dict) else data
        if isinstance(target, dict):
            target["@type"] = value if choice % 3 == 0 else ["File", f"UnknownType{choice}"] if choice % 3 == 1 \
                else f"http://example.org/Unknown{choice}"
    elif kind == "add-key":
        target = parent[last] if isinstance(parent[last], dict) else parent
        if isinstance(target, dict):
            target[f"unknown{choice}"] = value
    elif kind in ("deep-raw", "deep-moderate"):
        depth = 100_000 if kind == "deep-raw" else 200 + size % 1500
        opener, closer = ("[", "]") if choice % 2 else ('{"a":', "}")
        raw = opener * depth + ("1" if opener != "[" else "") + closer * depth
        parent[last] = MARK
    elif kind == "raw-number":
        raw = ["Infinity", "-Infinity", "NaN", "1e400", "-0", "1" * 5000, "1.5", "-7"][choice % 8]
        parent[last] = MARK
    else:
        parent[last] = value
    text = json.dumps(data, ensure_ascii=False, allow_nan=True)
    if raw is not None:
        text = text.replace(json.dumps(MARK), raw, 1)
    return text.encode("utf-8", "surrogatepass")


def _reseal(text: bytes) -> bytes:
    """Recompute capsule.json's manifest digest, so the mutation reaches past the digest check."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            return text
        data["manifest_digest"] = digest({k: v for k, v in data.items() if k != "manifest_digest"})
        return json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except (ValueError, RecursionError, TypeError):
        return text


def read_like_verify(crate: Path) -> str:
    """Open the crate and check its fixity: a verdict or a CapsuleError with a message, nothing else."""
    try:
        with open_crate(crate) as opened:
            problems = check_fixity(opened)
            for problem in problems:
                assert isinstance(problem.kind, str) and problem.message.strip()
            return "fixity-failed" if problems else "intact"
    except CapsuleError as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        _read_capsule_id(crate)  # what verify() does next for its report: best effort, must not raise
        return type(exc).__name__


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.mark.parametrize("target", [METADATA_FILE, MANIFEST_FILE])
@settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(kind=st.sampled_from(KINDS), choice=st.integers(min_value=0, max_value=1 << 20),
       size=st.integers(min_value=0, max_value=1 << 22), value=json_values, reseal=st.booleans())
def test_mutated_json_ends_in_a_capsule_error_or_a_verdict(small_crate, scratch, counts, target, kind, choice,
                                                           size, value, reseal):
    crate = Path(tempfile.mkdtemp(dir=scratch)) / "crate"
    shutil.copytree(small_crate, crate)
    try:
        hostile = _mutate_json((crate / target).read_bytes(), kind, choice, value, size)
        if reseal and target == MANIFEST_FILE:
            hostile = _reseal(hostile)
        (crate / target).write_bytes(hostile)
        outcome = read_like_verify(crate)
    finally:
        shutil.rmtree(crate.parent)
    counts(GROUP, f"{target} mutations tried")
    counts(GROUP, f"{target} outcome: {outcome}")


def test_hostile_crates_through_verify_give_a_verdict(small_crate, tmp_path, counts):
    """verify(record=False) on broken crates: a fixity-failed verdict, never a re-run nor an exception."""
    cases = {
        "metadata random bytes": (METADATA_FILE, os.urandom(3000)),
        "metadata 100k nested lists": (METADATA_FILE, b"[" * 100_000 + b"]" * 100_000),
        "manifest not UTF-8": (MANIFEST_FILE, b'{"capsule_id": "\xff\xfe"}'),
        "manifest 100k nested objects": (MANIFEST_FILE, b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
    }
    metadata = json.loads((small_crate / METADATA_FILE).read_text())
    for entity in metadata["@graph"]:
        if entity.get("@id") == "requirements.txt":
            entity["contentSize"] = float("inf")
    cases["metadata contentSize Infinity"] = (METADATA_FILE, json.dumps(metadata).encode())
    metadata = json.loads((small_crate / METADATA_FILE).read_text())
    metadata["@graph"] = [{"@id": e["@id"], "@type": "UnknownThing"} for e in metadata["@graph"]]
    cases["metadata unknown @types"] = (METADATA_FILE, json.dumps(metadata).encode())
    for name, (target, data) in cases.items():
        crate = tmp_path / name.replace(" ", "-")
        shutil.copytree(small_crate, crate)
        (crate / target).write_bytes(data)
        report = verify(crate, record=False, cell_timeout=30, total_timeout=60)
        assert report.verdict == "fixity-failed", (name, report.verdict)
        assert report.execution is None and report.fixity and all(p.message for p in report.fixity)
        assert report.to_html() and report.to_json()
        counts(GROUP, "verify(record=False) on hostile crates: fixity-failed verdicts")


# -- hostile zips ------------------------------------------------------------------------------------------
def _tree(root: Path) -> dict[str, int]:
    """Every path under ``root`` with its size (links by their target text), to compare before and after."""
    seen = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(dirpath, name)
            seen[str(full.relative_to(root))] = -1 if full.is_dir() else full.lstat().st_size
    return seen


def _zip(path: Path, members: list[tuple], *, metadata: bool = True) -> Path:
    """Write a zip: members are (name, bytes[, unix mode]); a real crate top folder unless told otherwise."""
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # duplicate names are the point
        if metadata:
            archive.writestr("c/ro-crate-metadata.json", '{"@context": [], "@graph": []}')
        for name, data, *mode in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode:
                info.external_attr = mode[0] << 16
            archive.writestr(info, data)
    return path


def _declare_size(path: Path, member: str, declared: int) -> Path:
    """Rewrite the uncompressed size a member declares (local and central headers): a lying zip."""
    blob = bytearray(path.read_bytes())
    name = member.encode()
    at = 0
    while (at := blob.find(b"PK\x03\x04", at)) != -1:
        if blob[at + 30:at + 30 + len(name)] == name:
            struct.pack_into("<I", blob, at + 22, declared)
        at += 4
    at = 0
    while (at := blob.find(b"PK\x01\x02", at)) != -1:
        if blob[at + 46:at + 46 + len(name)] == name:
            struct.pack_into("<I", blob, at + 24, declared)
        at += 4
    path.write_bytes(bytes(blob))
    return path


LINK = stat.S_IFLNK | 0o777


def _hostile_zips(folder: Path, outside: Path) -> dict[str, tuple[Path, dict]]:
    """name -> (zip, keyword arguments for open_crate)."""
    lim = {"max_bytes": 1 << 20}
    z = {
        "parent ../": (_zip(folder / "a.zip", [("../escape.txt", b"x")]), {}),
        "nested ../..": (_zip(folder / "b.zip", [("c/d/../../../escape.txt", b"x")]), {}),
        "deep ../ to the outside folder": (_zip(folder / "b2.zip", [("../" * 12 + str(outside)[1:] + "/e.txt", b"x")]), {}),
        "absolute": (_zip(folder / "c.zip", [(f"{outside}/abs-escape.txt", b"x")]), {}),
        "absolute backslash": (_zip(folder / "d.zip", [("\\\\server\\share\\x.txt", b"x")]), {}),
        "drive letter": (_zip(folder / "e.zip", [("C:/Windows/escape.txt", b"x")]), {}),
        "backslash ..": (_zip(folder / "f.zip", [("c\\..\\..\\escape.txt", b"x")]), {}),
        "symlink member": (_zip(folder / "g.zip", [("c/link", str(outside).encode(), LINK)]), {}),
        "symlink then write through it": (_zip(folder / "h.zip", [("c/link", b"../../..", LINK),
                                                                  ("c/link/escape.txt", b"x")]), {}),
        "duplicate name": (_zip(folder / "i.zip", [("c/x.txt", b"1"), ("c/x.txt", b"2")]), {}),
        "duplicate after normalising": (_zip(folder / "j.zip", [("c/x.txt", b"1"), ("c//x.txt", b"2")]), {}),
        "duplicate dot segment": (_zip(folder / "k.zip", [("c/x.txt", b"1"), ("c/./x.txt", b"2")]), {}),
        "bomb: ratio": (_zip(folder / "l.zip", [("c/zeros.bin", b"\0" * (40 << 20))]), {}),
        "bomb: total past max_bytes=": (_zip(folder / "m.zip", [(f"c/p{i}.bin", os.urandom(64 << 10))
                                                                for i in range(20)]), lim),
        "bomb: declared size past max_bytes=": (_declare_size(_zip(folder / "n.zip", [("c/big.bin", b"y" * 1000)]),
                                                              "c/big.bin", 0xFFFFFFF0), lim),
        "lying header: larger than declared": (_declare_size(_zip(folder / "o.zip", [("c/big.bin", os.urandom(200_000))]),
                                                             "c/big.bin", 10), {}),
        "not a zip": (folder / "p.zip", {}),
        "no metadata": (_zip(folder / "q.zip", [("c/x.txt", b"1")], metadata=False), {}),
    }
    (folder / "p.zip").write_bytes(b"PK\x03\x04" + os.urandom(500))
    return z


def test_hostile_zips_are_refused_before_anything_is_written_outside(tmp_path, monkeypatch, counts, small_crate_zip):
    inbox, outside, scratch = tmp_path / "in", tmp_path / "outside", tmp_path / "scratch"
    for folder in (inbox, outside, scratch):
        folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # open_crate unpacks under scratch/
    zips = _hostile_zips(inbox, outside)
    before = _tree(tmp_path)
    for name, (path, kwargs) in zips.items():
        with pytest.raises(CapsuleError) as info:
            with open_crate(path, **kwargs):
                pass
        assert str(info.value).strip(), name
        assert _tree(tmp_path) == before, f"{name}: something was written or left behind"
        counts(GROUP, "hostile zips refused by open_crate")
    # the name checks run before a single byte is written, even inside the working folder
    for name, (path, kwargs) in zips.items():
        if name.startswith(("parent", "nested", "deep", "absolute", "drive", "backslash", "symlink", "duplicate",
                            "bomb")):
            work = tmp_path / "work"
            work.mkdir()
            with pytest.raises(UnsafeArchive):
                safe_extract(path, work, limit=kwargs.get("max_bytes"))
            assert not any(work.iterdir()), f"{name}: members were written before the refusal"
            work.rmdir()
            counts(GROUP, "hostile zips refused before the first byte")
    # the limit from the environment, and a real capsule zip past it
    monkeypatch.setenv("NBCAPSULE_MAX_UNZIP_BYTES", "4096")
    for name, path in [("env limit: real capsule", small_crate_zip), ("env limit: many parts", zips["bomb: total past max_bytes="][0])]:
        with pytest.raises(UnsafeArchive, match="NBCAPSULE_MAX_UNZIP_BYTES"):
            with open_crate(path):
                pass
        counts(GROUP, "zips refused by NBCAPSULE_MAX_UNZIP_BYTES")
    monkeypatch.delenv("NBCAPSULE_MAX_UNZIP_BYTES")
    with open_crate(small_crate_zip) as opened:  # the real zip itself is fine
        assert check_fixity(opened) == []
    assert not any(scratch.iterdir()), "the temporary unpacking folder was not removed"
    assert not (Path("/tmp") / "abs-escape.txt").exists()
    assert _tree(outside) == {}
