"""The main job, end to end: run the demo notebook in a real kernel (it exports itself with
``%capsule export``), check the crate with the RO-Crate validator, register it in a SQLite registry inside the clone
(``notebooks/registry.sqlite3``, git-ignored; ``--db URL`` or ``make demo DB=URL`` for another one,
e.g. ``postgresql://…``), and re-verify it in a fresh kernel, recording the verdict in the same registry.

The demo never writes to your own registry (``$SCIDEX_NBCAPSULE_DB`` or the one in your data folder)
unless you name it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scidex_nbcapsule.errors import CapsuleError
from scidex_nbcapsule.execute import run_notebook
from scidex_nbcapsule.registry import open_registry, redact_url
from scidex_nbcapsule.validation import validate_crate
from scidex_nbcapsule.verify import verify

HERE = Path(__file__).resolve().parent
#: The demo's own registry, inside the clone (``make clean`` removes it).
DEMO_DB = f"sqlite://{HERE / 'registry.sqlite3'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", metavar="URL", default=None,
                        help=f"registry URL (sqlite:///path or postgresql://…); default {DEMO_DB}")
    db = parser.parse_args(argv).db or DEMO_DB
    print("1/4 running notebooks/demo.ipynb in a fresh kernel (it exports itself)...", flush=True)
    result = run_notebook(HERE / "demo.ipynb")
    if result.error or not result.capsule:
        print(f"the demo notebook failed:\n{result.error}", file=sys.stderr)
        return 1
    capsule = result.capsule
    crate = capsule["crate"]
    print(f"    capsule id: {capsule['capsule_id']}")
    print(f"    crate:      {crate}")
    print(f"    checksum:   {capsule['checksum']}")
    for item in capsule["files"]:
        if item["role"] in ("input", "output"):
            print(f"    {item['role']:<7} {item['path']}  sha256 {item['sha256']}")

    print("2/4 validating with roc-validator (RO-Crate 1.1 + Process Run Crate 0.5, offline)...", flush=True)
    report = validate_crate(crate)
    print(f"    validation: {report.summary()}")

    print("3/4 registering in the capsule registry...", flush=True)
    with open_registry(db) as registry:
        registered = registry.register_capsule(crate)
    print(f"    {'registered' if registered.created else 'already registered'}: {registered.capsule_id} "
          f"(version {registered.version}) in {redact_url(db)}")

    print("4/4 re-verifying in a fresh kernel (recorded in the registry)...", flush=True)
    verdict = verify(registered.capsule_id, db=db)
    print(f"    verdict: {verdict.verdict}")
    for warning in getattr(verdict, "warnings", []) or []:
        print(f"    warning: {warning}")
    ok = report.passed and verdict.verdict in ("verified", "verified-within-tolerance")
    print("demo finished: " + ("the capsule is valid, registered and verified" if ok else "SOMETHING FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CapsuleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
