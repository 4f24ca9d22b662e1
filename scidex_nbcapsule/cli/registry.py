"""``nbcapsule register | list | show | export-files | history | db copy | db check``: the registry from a shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import print_json


def _command(sub: argparse._SubParsersAction, name: str, help: str, handler, *positionals: tuple[str, str],
             db: bool = True, json: bool = True) -> argparse.ArgumentParser:
    """A sub-command with its positional arguments and the usual ``--db`` and ``--json`` options."""
    p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
    for dest, metavar in positionals:
        p.add_argument(dest, metavar=metavar)
    if db:
        p.add_argument("--db", metavar="URL", default=None,
                       help="registry URL (sqlite:///path or postgresql://…); default $SCIDEX_NBCAPSULE_DB or a "
                            "SQLite file in your data folder")
    if json:
        p.add_argument("--json", action="store_true", help="print one JSON value")
    p.set_defaults(handler=handler)
    return p


def add_commands(sub: argparse._SubParsersAction) -> None:
    _command(sub, "register", "record a crate (folder, .zip or .eln) in the capsule registry", register_command,
             ("crate", "CRATE"))
    p = _command(sub, "list", "list registered capsules, newest first", list_command)
    p.add_argument("--author", help="part of an author's name, or an ORCID")
    p.add_argument("--commit", help="git commit id or prefix")
    p.add_argument("--status", help="registered, verified, mismatch, …")
    p.add_argument("--text", help="words in the title, description or notebook path")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--offset", type=int, default=0)
    _command(sub, "show", "everything the registry knows about a capsule", show_command, ("capsule_id", "ID"))
    _command(sub, "export-files", "write a registered crate back out to DEST (a new folder), checked against "
             "its manifest", export_files_command, ("capsule_id", "ID"), ("dest", "DEST"), json=False)
    _command(sub, "history", "the versions of an analysis and their verifications", history_command,
             ("capsule_id", "ID"))
    db = sub.add_parser("db", help="registry maintenance")
    dbsub = db.add_subparsers(dest="db_command", metavar="COMMAND")
    _command(dbsub, "copy", "copy every capsule from one registry into another (resumable)", db_copy_command,
             ("src", "SRC_URL"), ("dst", "DST_URL"), db=False)
    _command(dbsub, "check", "re-verify every stored manifest and the database itself (exit 1 on problems)",
             db_check_command)
    db.set_defaults(handler=lambda args: (db.print_help(), 2)[1])


def _open(url: str | None):
    from ..registry import open_registry

    return open_registry(url)


def register_command(args: argparse.Namespace) -> int:
    with _open(args.db) as registry:
        result = registry.register_capsule(Path(args.crate))
    if args.json:
        print_json(vars(result))
    else:
        verb = "registered" if result.created else "already registered as"
        parent = f", after {result.parent_id}" if result.parent_id else ""
        print(f"{verb} {result.capsule_id} (version {result.version}{parent})")
    return 0


def list_command(args: argparse.Namespace) -> int:
    with _open(args.db) as registry:
        rows = registry.list_capsules(author=args.author, commit=args.commit, status=args.status, text=args.text,
                                      limit=args.limit, offset=args.offset)
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        names = ", ".join(a.get("name", "") for a in row["authors"]) or "-"
        print(f"{row['capsule_id']}  v{row['version']}  {row['status']:<10}  {row['registered_at'][:19]}  "
              f"{row['title']}  ({names})")
    if not rows:
        print("no capsules match", file=sys.stderr)
    return 0


def show_command(args: argparse.Namespace) -> int:
    with _open(args.db) as registry:
        info = registry.get_capsule(args.capsule_id)
    if args.json:
        print_json(info)
        return 0
    _print_fields(info, ("capsule_id", "title", "version", "parent_id", "status", "created_at", "registered_at",
                         "license", "notebook", "manifest_digest", "crate_checksum", "location", "git_commit",
                         "git_tree_hash", "swh_origin_url", "swh_snapshot_id", "environment_digest"))
    print(f"authors: {', '.join(a.get('name', '') for a in info['authors']) or '-'}")
    print(f"stored copy: {'%d bytes' % info['stored_crate']['size'] if info['stored_crate'] else 'none'}")
    print(f"files ({len(info['files'])}):")
    for f in info["files"]:
        print(f"  {f['role']:<11} {f['size']:>12,}  {f['sha256'][:16]}…  {f['path']}")
    for a in info["archival"]:
        print(f"archival: {a['archiver']} → {a['target']}: {a['status']}"
              + (f" ({a['request_id']})" if a["request_id"] else ""))
    return 0


def _print_fields(data: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if data.get(key) is not None:
            print(f"{key}: {data[key]}")


def export_files_command(args: argparse.Namespace) -> int:
    with _open(args.db) as registry:
        dest = registry.export_files(args.capsule_id, Path(args.dest))
    print(f"wrote {dest}")
    return 0


def history_command(args: argparse.Namespace) -> int:
    with _open(args.db) as registry:
        info = registry.history(args.capsule_id)
    if args.json:
        print_json(info)
        return 0
    for v in info["versions"]:
        mark = "*" if v["capsule_id"] == args.capsule_id else " "
        print(f"{mark} v{v['version']}  {v['capsule_id']}  {v['status']:<10}  {v['registered_at'][:19]}  {v['title']}")
    for v in info["verifications"]:
        print(f"  verified {v['capsule_id']} {v['started']} → {v['finished']}: {v['verdict']}")
    return 0


def db_copy_command(args: argparse.Namespace) -> int:
    with _open(args.src) as source, _open(args.dst) as dest:
        report = source.copy_to(dest)
    if args.json:
        print_json(report.to_dict())
    else:
        print(f"copied {report.capsules_copied} capsule(s), {report.capsules_present} already there; "
              f"{report.verifications_copied} verification(s), {report.archival_copied} archival request(s)")
        for capsule_id in report.missing:
            print(f"missing in destination: {capsule_id}", file=sys.stderr)
        for capsule_id in report.mismatched:
            print(f"different manifest in destination: {capsule_id}", file=sys.stderr)
    return 0 if report.ok else 1


def db_check_command(args: argparse.Namespace) -> int:
    from ..errors import RegistryError
    from ..registry import CheckReport, default_url, redact_url

    try:
        with _open(args.db) as registry:
            report = registry.check()
    except RegistryError as exc:
        report = CheckReport(problems=[str(exc)])
    if args.json:
        print_json({"url": redact_url(args.db or default_url()), **report.to_dict()})
    else:
        print(f"checked {report.capsules_checked} capsule(s) at schema version {report.schema_version}")
        for problem in report.problems:
            print(f"problem: {problem}")
        print("ok" if report.ok else f"{len(report.mismatched)} capsule(s) do not match their digest")
    return 0 if report.ok else 1
