"""Export against the hardware limit and against the peers, measured in one run.

Baselines run on the same bytes in the same process run: ``openssl dgst -sha256``
then ``cp -r`` (the hardware limit), ``cp -r`` alone (the physical floor), the
``rocrate`` library alone plus ``sha256sum`` (the peer), and ``bagit.make_bag``.
Each step starts with the page cache dropped when the kernel allows it, and
otherwise with the files read once so every contender meets a warm cache.
The hardware-limit contenders take turns for three rounds and medians are
compared, so one busy moment on a shared machine moves no ratio.

:func:`run_cli` measures ``nbcapsule export`` as users run it: a fresh CLI
process, Python start-up and imports included, with the page cache warm and
cold, against ``openssl dgst -sha256`` + ``cp -r`` + ``sync`` and ``cp -r`` +
``sync`` over the same bytes (a crate is durable when the CLI returns).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import nbformat

CHILD = """
import json, resource, sys, time
import jsonschema, nbformat, rocrate.rocrate  # the import cost is start-up, reported apart
from scidex_nbcapsule import api, environment
environment.snapshot()  # as in a kernel that has exported before: package facts are cached
start = time.perf_counter()
capsule = api.export(sys.argv[1], inputs=[sys.argv[2]], dest=sys.argv[3], license="MIT", progress=False,
                     fmt=sys.argv[4])
seconds = time.perf_counter() - start
bag_seconds = None
if sys.argv[5] == "bagit":  # what `nbcapsule export --bagit` does after the export
    from scidex_nbcapsule.archive import run_archival
    start = time.perf_counter()
    run_archival("bagit", capsule.path, manifest=capsule.manifest, dest=sys.argv[3] + "/bag")
    bag_seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "bag_seconds": bag_seconds, "crate": str(capsule.path),
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


BAG_CHILD = """
import json, sys, time
from scidex_nbcapsule.archive import run_archival
start = time.perf_counter()
run_archival("bagit", sys.argv[1], dest=sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def ours_bag(crate: Path, dest: Path) -> dict:
    """``build_bag`` (through the archiver, as ``nbcapsule archive bagit`` runs it) of an existing crate folder."""
    out = subprocess.run([sys.executable, "-c", BAG_CHILD, str(crate), str(dest)], capture_output=True, text=True,
                         check=True)
    shutil.rmtree(dest, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


#: "dropped" (page cache dropped before each step) or "warm" (every step starts after one read of its input).
CACHE_MODE = "not measured"


def drop_caches() -> str:
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
        return "dropped"
    except OSError:
        return "warm"


def warm(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                while handle.read(1 << 20):
                    pass


def timed(step: Callable[[], object], folder: Path, cache: str) -> float:
    if cache == "dropped":
        drop_caches()
    else:
        warm(folder)
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def make_project(root: Path, *, files: int, size: int) -> tuple[Path, Path]:
    data = root / "data"
    data.mkdir(parents=True)
    block = os.urandom(1 << 20)
    if files == 1:
        with open(data / "big.bin", "wb") as handle:
            for _ in range(size // len(block)):
                handle.write(block)
    else:
        for i in range(files):
            sub = data / f"d{i // 1000:03d}"
            sub.mkdir(exist_ok=True)
            (sub / f"f{i:06d}.bin").write_bytes(os.urandom(size))
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("print('benchmark')"))
    nbformat.write(nb, str(root / "bench.ipynb"))
    return root / "bench.ipynb", data


def ours(nb: Path, data: Path, dest: Path, *, fmt: str = "folder", bagit: bool = False, keep: bool = False) -> dict:
    """One export in a child process: its time (imports excluded), peak RSS and, with ``bagit``, the bag's time."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(nb), str(data), str(dest), fmt,
                          "bagit" if bagit else "-"], capture_output=True, text=True, check=True)
    if not keep:
        shutil.rmtree(dest, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def openssl_then_cp(data: Path, dest: Path) -> None:
    files = [str(p) for p in data.rglob("*") if p.is_file()]
    for i in range(0, len(files), 2000):
        subprocess.run(["openssl", "dgst", "-sha256", *files[i:i + 2000]], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cp", "-r", str(data), str(dest)], check=True)
    subprocess.run(["sync"], check=True)
    shutil.rmtree(dest)


def cp_only(data: Path, dest: Path) -> None:
    subprocess.run(["cp", "-r", str(data), str(dest)], check=True)
    subprocess.run(["sync"], check=True)
    shutil.rmtree(dest)


def rocrate_peer(data: Path, dest: Path) -> None:
    from rocrate.rocrate import ROCrate

    crate = ROCrate()
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        crate.add_file(path, dest_path=str(path.relative_to(data)))
    crate.write(dest)
    files = [str(p) for p in dest.rglob("*") if p.is_file()]
    for i in range(0, len(files), 2000):
        subprocess.run(["sha256sum", *files[i:i + 2000]], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["sync"], check=True)
    shutil.rmtree(dest)


def bagit_peer(data: Path, dest: Path) -> None:
    """The peer of ``build_bag``: copy the folder, then ``bagit.make_bag`` with the same two algorithms."""
    import bagit

    shutil.copytree(data, dest)
    bagit.make_bag(str(dest), checksums=["sha256", "sha512"])
    subprocess.run(["sync"], check=True)
    shutil.rmtree(dest)


def rocrate_bagit_peer(data: Path, dest: Path, *, keep_crate: bool = True) -> None:
    """The peer of ``export --bagit``: an RO-Crate written by ``rocrate``, then a bag made by ``bagit.make_bag``.

    ``keep_crate``: bag a copy, so that a crate and a bag remain, as ``export --bagit`` leaves; otherwise the
    crate is bagged in place and only the bag remains.
    """
    import bagit
    from rocrate.rocrate import ROCrate

    crate = ROCrate()
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        crate.add_file(path, dest_path=str(path.relative_to(data)))
    crate.write(dest / "crate")
    bag = dest / "crate"
    if keep_crate:
        bag = dest / "bag"
        shutil.copytree(dest / "crate", bag)
    bagit.make_bag(str(bag), checksums=["sha256", "sha512"])
    subprocess.run(["sync"], check=True)
    shutil.rmtree(dest)


def row(name: str, ours_s: float, base_s: float, target: float | None, baseline: str) -> dict:
    ratio = ours_s / base_s
    return {"name": name, "ours_s": round(ours_s, 3), "baseline": baseline, "baseline_s": round(base_s, 3),
            "ratio": round(ratio, 3), "target": target, "pass": None if target is None else ratio <= target}


def _fmt(times: list[float]) -> str:
    return " ".join(f"{t:.2f}" for t in times) + " s"


def run(quick: bool, workdir: Path, repeat: int | None = None) -> list[dict]:
    repeat = repeat or (1 if quick else 3)
    big = (256 << 20) if quick else (2 << 30)
    many = 2000 if quick else 20_000
    global CACHE_MODE
    rows: list[dict] = []
    cache = CACHE_MODE = drop_caches()
    print(f"page cache: {cache} before each step", flush=True)
    for label, files, size in (("one file", 1, big), ("many files", many, 50 << 10)):
        root = workdir / label.replace(" ", "-")
        nb, data = make_project(root, files=files, size=size)
        what = f"{big >> 20} MiB" if files == 1 else f"{files} x 50 KiB"
        # the three contenders take turns, `repeat` rounds; medians, so one noisy moment moves no ratio
        walls, ours_s, bases, cps, rss = [], [], [], [], []
        for _ in range(repeat):
            result: dict = {}
            walls.append(timed(lambda: result.update(ours(nb, data, root / "out")), data, cache))
            ours_s.append(result["seconds"])
            rss.append(result["rss_mib"])
            bases.append(timed(lambda: openssl_then_cp(data, root / "base"), data, cache))
            cps.append(timed(lambda: cp_only(data, root / "cp"), data, cache))
        t_wall, t_ours, t_base, t_cp = (statistics.median(x) for x in (walls, ours_s, bases, cps))
        result["rss_mib"] = max(rss)
        print(f"{what}: ours {_fmt(ours_s)}; openssl+cp {_fmt(bases)}; cp {_fmt(cps)}", flush=True)
        target = 1.0 if files == 1 else 1.3
        rows.append(row(f"export {what} vs openssl+cp", t_ours, t_base, target, "openssl dgst -sha256 + cp -r"))
        rows.append(row(f"export {what} vs cp -r", t_ours, t_cp, None, "cp -r (physical floor)"))
        rows.append(row(f"export {what} incl. Python start-up vs openssl+cp", t_wall, t_base, None,
                        "openssl dgst -sha256 + cp -r"))
        rows.append({"name": f"peak RSS exporting {what}", "ours_s": None, "baseline": "limit 200 MiB",
                     "baseline_s": None, "ratio": None, "target": 200, "rss_mib": round(result["rss_mib"], 1),
                     "pass": result["rss_mib"] < 200})
        if files > 1:
            t_peer = timed(lambda: rocrate_peer(data, root / "peer"), data, cache)
            rows.append(row(f"export {what} vs rocrate+sha256sum", t_ours, t_peer, 1.0, "rocrate add_file+write, sha256sum"))
            bag: dict = {}
            timed(lambda: bag.update(ours(nb, data, root / "bagout", bagit=True)), data, cache)
            t_e2e_peer = timed(lambda: rocrate_bagit_peer(data, root / "e2epeer"), data, cache)
            t_in_place = timed(lambda: rocrate_bagit_peer(data, root / "e2epeer", keep_crate=False), data, cache)
            t_export_bag = bag["seconds"] + bag["bag_seconds"]
            rows.append(row(f"export --bagit {what} vs rocrate+copy+make_bag", t_export_bag, t_e2e_peer, 1.0,
                            "rocrate write, copy, bagit.make_bag: a crate and a bag, as export --bagit leaves"))
            rows.append(row(f"export --bagit {what} vs rocrate+make_bag in place", t_export_bag, t_in_place, None,
                            "rocrate write, bagit.make_bag in place: only a bag remains"))
            crate = Path(ours(nb, data, root / "crate", keep=True)["crate"])
            bagged: dict = {}
            timed(lambda: bagged.update(ours_bag(crate, root / "bag")), crate, cache)
            t_bag = bagged["seconds"]
            t_bag_peer = timed(lambda: bagit_peer(crate, root / "bagpeer"), crate, cache)
            rows.append(row(f"build_bag of the {what} crate vs copy+bagit.make_bag", t_bag, t_bag_peer, 1.0,
                            "copy + bagit.make_bag(sha256, sha512), same crate folder"))
        shutil.rmtree(root)
    sizes = (1000, 5000) if quick else (1000, 10_000, 50_000)
    for count in sizes:
        root = workdir / f"scale-{count}"
        nb, data = make_project(root, files=count, size=4 << 10)
        result = {}
        timed(lambda: result.update(ours(nb, data, root / "out")), data, cache)
        rows.append({"name": f"scaling {count} files", "ours_s": round(result["seconds"], 3), "baseline": "per file",
                     "baseline_s": None, "ratio": None, "target": None,
                     "per_file_ms": round(1000 * result["seconds"] / count, 3), "pass": None})
        shutil.rmtree(root)
    per_file = [r["per_file_ms"] for r in rows if "per_file_ms" in r]
    rows.append({"name": "scaling: largest/smallest time per file", "ours_s": None, "baseline": "linear = 1.0",
                 "baseline_s": None, "ratio": round(per_file[-1] / per_file[0], 3), "target": 2.0,
                 "pass": per_file[-1] / per_file[0] <= 2.0})
    return rows


def _cli() -> str:
    """The ``nbcapsule`` script beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "nbcapsule"
    return str(beside) if beside.exists() else (shutil.which("nbcapsule") or "nbcapsule")


def cli_export(nb: Path, data: Path, dest: Path) -> float:
    """Peak RSS in MiB of one ``nbcapsule export`` process (the time is taken around this call)."""
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: progress lines cannot fill it and block the child
        proc = subprocess.Popen([_cli(), "export", str(nb), "--input", str(data), "--dest", str(dest),
                                 "--license", "MIT"], stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the largest of all children so far
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            errors.seek(0)
            raise RuntimeError(f"nbcapsule export failed ({proc.returncode}): {errors.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024


def copy_synced(data: Path, dest: Path, *, hash_first: bool) -> None:
    """``openssl dgst -sha256`` (with ``hash_first``), ``cp -r`` and ``sync``: the same bytes hashed, copied, on disk."""
    if hash_first:
        files = [str(p) for p in data.rglob("*") if p.is_file()]
        for i in range(0, len(files), 2000):
            subprocess.run(["openssl", "dgst", "-sha256", *files[i:i + 2000]], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cp", "-r", str(data), str(dest)], check=True)
    subprocess.run(["sync"], check=True)


def _prepare(cache: str, data: Path) -> None:
    """Start a step with the input in the page cache (``warm``: read once) or not (``cold``: caches dropped);
    either way nothing left dirty by the step before."""
    if cache == "cold":
        drop_caches()
    else:
        subprocess.run(["sync"], check=True)
        warm(data)


def run_cli(quick: bool, workdir: Path, repeat: int | None = None) -> list[dict]:
    """``nbcapsule export`` in a fresh process vs openssl+cp+sync and cp+sync, page cache warm and cold."""
    repeat = repeat or (2 if quick else 5)
    big = (128 << 20) if quick else (1 << 30)
    many = 1000 if quick else 5000
    caches = ["warm", "cold"] if drop_caches() == "dropped" else ["warm"]
    if caches == ["warm"]:
        print("CLI export: the page cache cannot be dropped here (not root?): warm cache only", flush=True)
    rows: list[dict] = []
    for files, size in ((1, big), (many, 50 << 10)):
        root = workdir / f"cli-{files}"
        nb, data = make_project(root, files=files, size=size)
        what = f"{big >> 20} MiB" if files == 1 else f"{files} x 50 KiB"
        out = root / "out"
        rss: list[float] = []
        cli_export(nb, data, out)  # not measured: first touches of memory and the package's caches
        shutil.rmtree(out)
        for cache in caches:
            times: dict[str, list[float]] = {"cli": [], "openssl+cp+sync": [], "cp+sync": []}
            steps = {"cli": lambda: rss.append(cli_export(nb, data, out)),
                     "openssl+cp+sync": lambda: copy_synced(data, out, hash_first=True),
                     "cp+sync": lambda: copy_synced(data, out, hash_first=False)}
            for turn in range(repeat):
                names = list(steps)
                for name in names[turn % 3:] + names[:turn % 3]:  # who goes first changes each round
                    _prepare(cache, data)
                    start = time.perf_counter()
                    steps[name]()
                    times[name].append(time.perf_counter() - start)
                    shutil.rmtree(out)
            print(f"CLI export {what}, {cache} cache: " + "; ".join(f"{k} {_fmt(v)}" for k, v in times.items()),
                  flush=True)
            t_cli, t_base, t_cp = (statistics.median(times[k]) for k in ("cli", "openssl+cp+sync", "cp+sync"))
            rows.append(row(f"CLI export {what}, {cache} cache vs openssl+cp+sync", t_cli, t_base, 1.2,
                            "openssl dgst -sha256 + cp -r + sync"))
            rows.append(row(f"CLI export {what}, {cache} cache vs cp+sync", t_cli, t_cp, None, "cp -r + sync"))
        peak = max(rss)
        rows.append({"name": f"peak RSS of the CLI exporting {what}", "ours_s": None, "baseline": "limit 150 MiB",
                     "baseline_s": None, "ratio": None, "target": 150, "rss_mib": round(peak, 1),
                     "pass": peak < 150})
        shutil.rmtree(root)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (256 MiB, 2,000 files)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the data (same disk as /tmp)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=None, help="rounds of the hardware-limit comparison (3; 1 quick)")
    parser.add_argument("--cli-only", action="store_true", help="only the fresh-process CLI export (run_cli)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="nbcapsule-bench-", dir=args.workdir))
    try:
        rows = [] if args.cli_only else run(args.quick, workdir, args.repeat)
        rows += run_cli(args.quick, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for r in rows:
        print(json.dumps(r))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
