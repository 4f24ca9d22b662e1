"""``nbcapsule verify`` and ``nbcapsule binder``.

Exit codes of ``nbcapsule verify``: 0 verified or verified-within-tolerance,
10 mismatch, 11 execution-failed, 12 fixity-failed, 13 incomplete (the re-run read
a file the crate does not hold), 2 usage error or unreadable / unsafe crate,
3 registry failure, 4 unknown capsule id.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import print_json


def add_commands(subparsers: Any) -> None:
    v = subparsers.add_parser(
        "verify", help="check a capsule's fixity, re-run its notebook in a fresh kernel and compare",
        description="Re-verify a capsule (crate folder, .zip/.eln, or registered capsule id). Exit codes: 0 verified "
                    "(or within tolerance: also when the re-run wrote files the capsule has no recorded output "
                    "for, which were not compared), 10 mismatch, 11 execution-failed, 12 fixity-failed, "
                    "13 incomplete (the re-run read a file the crate does not hold: from outside the crate, or "
                    "one missing from it), 2 usage/crate error, 3 registry error, 4 unknown capsule id. "
                    "Precedence: fixity-failed, incomplete, execution-failed, mismatch, within tolerance. "
                    "The re-run is traced with an LD_PRELOAD library built with the C compiler; without it "
                    "(or with NBCAPSULE_INTERPOSER=0) the report says which checks were not made.")
    v.add_argument("crate", metavar="CRATE_OR_ID", help="crate folder, .zip/.eln, or a registered capsule id")
    v.add_argument("--db", metavar="URL", help="registry URL (default: $SCIDEX_NBCAPSULE_DB); the verification is "
                   "recorded there when the capsule is registered")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.add_argument("--html", metavar="FILE", type=Path, help="also write the report as HTML to FILE")
    v.add_argument("--fresh-env", action="store_true",
                   help="run the kernel in a virtual environment rebuilt from the crate's lock (see nbcapsule rebuild; "
                   "cached by environment digest)")
    v.add_argument("--timeout", type=int, default=600, metavar="N", help="seconds allowed per cell (default 600)")
    v.add_argument("--total-timeout", type=int, default=3600, metavar="N",
                   help="seconds allowed for the whole run (default 3600)")
    v.add_argument("--no-record", dest="record", action="store_false", help="do not record the result in the registry")
    v.set_defaults(handler=verify_command)

    b = subparsers.add_parser(
        "binder", help="print mybinder.org links that open a capsule's reverify notebook",
        description="Binder links for a crate pushed to a public git repository. Inside a git checkout, the "
                    "repository defaults to the origin remote and the ref to HEAD.")
    b.add_argument("crate", metavar="CRATE_OR_ID", help="crate folder (inside a git checkout) or capsule id")
    b.add_argument("--repo", metavar="URL", help="public http(s) URL of the repository holding the crate")
    b.add_argument("--ref", metavar="REF", help="branch, tag or commit (default: HEAD of the checkout)")
    b.add_argument("--path", metavar="PATH", help="file to open, relative to the repository root "
                   "(default: the crate's reverify.ipynb, else its notebook)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(handler=binder_command)


def verify_command(args: argparse.Namespace) -> int:
    from ..errors import VerificationError
    from ..verify import verify

    if args.timeout <= 0 or args.total_timeout <= 0:
        raise VerificationError("--timeout and --total-timeout must be positive numbers of seconds")
    report = verify(args.crate, db=args.db, cell_timeout=args.timeout, total_timeout=args.total_timeout,
                    fresh_env=args.fresh_env, record=args.record)
    if args.html:
        args.html.write_text("<!doctype html><meta charset='utf-8'><title>nbcapsule verification</title>"
                             + report.to_html(), encoding="utf-8")
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.summary())
    return report.exit_code


def binder_command(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..manifest import is_capsule_id
    from ..verify.binder import REVERIFY_NOTEBOOK, binder_urls, git_defaults

    crate = Path(args.crate)
    defaults: dict[str, str | None] = {"repo": None, "ref": None, "path": None}
    inner = None
    if crate.is_dir():
        defaults = git_defaults(crate)
        inner = _default_file(crate, REVERIFY_NOTEBOOK)
    elif not is_capsule_id(args.crate):
        raise ConfigError(f"{args.crate} is not a crate folder", hint="Binder needs the crate pushed as a folder "
                          "of a public git repository; give that folder")
    repo = args.repo or defaults["repo"]
    ref = args.ref or defaults["ref"] or "HEAD"
    if not repo:
        raise ConfigError("no repository URL: the crate is not in a git checkout with a public origin",
                          hint="pass --repo https://github.com/OWNER/REPO")
    path = args.path
    if path is None:
        prefix = defaults["path"]
        path = "/".join(p for p in (prefix if prefix not in (None, ".") else None, inner) if p) or REVERIFY_NOTEBOOK
    urls = binder_urls(repo, ref, path)
    if args.json:
        print_json(urls)
    else:
        for kind in ("gh", "git"):
            if kind in urls:
                print(f"{kind + ':':5} {urls[kind]}")
    return 0


def _default_file(crate: Path, reverify: str) -> str:
    """The reverify notebook when the crate has one, else the analysis notebook named in capsule.json."""
    import json

    if (crate / reverify).is_file():
        return reverify
    try:
        return json.loads((crate / "capsule.json").read_text("utf-8"))["notebook"]
    except (OSError, ValueError, KeyError, TypeError):
        return reverify
