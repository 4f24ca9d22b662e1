"""``nbcapsule export`` and ``nbcapsule validate``."""

from __future__ import annotations

import argparse
import sys

from ..options import ExportOptions
from . import print_json


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a notebook analysis as a capsule (RO-Crate)",
                       description="Export NOTEBOOK, its inputs, outputs and environment as an RO-Crate capsule.")
    p.add_argument("notebook", metavar="NOTEBOOK")
    p.add_argument("--execute", action="store_true",
                   help="run the notebook first in a fresh kernel with capture on (the headless/CI path)")
    p.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell with --execute")
    p.add_argument("--validate", action="store_true", help="check the crate with the RO-Crate validator")
    p.add_argument("--json", action="store_true", help="print one JSON object describing the capsule")
    ExportOptions.add_arguments(p)
    p.set_defaults(handler=export_command)

    v = sub.add_parser("validate", help="check a crate with the RO-Crate validator (offline)")
    v.add_argument("crate", metavar="CRATE")
    v.add_argument("--profile", default="process-run-crate-0.5")
    v.add_argument("--severity", default="REQUIRED", choices=["REQUIRED", "RECOMMENDED", "OPTIONAL"])
    v.add_argument("--json", action="store_true")
    v.set_defaults(handler=validate_command)


def export_command(args: argparse.Namespace) -> int:
    from .. import api

    options = ExportOptions.from_namespace(args).absolute()
    if args.validate:
        from ..validation import require_validator

        require_validator()  # before the export, which would otherwise leave a crate behind and then fail
    if args.execute:
        capsule = api.export_executed(args.notebook, options, timeout=args.timeout, progress=not args.json)
    else:
        capsule = api.export(args.notebook, options, progress=not args.json)
    data = capsule.to_dict()
    if args.validate:
        from ..validation import validate_crate

        report = validate_crate(data["crate"])
        data["validation"] = {"passed": report.passed, "profile": report.profile, "severity": report.severity,
                              "issues": report.issues}
    if args.json:
        print_json(data)
    else:
        print(f"capsule {data['capsule_id']}")
        print(f"  crate:      {data['crate']}")
        print(f"  checksum:   {data['checksum']}")
        print(f"  files:      {len(data['files'])}")
        for problem in data.get("problems", []):
            print(f"  problem:    {problem['kind']}: {problem['message']}")
        for item in data.get("withheld", []):
            print(f"  withheld:   {item.get('kind')} {item.get('what')} ({item.get('reason')})")
        for notice in data.get("notices", []):
            print(f"  note:       {notice}")
        if "validation" in data:
            v = data["validation"]
            state = "valid" if v["passed"] else f"INVALID ({len(v['issues'])} issues)"
            print(f"  validation: {state} against {v['profile']} at {v['severity']} severity (roc-validator)")
            for issue in v["issues"]:
                print(f"    - {issue['check']}: {issue['message']}", file=sys.stderr)
    return 0 if data.get("validation", {}).get("passed", True) else 1


def validate_command(args: argparse.Namespace) -> int:
    from ..validation import validate_crate

    report = validate_crate(args.crate, profile=args.profile, severity=args.severity)
    if args.json:
        print_json({"passed": report.passed, "profile": report.profile, "severity": report.severity,
                    "issues": report.issues})
    else:
        print(report.summary())
        for issue in report.issues:
            print(f"  - [{issue['severity']}] {issue['check']}: {issue['message']} ({issue['focus']})")
    return 0 if report.passed else 1
