"""What an export may be told, in one typed object shared by the API, the CLI, the magic and the widget.

Each field carries its command-line flag and help text, so ``nbcapsule export``,
``%capsule export`` and the argument list handed to a headless kernel are all
built from this one place, with the same defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import CapsuleError

#: Crate layouts :func:`scidex_nbcapsule.api.export` can write.
FORMATS = ("folder", "zip", "eln")
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``500M``, ``2GiB``, ``4096``: a size in bytes (argparse type for ``--link-large``)."""
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        if cleaned and cleaned[-1] in _UNITS:
            value = int(float(cleaned[:-1]) * _UNITS[cleaned[-1]])
        else:
            value = int(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: give bytes or e.g. 500M, 2G") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _flag(flag: str | None, help: str, *, metavar: str | None = None, repeat: bool = False,
          **extra: Any) -> dict[str, Any]:
    return {"flag": flag, "help": help, "metavar": metavar, "repeat": repeat, **extra}



@dataclass
class ExportOptions:
    """Everything an export can be told besides the notebook; the defaults are the documented ones."""

    inputs: list[str | os.PathLike[str]] = field(default_factory=list, metadata=_flag(
        "--input", "a file or folder the analysis read that capture cannot see (repeatable)", metavar="PATH",
        repeat=True, path=True))
    outputs: list[str | os.PathLike[str]] = field(default_factory=list, metadata=_flag(
        "--output", "a file or folder the analysis wrote (repeatable)", metavar="PATH", repeat=True,
        path=True))
    exclude: list[str] = field(default_factory=list, metadata=_flag(
        "--exclude", "leave out files matching GLOB (repeatable)", metavar="GLOB", repeat=True))
    dest: str | os.PathLike[str] | None = field(default=None, metadata=_flag(
        "--dest", "folder to write the capsule in (default: capsules/ beside the notebook)", metavar="DIR",
        path=True))
    fmt: str = field(default="folder", metadata=_flag(
        None, "crate layout: folder, zip (one .zip) or eln (a zipped RO-Crate for electronic lab notebooks)"))
    title: str | None = field(default=None, metadata=_flag("--title", "capsule title (default: the notebook's "
                                                                       "first heading)"))
    description: str | None = field(default=None, metadata=_flag("--description", "what the analysis is about"))
    license: str | None = field(default=None, metadata=_flag(
        "--license", "SPDX license id, e.g. CC-BY-4.0 (default from config)", metavar="SPDX"))
    authors: list[str] = field(default_factory=list, metadata=_flag(
        "--author", "author (repeatable; default from config or git)", metavar="NAME", repeat=True))
    identifier: str | None = field(default=None, metadata=_flag(
        "--identifier", "citable identifier (DOI or URL) of the capsule", metavar="DOI_OR_URL"))
    allow_secrets: list[str | os.PathLike[str]] = field(default_factory=list, metadata=_flag(
        "--allow-secret", "include a file even though it looks like it holds credentials", metavar="PATH",
        repeat=True, path=True))
    link_large: int | None = field(default=None, metadata=_flag(
        "--link-large", "record files above SIZE (e.g. 500M) by digest and location instead of copying them",
        metavar="SIZE", type=parse_size))
    project_root: str | os.PathLike[str] | None = field(default=None, metadata=_flag(
        "--project-root", "the folder the analysis lives in, the boundary of what the capsule may hold (default: the "
        "enclosing git work tree, else the notebook's folder)", metavar="DIR", path=True))
    swh_origin: str | None = field(default=None, metadata=_flag(
        "--swh-origin", "Software Heritage origin URL of the code", metavar="URL"))
    swh_snapshot: str | None = field(default=None, metadata=_flag(
        "--swh-snapshot", "Software Heritage snapshot id (swh:1:snp:...)", metavar="SWHID"))
    bagit: bool = field(default=False, metadata=_flag("--bagit", "also pack the crate as a BagIt bag"))
    include_external: bool = field(default=False, metadata=_flag(
        "--include-external", "pack files the analysis read outside the project root under external/ (they are "
        "always listed in capsule.json)"))

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise CapsuleError(f"unknown crate format {self.fmt!r}", hint="use " + ", ".join(FORMATS))
        for item in _fields():
            value = getattr(self, item.name)
            if item.metadata["repeat"] and (value is None or isinstance(value, (str, os.PathLike))):
                # one path given where a list is expected: a list of its characters would be a silent mistake
                setattr(self, item.name, [] if value is None else [value])
            elif item.metadata["repeat"]:
                setattr(self, item.name, list(value))

    # -- building and reading command lines -------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add every option as ``nbcapsule export`` and ``%capsule export`` spell it."""
        for item in _fields():
            meta = item.metadata
            if item.name == "fmt":
                group = parser.add_mutually_exclusive_group()
                group.add_argument("--zip", action="store_const", dest="fmt", const="zip",
                                   help="write one .zip instead of a folder")
                group.add_argument("--eln", action="store_const", dest="fmt", const="eln",
                                   help="write an .eln file (zipped RO-Crate for electronic lab notebooks)")
                parser.set_defaults(fmt=item.default)
            elif item.type in ("bool", bool):
                parser.add_argument(meta["flag"], dest=item.name, action="store_true", help=meta["help"])
            elif meta["repeat"]:
                parser.add_argument(meta["flag"], dest=item.name, action="append", default=[],
                                    metavar=meta["metavar"], help=meta["help"])
            else:
                parser.add_argument(meta["flag"], dest=item.name, metavar=meta["metavar"], help=meta["help"],
                                    type=meta.get("type"))

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> "ExportOptions":
        """The options parsed by a parser that :meth:`add_arguments` built."""
        return cls(**{item.name: getattr(args, item.name) for item in _fields()})

    def to_argv(self) -> list[str]:
        """The same options as arguments, for the ``%capsule export`` that a headless kernel runs."""
        argv: list[str] = []
        for item in _fields():
            value, meta = getattr(self, item.name), item.metadata
            if item.name == "fmt":
                argv += [] if value == "folder" else [f"--{value}"]
            elif isinstance(value, bool):
                argv += [meta["flag"]] if value else []
            elif meta["repeat"]:
                for one in value:
                    argv += [meta["flag"], os.fspath(one)]
            elif value is not None:
                argv += [meta["flag"], os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
        return argv

    def absolute(self, base: str | os.PathLike[str] | None = None) -> "ExportOptions":
        """A copy whose paths are absolute against ``base`` (default: the current folder), for a process that
        runs elsewhere (a headless kernel starts in the notebook's folder)."""
        where = Path(base) if base is not None else Path.cwd()

        def absolute(path: str | os.PathLike[str]) -> str:
            return str((where / Path(path).expanduser()).resolve())

        changes: dict[str, Any] = {}
        for item in _fields():
            value = getattr(self, item.name)
            if not item.metadata.get("path") or value is None:
                continue
            changes[item.name] = [absolute(one) for one in value] if item.metadata["repeat"] else absolute(value)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExportOptions":
        """Options from JSON (a request body): unknown names and wrong types are the caller's mistake."""
        known = {item.name: item for item in _fields()}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise CapsuleError(f"unknown export option(s): {', '.join(unknown)}",
                               hint="known options: " + ", ".join(known))
        for name, value in data.items():
            item = known[name]
            if item.metadata["repeat"]:
                ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            elif item.type in ("bool", bool):
                ok = isinstance(value, bool)
            elif name == "link_large":
                ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
            else:
                ok = value is None or isinstance(value, str)
            if not ok:
                raise CapsuleError(f"export option {name!r} has the wrong type ({type(value).__name__})",
                                   hint=item.metadata["help"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as strings)."""
        out: dict[str, Any] = {}
        for item in _fields():
            value = getattr(self, item.name)
            if isinstance(value, list):
                value = [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
            elif isinstance(value, os.PathLike):
                value = os.fspath(value)
            out[item.name] = value
        return out


def _fields() -> Sequence[dataclasses.Field]:
    return dataclasses.fields(ExportOptions)


__all__ = ["ExportOptions", "FORMATS", "parse_size"]
