"""``nbcapsule``: the command line shell over :mod:`scidex_nbcapsule.api`.

Each command group lives in its own module exposing ``add_commands(subparsers)``;
every handler returns an exit status. ``CapsuleError``s become one line on
stderr and their ``exit_code``; nothing else is caught, so bugs stay visible.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Sequence

from ..errors import CapsuleError

#: Modules contributing sub-commands, in the order ``--help`` lists them.
COMMAND_MODULES = ("export", "capture", "registry", "archive", "verify", "environment")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="nbcapsule",
        description="Capture, register, archive and re-verify notebook analyses as RO-Crate capsules.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        module.add_commands(sub)
    return parser


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except CapsuleError as exc:
        print(f"nbcapsule: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("nbcapsule: interrupted; nothing partial was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
