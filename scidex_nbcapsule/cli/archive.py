"""``nbcapsule archive``: hand a capsule to an archiver, follow and retry its requests."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ..errors import ArchiveError, InvalidId


def add_commands(subparsers: Any) -> None:
    from ..archive import available_archivers

    parser = subparsers.add_parser(
        "archive",
        help="archive a capsule as a BagIt bag or with Software Heritage (Save Code Now)",
        description="Archive a capsule (crate folder, zip, or registered capsule id). "
                    "--status asks how pending requests are doing; --retry sends requests that could not be sent.",
    )
    parser.add_argument("crate", nargs="?", metavar="CRATE_OR_ID",
                        help="crate folder or zip, or a capsule id known to the registry")
    parser.add_argument("--to", dest="archiver", default=None, metavar="ARCHIVER",
                        help=f"archiver to use: {', '.join(available_archivers())}")
    parser.add_argument("--dest", type=Path, default=None, metavar="DIR",
                        help="bagit: the bag folder to create (must not exist; default: <crate>.bag beside the crate)")
    parser.add_argument("--swh-url", default=None, metavar="URL",
                        help="Software Heritage API address (default: $SCIDEX_NBCAPSULE_SWH_URL or "
                             "https://archive.softwareheritage.org); token from $SCIDEX_NBCAPSULE_SWH_TOKEN")
    parser.add_argument("--origin", default=None, metavar="URL",
                        help="swh: public repository URL to save (default: the origin recorded in the capsule)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--status", action="store_true", help="ask the archives about pending requests")
    action.add_argument("--retry", action="store_true", help="send queued requests again")
    parser.add_argument("--db", default=None, metavar="URL",
                        help="registry to record requests in (registry URL: sqlite:///PATH or postgresql://...)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.set_defaults(handler=run)


def _open_registry(url: str | None) -> Any:
    try:
        from ..registry import open_registry
    except ImportError as exc:
        raise ArchiveError(f"the capsule registry is not available: {exc}",
                           hint="pass a crate folder or zip instead of an id, and leave out --db") from exc
    return open_registry(url)


def _crate_location(registry: Any, capsule_id: str) -> Path:
    getter = getattr(registry, "get_capsule", None) or getattr(registry, "get", None)
    if getter is None:
        raise ArchiveError("this registry cannot look capsules up by id", hint="pass the crate folder or zip instead")
    record = getter(capsule_id)
    location = record.get("location") if isinstance(record, dict) else getattr(record, "location", None)
    if not location:
        raise ArchiveError(f"the registry does not know where the crate of {capsule_id} is stored",
                           hint="pass the crate folder or zip instead of its id")
    return Path(location)


def _archiver_config(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {"swh": {"base_url": args.swh_url}} if args.swh_url else {}


def _print(results: list[Any], as_json: bool) -> None:
    if as_json:
        from . import print_json

        print_json([r.to_dict() for r in results])
        return
    if not results:
        print("nothing to do: no matching archival requests")
    for r in results:
        where = r.location or r.target
        line = f"{r.capsule_id or '-'}  {r.archiver}: {r.status}  {where}"
        if r.request_id:
            line += f"  (request {r.request_id})"
        print(line)
        for key in ("reason", "warning", "hint"):
            if r.details.get(key):
                print(f"    {key}: {r.details[key]}")


def run(args: argparse.Namespace) -> int:
    from ..archive import QUEUED, poll_status, retry_pending, run_archival
    from ..manifest import is_capsule_id

    config = _archiver_config(args)
    target = args.crate
    if args.retry or args.status:
        registry = _open_registry(args.db)
        capsule_id = None
        if target:
            if not is_capsule_id(target):
                raise InvalidId(f"{target!r} is not a capsule id", hint="--status and --retry take a capsule id, or none for all")
            capsule_id = target
        results = (retry_pending if args.retry else poll_status)(registry, capsule_id, archiver_config=config)
        _print(results, args.json)
        return 0 if all(r.status != "failed" for r in results) else 1

    if not target:
        raise ArchiveError("which capsule? give a crate folder, zip or capsule id", hint="nbcapsule archive CRATE --to bagit")
    if not args.archiver:
        from ..archive import available_archivers

        raise ArchiveError("choose an archiver with --to", hint=f"one of: {', '.join(available_archivers())}")
    registry = _open_registry(args.db) if args.db else None
    path = Path(target)
    if not path.exists():
        if not is_capsule_id(target):
            raise InvalidId(f"{target} is neither an existing crate nor a capsule id",
                            hint="check the path, or give an id like capsule-<uuid>")
        registry = registry or _open_registry(args.db)
        path = _crate_location(registry, target)

    from ..crate import open_crate

    options: dict[str, Any] = {}
    if args.archiver == "bagit":
        dest = args.dest
        if dest is None and not path.is_dir():
            dest = Path.cwd() / f"{path.stem}.bag"
        options["dest"] = dest
    if args.archiver == "swh" and args.origin:
        options["origin"] = args.origin
    with ExitStack() as stack:
        crate = stack.enter_context(open_crate(path))
        result = run_archival(args.archiver, crate.root, registry, manifest=crate.manifest,
                              archiver_config=config.get(args.archiver), **options)
    _print([result], args.json)
    if result.status == QUEUED and registry is None:
        print("nbcapsule: the request could not be sent and is not recorded; "
              "run again later, or pass --db to keep it for `nbcapsule archive --retry`", file=sys.stderr)
    return 0 if result.status in ("succeeded", "pending", "queued") else 1

