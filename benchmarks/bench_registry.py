"""Registry throughput and read latency on each backend (a benchmark, not a test).

    python benchmarks/bench_registry.py [--n 10000] [--backends sqlite,postgres] [--pg-admin URL]

Registers N sealed manifests (3 files each, 1,000 lineages, 50 authors), then times
``get_capsule`` (show), ``list_capsules(author=…)`` and ``find_by_digest`` on random
keys. PostgreSQL runs in a throw-away database that is dropped afterwards.
The target is a p95 under 10 ms for every read.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import secrets
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from scidex_nbcapsule.manifest import FileRecord, Manifest, Person, new_capsule_id, utc_now
from scidex_nbcapsule.registry import open_registry

NAMES = [f"{first} {last}" for first in ("Ada", "Grace", "Alan", "Rosalind", "Barbara", "Emmy", "Marie", "Carl",
                                         "Dorothy", "Linus") for last in ("Lovelace", "Hopper", "Turing", "Franklin",
                                                                           "McClintock")]


def _sha(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def build_manifests(n: int, seed: int = 1) -> list[Manifest]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        files = [FileRecord(path=f"data/part-{k}.csv", role="input" if k else "output", size=100 + k,
                            sha256=_sha(i, k), sha1_git=_sha(i, k)[:40]) for k in range(3)]
        out.append(Manifest(capsule_id=new_capsule_id(), title=f"Analysis {i % 1000}", license="CC-BY-4.0",
                            created_at=utc_now(), notebook=f"notebooks/analysis-{i % 1000}.ipynb",
                            notebook_sha256=_sha("nb", i), authors=[Person(rng.choice(NAMES))], files=files,
                            git_commit=_sha("commit", i)[:40]).seal())
    return out


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.95) - 1] * 1000


def timed(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


@contextmanager
def backend_url(name: str, admin_url: str) -> Iterator[str]:
    if name == "sqlite":
        with tempfile.TemporaryDirectory(prefix="nbcapsule-bench-") as folder:
            yield f"sqlite:///{Path(folder) / 'registry.sqlite3'}"
        return
    import psycopg

    db = f"nbcapsule_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
        try:
            yield admin_url.rsplit("/", 1)[0] + "/" + db
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def run(name: str, url: str, manifests: list[Manifest], rounds: int) -> dict[str, object]:
    rng = random.Random(2)
    with open_registry(url) as registry:
        start = time.perf_counter()
        register_samples = []
        for manifest in manifests:
            t = time.perf_counter()
            registry.register_capsule(manifest)
            register_samples.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
        ids = [m.capsule_id for m in manifests]
        digests = [f.sha256 for m in manifests for f in m.files]
        show = timed(lambda: registry.get_capsule(rng.choice(ids)), rounds)
        listing = timed(lambda: registry.list_capsules(author=rng.choice(NAMES).split()[1].lower(), limit=50), rounds)
        find = timed(lambda: registry.find_by_digest(rng.choice(digests)), rounds)
    return {"backend": name, "n": len(manifests), "per_second": len(manifests) / elapsed,
            "register": percentiles(register_samples), "show": show, "list": listing, "find": find}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="capsules to register (default 10,000)")
    parser.add_argument("--rounds", type=int, default=1000, help="timed calls per read operation")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL URL allowed to create and drop a scratch database")
    args = parser.parse_args(argv)
    manifests = build_manifests(args.n)
    print(f"{'backend':<9} {'n':>7} {'reg/s':>8} {'reg p50/p95':>14} {'show p50/p95':>14} "
          f"{'list p50/p95':>14} {'find p50/p95':>14}   (ms)")
    worst = 0.0
    for name in args.backends.split(","):
        with backend_url(name, args.pg_admin) as url:
            r = run(name, url, manifests, args.rounds)
        cells = " ".join(f"{r[k][0]:>6.2f}/{r[k][1]:<7.2f}" for k in ("register", "show", "list", "find"))
        print(f"{name:<9} {r['n']:>7} {r['per_second']:>8.0f} {cells}", flush=True)
        worst = max(worst, *(r[k][1] for k in ("show", "list", "find")))
    print(f"worst read p95: {worst:.2f} ms ({'meets' if worst < 10 else 'misses'} the 10 ms target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
