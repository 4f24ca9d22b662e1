"""Injected faults: exports killed with SIGKILL at random moments, PostgreSQL backends terminated in the middle
of a registration, a locked SQLite file, a full disk, a kernel killed from outside while it is re-verified.
Nothing half-written may become visible and a retry must work.

A kernel that exits by itself during verification is tests/test_verify.py::test_a_dying_kernel_is_execution_failed_not_a_hang.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import make_notebook
from scidex_nbcapsule import api
from scidex_nbcapsule.crate import PARTIAL_PREFIX, _pid_alive, open_crate
from scidex_nbcapsule.errors import RegistryError
from scidex_nbcapsule.registry import open_registry
from scidex_nbcapsule.verify.fixity import check_fixity

GROUP = "faults"
KILLS = 20

#: One process imports everything once, then forks a fresh export process per request (no 20 cold imports
#: on a shared machine); each forked child is a real process running api.export, killed with SIGKILL.
ZYGOTE = """
import os, sys
import jsonschema, nbformat, rocrate.rocrate, swh.model.hashutil
from scidex_nbcapsule import api
nb, data, dest = sys.argv[1:4]
print("ready", flush=True)
for line in sys.stdin:
    fmt = line.strip()
    pid = os.fork()
    if pid == 0:
        try:
            api.export(nb, inputs=[data], dest=dest, fmt=fmt, license="MIT", progress=False)
        finally:
            os._exit(0)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print("exit", os.waitstatus_to_exitcode(status), flush=True)
"""


class Zygote:
    def __init__(self, nb: Path, data: Path, dest: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE, str(nb), str(data), str(dest)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def start(self, fmt: str) -> int:
        self.proc.stdin.write(fmt + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def wait(self) -> int:
        line = self.proc.stdout.readline().split()
        assert line[0] == "exit", line
        return int(line[1])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def _intact(path: Path) -> None:
    with open_crate(path) as opened:
        assert check_fixity(opened) == [], path


def test_sigkilled_exports_leave_no_visible_partial_crate(project, tmp_path, counts):
    data = project / "data"
    rng = random.Random(int(os.environ.get("HARDENING_SEED", "8")))
    for i in range(200):  # ~20 MB over 200 files
        (data / f"part-{i:03d}.bin").write_bytes(rng.randbytes(100_000))
    nb = make_notebook(project / "k.ipynb", "print(1)")
    dest = tmp_path / "dest"
    zygote = Zygote(nb, data, dest)
    try:
        durations = {}
        for fmt in ("folder", "zip"):  # one whole export of each kind: how long the kills may wait
            started = time.monotonic()
            zygote.start(fmt)
            assert zygote.wait() == 0
            durations[fmt] = time.monotonic() - started
        print(f"export durations: {durations}")
        completed = {p.name for p in dest.iterdir()}
        assert len(completed) == 2 and not any(n.startswith(PARTIAL_PREFIX) for n in completed)
        killed: set[int] = set()
        for try_no in range(KILLS):
            fmt = "zip" if try_no % 2 else "folder"
            pid = zygote.start(fmt)
            time.sleep(rng.uniform(0, durations[fmt] * 1.1))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it finished (and was reaped) before the kill
                pass
            status = zygote.wait()
            killed.add(pid)
            counts(GROUP, f"exports killed with SIGKILL ({fmt})")
            names = {p.name for p in dest.iterdir()}
            hidden = {n for n in names if n.startswith(PARTIAL_PREFIX)}
            for name in hidden:  # only what dead exports left, under their hidden names
                owner = int(name[len(PARTIAL_PREFIX):].split("-", 1)[0])
                assert owner in killed and not _pid_alive(owner), name
            finished = names - hidden - completed
            assert len(finished) <= 1 and status in (0, -signal.SIGKILL), status
            for name in finished:  # the kill came after the rename: a whole capsule
                _intact(dest / name)
            completed |= finished
            counts(GROUP, "kills that left a hidden partial" if any(f"{PARTIAL_PREFIX}{pid}-" in n for n in hidden)
                   else "kills after the capsule was complete" if finished else "kills before anything was written")
    finally:
        zygote.close()
    final = api.export(nb, inputs=[data], dest=dest, license="MIT", progress=False)
    _intact(final.path)
    names = {p.name for p in dest.iterdir()}
    assert names == completed | {final.path.name}, "a partial crate survived the next export"
    for name in completed:
        _intact(dest / name)
    counts(GROUP, "capsules complete after the kills (all intact)", len(names))


# -- PostgreSQL: the backend of a registration in flight is terminated ------------------------------------
def _half_capsules(cursor) -> int:
    row = cursor.execute("SELECT count(*) FROM capsules c WHERE NOT EXISTS "
                         "(SELECT 1 FROM capsule_files f WHERE f.capsule_id = c.capsule_id)").fetchone()
    return row[0]


@pytest.mark.parametrize("blocked_table", ["capsule_files", "crate_blobs"])
def test_postgres_backend_terminated_mid_registration(pg_url, small_crate, blocked_table, counts):
    import psycopg

    registry = open_registry(pg_url)
    before = registry.counts()
    blocker = psycopg.connect(pg_url)
    watcher = psycopg.connect(pg_url, autocommit=True)
    outcome: dict = {}

    def register() -> None:
        try:
            outcome["result"] = registry.register_capsule(small_crate)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome["error"] = exc

    try:
        # the capsules row is inserted first; holding the later table makes the registration wait mid-transaction
        blocker.execute(f"LOCK TABLE {blocked_table} IN ACCESS EXCLUSIVE MODE")
        worker = threading.Thread(target=register, daemon=True)
        worker.start()
        victim = None
        deadline = time.monotonic() + 30
        while victim is None and time.monotonic() < deadline:
            row = watcher.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND "
                                  "wait_event_type = 'Lock' AND query ILIKE %s",
                                  (f"INSERT INTO {blocked_table}%",)).fetchone()
            victim = row[0] if row else None
            time.sleep(0.05)
        assert victim is not None, "the registration never reached the locked table"
        assert watcher.execute("SELECT pg_terminate_backend(%s)", (victim,)).fetchone()[0]
        counts(GROUP, "PostgreSQL backends terminated mid-registration")
        worker.join(30)
        assert not worker.is_alive(), "the registration hung after its connection was cut"
    finally:
        blocker.rollback()
        blocker.close()
    error = outcome.get("error")
    assert isinstance(error, RegistryError) and str(error).strip(), repr(error)
    counts(GROUP, f"cut connections reported as {type(error).__name__}")
    with psycopg.connect(pg_url) as conn:
        assert _half_capsules(conn) == 0
    assert registry.counts() == before, "a half capsule was committed"
    again = registry.register_capsule(small_crate)  # the same registry object: its pool drops the dead link
    assert again.created
    after = registry.counts()
    assert after["capsules"] == before["capsules"] + 1
    manifest = registry.get_capsule_manifest(again.capsule_id)
    assert len(registry.get_capsule(again.capsule_id)["files"]) == len(manifest.files)
    registry.close()
    watcher.close()
    counts(GROUP, "retries after a cut connection that succeeded")


# -- SQLite: the file is locked by another connection -----------------------------------------------------
def test_locked_sqlite_file_gives_a_clear_error_not_a_hang(tmp_path, small_crate, monkeypatch, counts):
    from scidex_nbcapsule.registry import sqlite as sqlite_backend

    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT_MS", 300)
    path = tmp_path / "locked.sqlite3"
    url = f"sqlite:///{path}"
    registry = open_registry(url)
    before = registry.counts()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    try:
        with pytest.raises(RegistryError) as info:
            registry.register_capsule(small_crate)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert time.monotonic() - started < 10 and "locked" in str(info.value)
    counts(GROUP, "SQLite registrations against a locked file: clear RegistryError")
    with sqlite3.connect(path) as conn:
        assert _half_capsules(conn) == 0
    assert registry.counts() == before
    assert registry.register_capsule(small_crate).created
    assert registry.counts()["capsules"] == before["capsules"] + 1
    registry.close()
    counts(GROUP, "retries after a locked file that succeeded")


def test_sqlite_lock_released_while_waiting_lets_the_registration_through(tmp_path, small_crate, counts):
    path = tmp_path / "wait.sqlite3"
    registry = open_registry(f"sqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    releaser = threading.Timer(1.0, lambda: (holder.execute("ROLLBACK"), holder.close()))
    releaser.start()
    started = time.monotonic()
    registered = registry.register_capsule(small_crate)  # default busy timeout: waits for the lock, then goes
    waited = time.monotonic() - started
    releaser.join()
    assert registered.created and 0.8 < waited < 20
    manifest = registry.get_capsule_manifest(registered.capsule_id)
    assert len(registry.get_capsule(registered.capsule_id)["files"]) == len(manifest.files)
    registry.close()
    counts(GROUP, "SQLite registrations that waited out a lock")


FULL_DISK = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
import signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from scidex_nbcapsule import api
from scidex_nbcapsule.errors import CapsuleError
try:
    api.export(sys.argv[1], inputs=[sys.argv[2]], dest=sys.argv[3], fmt=sys.argv[4], license="MIT", progress=False)
except CapsuleError as exc:
    print("CAPSULE-ERROR", exc)
    sys.exit(3)
"""


@pytest.mark.parametrize("size, fmt", [(1_000_000, "folder"), (6 << 20, "folder"), (1_000_000, "zip")],
                         ids=["python-copy", "kernel-copy", "zip"])
def test_full_disk_gives_a_clear_error_and_no_partial_crate(project, tmp_path, counts, size, fmt):
    # RLIMIT_FSIZE in a child: every write past 200 kB fails with EFBIG, as on a full disk
    nb = make_notebook(project / "a.ipynb", "print(1)")
    (project / "data" / "big.bin").write_bytes(os.urandom(size))
    dest = tmp_path / "dest"
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(nb), str(project / "data"), str(dest), fmt],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert "CAPSULE-ERROR" in result.stdout and "free space" in result.stdout
    assert list(dest.iterdir()) == []
    counts(GROUP, "exports into a full disk (RLIMIT_FSIZE): clear error, no partial crate")
    retry = api.export(nb, inputs=[project / "data"], dest=dest, fmt=fmt, license="MIT", progress=False)
    _intact(retry.path)
    counts(GROUP, "retries after a full disk that succeeded")


def test_kernel_killed_from_outside_during_verification_is_execution_failed(project, tmp_path, counts):
    from scidex_nbcapsule.verify import verify

    pidfile = tmp_path / "kernel.pid"
    nb = make_notebook(project / "slow.ipynb", "x = 1",
                       f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)")
    capsule = api.export(nb, dest=tmp_path / "caps", license="MIT", progress=False)

    def kill_the_kernel() -> None:  # as the OOM killer would: SIGKILL, no warning
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if pidfile.exists() and pidfile.read_text().strip():
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_kernel)
    killer.start()
    started = time.monotonic()
    try:
        report = verify(capsule.path, record=False, cell_timeout=300)
    finally:
        killer.join()
    assert report.verdict == "execution-failed", report.summary()
    assert report.execution.cell_index == 2  # the title cell is 0
    assert time.monotonic() - started < 90  # a verdict, not a wait for the cell timeout
    counts(GROUP, "kernels SIGKILLed from outside mid-verification: execution-failed, no hang")
