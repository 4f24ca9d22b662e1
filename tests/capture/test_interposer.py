"""The LD_PRELOAD interposer, tested with real processes: Python, SQLite, coreutils and the shell, all traced."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scidex_nbcapsule.capture import interposer
from scidex_nbcapsule.capture.interposer import TraceEvent, TraceSession
from scidex_nbcapsule.errors import CaptureError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the interposer is Linux-only")

TIMEOUT = 120


@pytest.fixture(scope="session")
def library(tmp_path_factory) -> Path:
    """The library, built once into a cache folder of this test session (nothing is written elsewhere)."""
    patch = pytest.MonkeyPatch()
    patch.setenv(interposer.CACHE_ENV, str(tmp_path_factory.mktemp("interposer-cache")))
    patch.delenv(interposer.SWITCH_ENV, raising=False)
    patch.setattr(interposer, "_BUILT", None)
    path = interposer.library_path()
    if path is None and not (shutil.which("cc") or shutil.which("gcc")):
        patch.undo()
        pytest.skip(interposer.unavailable_reason() or "no C compiler")
    assert path is not None, interposer.unavailable_reason()
    yield path
    patch.undo()


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    # the library reports what getcwd() says, which has no symlinks: compare against the same spelling
    return tmp_path.resolve()


@pytest.fixture
def session(library: Path, tmp: Path):
    trace = TraceSession.create(skip=[str(tmp / "skipme")])
    yield trace
    trace.close()


def traced_env(session: TraceSession) -> dict[str, str]:
    return {**os.environ, **session.env()}


def run(session: TraceSession, code: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """Runs ``code`` in a traced Python child; fails the test on a non-zero exit."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=kwargs.pop("env", traced_env(session)),
                          cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, **kwargs)
    assert done.returncode == 0, done.stderr
    return done


def under(events: list[TraceEvent], root: Path) -> list[tuple[str, str, str | None]]:
    """(op, path relative to root, target relative to root) for events in root, in order."""
    prefix = str(root) + os.sep

    def rel(p: str | None) -> str | None:
        return p[len(prefix):] if p is not None and p.startswith(prefix) else p

    # an update's target is the file's "MTIME:SIZE" at the open: checked in its own test
    return [(e.op, rel(e.path), None if e.op == "update" else rel(e.target)) for e in events
            if e.path.startswith(prefix) or (e.target or "").startswith(prefix)]


# ----------------------------------------------------------------- roles


def test_python_open_read_and_write_roles(session, tmp):
    (tmp / "in.txt").write_text("data\n")
    (tmp / "both.txt").write_text("x")
    run(session, """
        open('in.txt').read()
        open('out.txt', 'w').write('x')
        open('log.txt', 'a').write('y')
        open('both.txt', 'r+').read()
        open('in.txt', 'rb').read()
    """, tmp)
    assert under(session.read_new(), tmp) == [
        ("read", "in.txt", None), ("write", "out.txt", None), ("write", "log.txt", None), ("update", "both.txt", None)]


def test_os_replace_is_a_rename_and_is_never_deduplicated(session, tmp):
    run(session, """
        import os
        for text in ('one', 'two'):
            with open('result.tmp', 'w') as f:
                f.write(text)
            os.replace('result.tmp', 'result.csv')
    """, tmp)
    assert under(session.read_new(), tmp) == [
        ("write", "result.tmp", None), ("rename", "result.tmp", "result.csv"),
        ("write", "result.tmp", None), ("rename", "result.tmp", "result.csv")]


def test_sqlite_native_open_is_seen(session, tmp):
    run(session, """
        import sqlite3
        db = sqlite3.connect('store.db')
        db.execute('create table t (x)')
        db.execute('insert into t values (1)')
        db.commit()
        db.close()
    """, tmp)
    events = under(session.read_new(), tmp)
    assert ("update", "store.db", None) in events  # SQLite opens read-write without truncating
    # SQLite's rollback journal is created and deleted by native code as well
    assert ("unlink", "store.db-journal", None) in events


def test_unlink(session, tmp):
    (tmp / "gone.txt").write_text("x")
    run(session, """
        import os
        os.remove('gone.txt')
        try:
            os.remove('never-there.txt')
        except FileNotFoundError:
            pass
        os.mkdir('folder')
        os.rmdir('folder')
        for _ in range(2):  # a file written again after it was deleted is news, even in the same epoch
            open('again.txt', 'w').close()
            os.unlink('again.txt')
        open('again.txt', 'w').close()
    """, tmp)
    assert under(session.read_new(), tmp) == [
        ("unlink", "gone.txt", None), ("write", "again.txt", None), ("unlink", "again.txt", None),
        ("write", "again.txt", None), ("unlink", "again.txt", None), ("write", "again.txt", None)]
    assert not (tmp / "gone.txt").exists()


# ------------------------------------------------------------ child processes


@pytest.mark.skipif(not (shutil.which("sort") and shutil.which("sh") and shutil.which("cat")),
                    reason="needs sort, sh and cat")
def test_grandchildren_sort_and_shell_are_seen(session, tmp):
    (tmp / "in.txt").write_text("b\na\n")
    (tmp / "a").write_text("payload\n")
    done = run(session, """
        import os, subprocess
        subprocess.run(['sort', 'in.txt', '-o', 'sorted.txt'], check=True)
        subprocess.run(['sh', '-c', 'cat a > b'], check=True)
        print(os.getpid())
    """, tmp)
    me = int(done.stdout.strip())
    events = [e for e in session.read_new() if e.path.startswith(str(tmp) + os.sep)]
    by = {(e.op, Path(e.path).name): e.pid for e in events}
    assert (tmp / "sorted.txt").read_text() == "a\nb\n"
    assert (tmp / "b").read_text() == "payload\n"
    assert set(by) == {("read", "in.txt"), ("write", "sorted.txt"), ("read", "a"), ("write", "b")}
    assert by["read", "in.txt"] == by["write", "sorted.txt"] != me  # sort itself
    assert by["write", "b"] != me  # the shell's redirection
    assert by["read", "a"] not in (me, by["write", "b"])  # cat, a child of the shell


def test_a_forked_child_records_under_its_own_pid(session, tmp):
    (tmp / "shared.txt").write_text("x")
    done = run(session, """
        import os
        open('shared.txt').read()
        pid = os.fork()
        if pid == 0:
            open('shared.txt').read()  # already recorded by the parent, but this is another process
            os._exit(0)
        os.waitpid(pid, 0)
        print(os.getpid(), pid)
    """, tmp)
    parent, child = map(int, done.stdout.split())
    assert [(e.op, e.pid) for e in session.read_new() if e.path == str(tmp / "shared.txt")] == [
        ("read", parent), ("read", child)]


def test_closed_or_replaced_trace_descriptor_never_writes_into_user_files(session, tmp):
    run(session, """
        import os
        open('first.txt', 'w').close()
        os.closerange(3, 4096)               # daemons and sandboxes close every descriptor
        open('second.txt', 'w').close()
        victim = os.open('victim.txt', os.O_WRONLY | os.O_CREAT, 0o644)
        for n in range(3, 1024):             # ... or dup2 their own files over ours
            if n != victim:
                os.dup2(victim, n)
        open('third.txt', 'w').close()
    """, tmp)
    assert (tmp / "victim.txt").read_bytes() == b""
    assert under(session.read_new(), tmp) == [
        ("write", "first.txt", None), ("write", "second.txt", None), ("write", "victim.txt", None),
        ("write", "third.txt", None)]


def test_concurrent_threads_and_many_files(session, tmp):
    """Threads opening at once lose nothing, and more files than the table holds are all recorded."""
    (tmp / "many").mkdir()
    run(session, """
        import threading
        def work(t):
            for i in range(300):
                open(f'many/t{t}-{i}.txt', 'w').close()
                open(f'many/t{t}-{i}.txt').close()
        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        for i in range(7000):  # beyond the de-duplication table's fill limit
            open(f'many/s{i}.txt', 'w').close()
    """, tmp)
    events = under(session.read_new(), tmp)
    writes = [p for op, p, _ in events if op == "write"]
    reads = [p for op, p, _ in events if op == "read"]
    assert len(writes) == len(set(writes)) == 8 * 300 + 7000
    assert sorted(reads) == sorted(f"many/t{t}-{i}.txt" for t in range(8) for i in range(300))


# ------------------------------------------------------------------- paths


def test_relative_paths_after_chdir_and_dirfd(session, tmp):
    (tmp / "sub").mkdir()
    run(session, """
        import os
        os.chdir('sub')
        open('x.txt', 'w').close()
        os.chdir('..')
        open('y.txt', 'w').close()
        fd = os.open('sub', os.O_RDONLY | os.O_DIRECTORY)
        os.fchdir(fd)
        open('z.txt', 'w').close()
        os.close(os.open('w.txt', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
        os.rename('w.txt', '../moved.txt', src_dir_fd=fd, dst_dir_fd=fd)
    """, tmp)
    assert under(session.read_new(), tmp) == [
        ("write", "sub/x.txt", None), ("write", "y.txt", None), ("write", "sub/z.txt", None),
        ("write", "sub/w.txt", None), ("rename", "sub/w.txt", "moved.txt")]


def test_dotdot_and_double_slashes_are_normalised(session, tmp):
    (tmp / "sub" / "deeper").mkdir(parents=True)
    run(session, f"""
        open('sub/deeper/.././/n.txt', 'w').close()
        open('{tmp}//sub/./deeper/../../m.txt', 'w').close()
        open('/../..{tmp}/o.txt', 'w').close()
    """, tmp)
    assert under(session.read_new(), tmp) == [
        ("write", "sub/n.txt", None), ("write", "m.txt", None), ("write", "o.txt", None)]


def test_hidden_folders_skip_prefixes_and_the_trace_folder_are_not_recorded(session, tmp):
    for folder in (".git", ".ipynb_checkpoints", "skipme", "skipme2", "data/.cache"):
        (tmp / folder).mkdir(parents=True)
    run(session, f"""
        open('.git/config', 'w').close()
        open('.ipynb_checkpoints/nb-checkpoint.ipynb', 'w').close()
        open('data/.cache/blob', 'w').close()
        open('skipme/f.txt', 'w').close()
        open('{session.path}/other', 'w').close()
        open('.env', 'w').close()          # only folders are hidden: a dot file itself is recorded
        open('skipme2/f.txt', 'w').close() # a prefix is a folder, not a string prefix
    """, tmp)
    assert under(session.read_new(), tmp) == [("write", ".env", None), ("write", "skipme2/f.txt", None)]
    assert not [e for e in session.read_new() if e.path.startswith(str(session.path))]


def test_directories_and_devices_are_not_recorded(session, tmp):
    (tmp / "folder").mkdir()
    run(session, """
        import os
        os.close(os.open('folder', os.O_RDONLY))
        os.close(os.open('folder', os.O_RDONLY | os.O_DIRECTORY))
        os.close(os.open('folder', os.O_PATH))
        os.close(os.open('.', os.O_WRONLY | os.O_TMPFILE, 0o600))
        os.mkfifo('pipe')
        fd = os.open('pipe', os.O_RDWR)
        os.close(fd)
        open('real.txt', 'w').close()
    """, tmp)
    assert under(session.read_new(), tmp) == [("write", "real.txt", None)]


# ------------------------------------------------------------ epochs, pausing


def test_deduplicated_within_an_epoch_and_again_after_next_epoch(session, tmp):
    (tmp / "d.txt").write_text("x")
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys
        def burst():
            for _ in range(200):
                open('d.txt').read()
        burst()
        print('first', flush=True)
        sys.stdin.readline()
        burst()
        print('second', flush=True)
        sys.stdin.readline()
        burst()
        print('third', flush=True)
    """)], env=traced_env(session), cwd=tmp, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "first"
        assert under(session.read_new(), tmp) == [("read", "d.txt", None)]
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "second"
        assert under(session.read_new(), tmp) == []  # same epoch: nothing new
        session.next_epoch()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "third"
        assert under(session.read_new(), tmp) == [("read", "d.txt", None)]  # once again, not 200 times
        assert child.wait(timeout=TIMEOUT) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()


def test_pausing_stops_recording_for_the_calling_thread_only(session, tmp):
    done = run(session, """
        import ctypes, threading
        from scidex_nbcapsule.capture import interposer
        print(interposer.loaded_in_this_process(), interposer.recording_in_this_process())
        lib = ctypes.CDLL(None)
        lib.nbcapsule_trace_pause(1)
        print(interposer.recording_in_this_process())
        open('paused-ctypes.txt', 'w').close()
        def other():
            open('other-thread.txt', 'w').close()
        t = threading.Thread(target=other)
        t.start(); t.join()
        lib.nbcapsule_trace_pause(0)
        open('resumed.txt', 'w').close()
        interposer.set_thread_paused(True)
        open('paused-helper.txt', 'w').close()
        interposer.set_thread_paused(False)
        open('resumed-again.txt', 'w').close()
    """, tmp)
    assert done.stdout.split() == ["True", "True", "False"]
    assert under(session.read_new(), tmp) == [
        ("write", "other-thread.txt", None), ("write", "resumed.txt", None), ("write", "resumed-again.txt", None)]


def test_not_loaded_in_the_test_process():
    assert not interposer.loaded_in_this_process()
    interposer.set_thread_paused(True)  # a no-op without the library
    interposer.set_thread_paused(False)


# ------------------------------------------------------------ errno, fopen


def test_errno_is_preserved_and_failures_are_not_recorded(session, tmp):
    done = run(session, """
        import ctypes, errno, os
        try:
            open('missing.txt')
        except FileNotFoundError as exc:
            print(exc.errno == errno.ENOENT)
        for path, mode in (('/nonexistent', 'rb'), ('/nonexistent/sub/out.txt', 'w')):
            try:
                open(path, mode)
            except OSError as exc:
                print(type(exc).__name__)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
        ctypes.set_errno(4242)
        fd = libc.open(b'fresh.txt', os.O_WRONLY | os.O_CREAT, 0o644)  # recorded: our code ran in between
        print(fd >= 0, ctypes.get_errno())
        os.close(fd)
        ctypes.set_errno(4242)
        print(libc.open(b'no/such/dir.txt', os.O_RDONLY, 0), ctypes.get_errno() == errno.ENOENT)
    """, tmp)
    assert done.stdout.split() == ["True", "FileNotFoundError", "FileNotFoundError", "True", "4242", "-1", "True"]
    events = session.read_new()
    assert under(events, tmp) == [("write", "fresh.txt", None)]
    assert not [e for e in events if e.path.startswith("/nonexistent") or "missing" in e.path]


def test_fopen_through_ctypes(session, tmp):
    for name in ("r.txt", "rplus.txt"):
        (tmp / name).write_text("x")
    run(session, """
        import ctypes
        libc = ctypes.CDLL(None)
        for fn in (libc.fopen, libc.fopen64):
            fn.restype = ctypes.c_void_p
            fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        for name, mode in ((b'r.txt', b're'), (b'w.txt', b'w'), (b'a.txt', b'a'), (b'rplus.txt', b'r+')):
            libc.fclose(libc.fopen(name, mode))
        libc.fclose(libc.fopen64(b'w64.txt', b'wx'))
        assert libc.fopen(b'missing.txt', b'r') is None
    """, tmp)
    assert under(session.read_new(), tmp) == [
        ("read", "r.txt", None), ("write", "w.txt", None), ("write", "a.txt", None), ("update", "rplus.txt", None),
        ("write", "w64.txt", None)]


# ---------------------------------------------------- the environment, the reader


def test_env_puts_the_library_first_and_keeps_other_preloads(session, library, monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/opt/other/libfoo.so")
    env = session.env()
    assert env["LD_PRELOAD"] == f"{library}:/opt/other/libfoo.so"
    assert env[interposer.DIR_ENV] == str(session.path)
    assert env[interposer.SKIP_ENV].split(":")[0].endswith("/skipme/")


def test_untraced_env_drops_the_library_and_the_trace_variables(session, library, tmp):
    traced = {**os.environ, **session.env()}
    clean = interposer.untraced_env(traced)
    assert "LD_PRELOAD" not in clean and not [k for k in clean if k.startswith("NBCAPSULE_TRACE_")]
    assert interposer.untraced_env({"LD_PRELOAD": f"/opt/libfoo.so {library}:/opt/libbar.so", "A": "1"}) == {
        "LD_PRELOAD": "/opt/libfoo.so:/opt/libbar.so", "A": "1"}
    run(session, "open('untraced.txt', 'w').close()", tmp, env=clean)
    assert under(session.read_new(), tmp) == []


def test_no_trace_dir_means_the_library_only_forwards(library, tmp):
    env = {**os.environ, "LD_PRELOAD": str(library)}
    env.pop(interposer.DIR_ENV, None)
    done = subprocess.run([sys.executable, "-c", "open('plain.txt', 'w').write('ok'); print(open('plain.txt').read())"],
                          env=env, cwd=tmp, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_a_partly_written_record_waits_for_the_rest(session):
    events = session.path / "events"
    with open(events, "ab") as f:
        f.write(b"w\x00123\x00/data/out.csv\x00\x00r\x00124\x00/data/in")
    assert session.read_new() == [TraceEvent("write", 123, "/data/out.csv", None)]
    consumed = session.offset
    assert consumed == len(b"w\x00123\x00/data/out.csv\x00\x00")
    with open(events, "ab") as f:
        f.write(b".csv\x00")
    assert session.read_new() == [] and session.offset == consumed
    with open(events, "ab") as f:
        f.write(b"\x00m\x00125\x00/data/a\x00/data/b\x00")
    assert session.read_new() == [TraceEvent("read", 124, "/data/in.csv", None),
                                  TraceEvent("rename", 125, "/data/a", "/data/b")]
    assert session.offset == events.stat().st_size


def test_from_env_attaches_to_the_same_folder(session, tmp):
    assert TraceSession.from_env({}) is None
    assert TraceSession.from_env({interposer.DIR_ENV: str(tmp / "missing")}) is None
    attached = TraceSession.from_env(session.env())
    try:
        assert attached is not None and attached.path == session.path
        run(session, "open('seen.txt', 'w').close()", tmp)
        assert under(attached.read_new(), tmp) == under(session.read_new(), tmp) == [("write", "seen.txt", None)]
        attached.next_epoch()  # the epoch is shared through the file, whoever bumps it
        run(session, "open('seen.txt', 'w').close()", tmp)
        assert under(session.read_new(), tmp) == [("write", "seen.txt", None)]
    finally:
        attached.close(remove=False)
    assert session.path.is_dir()


# -------------------------------------------------------------- building


_PROBE = """
import json
from scidex_nbcapsule.capture import interposer
from scidex_nbcapsule.capture.interposer import TraceSession
path = interposer.library_path()
session = TraceSession.create()
try:
    session.env()
    raised = None
except Exception as exc:
    raised = [type(exc).__name__, isinstance(exc, interposer.CaptureError)]
session.close()
print(json.dumps([str(path) if path else None, interposer.unavailable_reason(), raised]))
"""


def probe(env: dict[str, str]) -> list:
    import json

    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_switched_off(tmp):
    env = {**interposer.untraced_env(), interposer.SWITCH_ENV: "0", interposer.CACHE_ENV: str(tmp / "cache")}
    path, reason, raised = probe(env)
    assert path is None and "NBCAPSULE_INTERPOSER=0" in reason
    assert raised == ["InterposerUnavailable", True]
    assert not (tmp / "cache").exists()


def test_compiler_failure(tmp):
    env = {**interposer.untraced_env(), "CC": shutil.which("false") or "/bin/false",
           interposer.CACHE_ENV: str(tmp / "cache")}
    env.pop(interposer.SWITCH_ENV, None)
    path, reason, raised = probe(env)
    assert path is None and reason.startswith("compiling the file-access tracer with") and "failed" in reason
    assert raised == ["InterposerUnavailable", True]
    assert list((tmp / "cache").iterdir()) == []  # no half-built library left behind


def test_no_compiler(tmp):
    env = {**interposer.untraced_env(), "CC": "/nonexistent", "PATH": "", interposer.CACHE_ENV: str(tmp / "cache")}
    env.pop(interposer.SWITCH_ENV, None)
    path, reason, raised = probe(env)
    assert path is None and reason.startswith("no C compiler (cc or gcc) was found")
    assert raised == ["InterposerUnavailable", True]
    assert issubclass(interposer.InterposerUnavailable, CaptureError)


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="needs a C compiler")
def test_concurrent_first_builds_share_one_library(tmp):
    cache = tmp / "cache"
    env = {**interposer.untraced_env(), interposer.CACHE_ENV: str(cache)}
    env.pop(interposer.SWITCH_ENV, None)
    code = "from scidex_nbcapsule.capture import interposer; print(interposer.library_path())"
    children = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
                for _ in range(4)]
    paths = {child.communicate(timeout=TIMEOUT)[0].strip() for child in children}
    assert all(child.returncode == 0 for child in children)
    assert len(paths) == 1
    built = Path(paths.pop())
    assert built.parent == cache and built.name.endswith(f"-{os.uname().machine}.so")
    assert sorted(p.name for p in cache.iterdir()) == [built.name]  # no temporary left behind
    mtime = built.stat().st_mtime_ns
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=TIMEOUT).stdout.strip() == str(built)
    assert built.stat().st_mtime_ns == mtime  # reused, not rebuilt


def test_an_update_open_carries_the_files_mtime_and_size_at_the_open(session, tmp):
    (tmp / "db.bin").write_bytes(b"12345")
    st = (tmp / "db.bin").stat()
    run(session, "import os; os.close(os.open('db.bin', os.O_RDWR))", tmp)
    event = next(e for e in session.read_new() if e.path == str(tmp / "db.bin"))
    mtime, size = event.target.split(":")
    assert event.op == "update" and size == "5"
    assert mtime == f"{st.st_mtime_ns // 10**9}.{st.st_mtime_ns % 10**9:09d}"
