"""``nbcapsule rebuild`` and ``nbcapsule env list|prune``: environments rebuilt from a crate's lock."""

from __future__ import annotations

import argparse
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from . import print_json


def add_commands(subparsers: Any) -> None:
    r = subparsers.add_parser(
        "rebuild", help="build a fresh virtual environment from a capsule's lock alone",
        description="Build a virtual environment from the crate's pylock.toml (or requirements.txt), the Python of "
                    "binder/runtime.txt and the verifier wheel the crate carries, with uv if available, else pip. "
                    "Without --into, environments are cached by their digest (see nbcapsule env list).")
    r.add_argument("crate", metavar="CRATE_OR_ID", help="crate folder, .zip/.eln, or a registered capsule id")
    r.add_argument("--into", metavar="DIR", type=Path, help="build in DIR (new or empty) instead of the cache")
    r.add_argument("--db", metavar="URL", help="registry to fetch a capsule id from (default: $SCIDEX_NBCAPSULE_DB)")
    r.add_argument("--timeout", type=int, default=1800, metavar="N", help="seconds allowed for the build")
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=rebuild_command)

    env = subparsers.add_parser("env", help="list or prune the cached rebuilt environments")
    sub = env.add_subparsers(dest="env_command", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="cached environments, most recently used first")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=env_list_command)
    prune = sub.add_parser("prune", help="remove cached environments (all, or those unused for DAYS)")
    prune.add_argument("--older-than", type=float, metavar="DAYS", help="only those not used for DAYS days")
    prune.set_defaults(handler=env_prune_command)


def rebuild_command(args: argparse.Namespace) -> int:
    from ..crate import open_crate
    from ..manifest import is_capsule_id
    from ..verify.environment import rebuild

    with ExitStack() as stack:
        target = args.crate
        if is_capsule_id(target) and not Path(target).exists():
            from ..registry import open_registry

            registry = stack.enter_context(open_registry(args.db))
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nbcapsule-rebuild-")))
            registry.export_files(target, work / target)
            target = str(work / target)
        opened = stack.enter_context(open_crate(target))
        env = rebuild(opened.root, into=args.into, timeout=args.timeout)
    data = {"prefix": str(env.prefix), "python": str(env.python), "digest": env.digest, "built": env.built,
            "warnings": env.warnings}
    if args.json:
        print_json(data)
    else:
        print(f"{'built' if env.built else 'reused'}: {env.prefix}")
        print(f"  python:  {env.python}")
        print(f"  digest:  {env.digest}")
        for warning in env.warnings:
            print(f"  warning: {warning}")
    return 0


def env_list_command(args: argparse.Namespace) -> int:
    import time

    from ..verify.environment import cached_environments, env_cache_dir

    found = cached_environments()
    if args.json:
        print_json(found)
        return 0
    if not found:
        print(f"no cached environments in {env_cache_dir()}")
    for item in found:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(item.get("last_used", 0))))
        print(f"{item['digest'][:16]}  python {item.get('python') or '?'}  {item['bytes'] / 2**20:8.1f} MiB  "
              f"last used {used}  {item['path']}")
    return 0


def env_prune_command(args: argparse.Namespace) -> int:
    from ..verify.environment import prune_environments

    removed = prune_environments(older_than_days=args.older_than)
    print(f"removed {len(removed)} environment(s)")
    return 0
