"""The inotify tree watcher, on real files changed by this process and by real child processes.

No sleeps stand in for synchronisation: ``drain()`` reads the kernel's queue synchronously, and the
kernel queues a close event before the closing system call returns (or, for a process that exits,
before its parent's ``wait`` returns), so an event is in the ``drain()`` that follows it. Several
tests check that claim many times over, with the reader thread racing ``drain()``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from scidex_nbcapsule.capture import inotify
from scidex_nbcapsule.capture.inotify import TreeWatcher, WatchEvent

pytestmark = pytest.mark.skipif(not inotify.available(), reason=str(inotify.unavailable_reason()))

MODULE_FILE = Path(inotify.__file__).resolve()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    (root / "data" / "input.csv").write_text("x,y\n1,2\n")
    return root.resolve()


@pytest.fixture
def watch(tree: Path):
    """Start a watcher on ``tree`` (stopped at the end of the test, whatever happens)."""
    started: list[TreeWatcher] = []

    def start(**kwargs) -> TreeWatcher:
        watcher = TreeWatcher(tree, **kwargs).start()
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.stop()


def ops(events: list[WatchEvent], root: Path) -> list[tuple[str, str, str | None]]:
    """Events as (op, path, target) relative to ``root``: short to compare, and shows what leaked outside."""
    def rel(p: str | None) -> str | None:
        return None if p is None else os.path.relpath(p, root)
    return [(e.op, rel(e.path), rel(e.target)) for e in events]


def sh(script: str, cwd: Path) -> None:
    subprocess.run(["sh", "-c", script], cwd=cwd, check=True)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# -- what files do ------------------------------------------------------------------------------
def test_file_read_by_a_child_process_is_a_read(tree, watch):
    w = watch()
    sh("cat data/input.csv > /dev/null", tree)
    assert ops(w.drain(), tree) == [("read", "data/input.csv", None)]


def test_sort_in_a_subfolder_reads_its_input_and_writes_its_output(tree, watch):
    sub = tree / "data" / "sub"
    sub.mkdir()
    (sub / "in.txt").write_text("b\nc\na\n")
    w = watch()
    subprocess.run(["sort", "in.txt", "-o", "out.txt"], cwd=sub, check=True)
    seen = ops(w.drain(), tree)
    assert (sub / "out.txt").read_text() == "a\nb\nc\n"
    read_in = seen.index(("read", "data/sub/in.txt", None))
    wrote_out = seen.index(("write", "data/sub/out.txt", None))
    assert ("create", "data/sub/out.txt", None) in seen
    assert read_in < wrote_out  # sort closes its input before it has finished writing its output
    assert {p for _, p, _ in seen} == {"data/sub/in.txt", "data/sub/out.txt"}


def test_sqlite_writing_from_this_process_is_a_write(tree, watch):
    w = watch()
    db = sqlite3.connect(tree / "results.db")  # native code: the audit hook sees this open, not the writes
    db.execute("create table t (x)")
    db.executemany("insert into t values (?)", [(i,) for i in range(100)])
    db.commit()
    db.close()
    seen = ops(w.drain(), tree)
    assert ("write", "results.db", None) in seen
    assert seen.index(("create", "results.db", None)) < seen.index(("write", "results.db", None))
    # its rollback journal comes and goes; with IN_EXCL_UNLINK no close is reported after its delete
    journal = [op for op, p, _ in seen if p == "results.db-journal"]
    if journal:
        assert journal[-1] == "delete"


def test_a_database_opened_read_write_but_only_queried_is_a_read(tree, watch):
    with sqlite3.connect(tree / "existing.db") as db:
        db.execute("create table t (x)")
    db.close()
    (tree / "notes.txt").write_text("unchanged")
    w = watch()
    reader = sqlite3.connect(tree / "existing.db")  # SQLite opens O_RDWR even to read
    assert reader.execute("select count(*) from t").fetchone() == (0,)  # still open at the drain: seen at the open
    with open(tree / "notes.txt", "r+") as handle:
        handle.read()
    seen = ops(w.drain(), tree)
    reader.close()
    assert ("read", "existing.db", None) in seen and ("read", "notes.txt", None) in seen
    assert not [e for e in seen if e[0] == "write"]


def test_os_replace_is_one_rename(tree, watch):
    (tree / "out").mkdir()
    w = watch()
    (tree / "out" / "table.csv.tmp").write_text("a\n")
    assert ops(w.drain(), tree) == [("create", "out/table.csv.tmp", None), ("write", "out/table.csv.tmp", None)]
    for _ in range(50):  # the reader thread races drain() for the two halves of the rename
        os.replace(tree / "out" / "table.csv.tmp", tree / "out" / "table.csv")
        assert ops(w.drain(), tree) == [("rename", "out/table.csv.tmp", "out/table.csv")]
        os.replace(tree / "out" / "table.csv", tree / "out" / "table.csv.tmp")
        assert ops(w.drain(), tree) == [("rename", "out/table.csv", "out/table.csv.tmp")]


def test_moving_in_is_a_write_and_moving_out_a_delete(tree, tmp_path, watch):
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    w = watch()
    os.rename(outside, tree / "data" / "moved-in.txt")
    assert ops(w.drain(), tree) == [("write", "data/moved-in.txt", None)]
    os.rename(tree / "data" / "moved-in.txt", outside)
    assert ops(w.drain(), tree) == [("delete", "data/moved-in.txt", None)]
    sh(f"mv data/input.csv {outside}", tree)
    assert ops(w.drain(), tree) == [("delete", "data/input.csv", None)]


def test_deletes(tree, watch):
    (tree / "data" / "old").mkdir()
    for name in ("a.txt", "b.txt"):
        (tree / "data" / "old" / name).write_text(name)
    w = watch()
    os.remove(tree / "data" / "input.csv")
    sh("rm -r data/old", tree)
    seen = ops(w.drain(), tree)
    assert seen[0] == ("delete", "data/input.csv", None)
    assert sorted(seen[1:]) == [("delete", "data/old/a.txt", None), ("delete", "data/old/b.txt", None)]
    # the folder's watch went with it; a new folder of the same name is watched afresh
    (tree / "data" / "old").mkdir()
    (tree / "data" / "old" / "c.txt").write_text("c")
    # (written before or after the watcher got to the new folder: listed as created, or seen closing)
    assert ops(w.drain(), tree)[-1] in (("create", "data/old/c.txt", None), ("write", "data/old/c.txt", None))


# -- folders -----------------------------------------------------------------------------------
def test_a_folder_created_and_filled_at_once_is_seen(tree, watch):
    w = watch()
    for i in range(30):  # the reader thread or drain() may be first to see each folder
        sh(f"mkdir -p new{i}/deep/deeper && echo x > new{i}/deep/deeper/f.txt && echo y > new{i}/g.txt", tree)
        seen = ops(w.drain(), tree)
        for path in (f"new{i}/deep/deeper/f.txt", f"new{i}/g.txt"):
            kinds = [op for op, p, _ in seen if p == path]
            assert kinds.count("create") == 1, (path, seen)  # from the scan or the kernel, not both
            assert set(kinds) <= {"create", "write"}
        # and the new folders have their own watches from now on
        (tree / f"new{i}" / "deep" / "deeper" / "later.txt").write_text("z")
        assert ops(w.drain(), tree)[-1] == ("write", f"new{i}/deep/deeper/later.txt", None)


def test_a_folder_created_by_this_process_and_written_at_once(tree, watch):
    w = watch()
    for i in range(30):
        folder = tree / "runs" / f"run{i}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text("{}")
        seen = ops(w.drain(), tree)
        assert ("create", f"runs/run{i}/metrics.json", None) in seen
        assert seen.count(("create", f"runs/run{i}/metrics.json", None)) == 1


def test_a_renamed_folder_keeps_its_watches_under_the_new_name(tree, watch):
    (tree / "a" / "inner").mkdir(parents=True)
    w = watch()
    os.rename(tree / "a", tree / "b")
    (tree / "b" / "inner" / "x.txt").write_text("x")
    (tree / "b" / "y.txt").write_text("y")
    assert ops(w.drain(), tree) == [
        ("create", "b/inner/x.txt", None), ("write", "b/inner/x.txt", None),
        ("create", "b/y.txt", None), ("write", "b/y.txt", None),
    ]


def test_hidden_and_skipped_folders_produce_nothing(tree, watch):
    for name in (".git", ".ipynb_checkpoints", "__pycache__", "node_modules", "skipme", "data/.cache"):
        (tree / name / "deep").mkdir(parents=True)
        (tree / name / "deep" / "f").write_text("x")
    skipped: list[str] = []

    def skip(path: str) -> bool:
        skipped.append(path)
        return os.path.basename(path) in ("skipme", "skipped-later")

    w = watch(skip=skip)
    assert str(tree / "skipme") in skipped and str(tree / "data") in skipped
    assert not any("/.git" in p or "node_modules" in p for p in skipped)  # never even asked about
    later = [".hidden-later", "skipped-later", "__pycache__/new", "data/node_modules"]
    for name in later:
        (tree / name / "deep").mkdir(parents=True)
    for name in (".git", ".ipynb_checkpoints", "__pycache__", "node_modules", "skipme", "data/.cache", *later):
        sh(f"cat '{name}/deep/f' 2>/dev/null; echo y > '{name}/deep/g'; rm -f '{name}/deep/f'", tree)
        (tree / name / "deep" / "h").write_text("z")
    (tree / "visible.txt").write_text("v")
    assert ops(w.drain(), tree) == [("create", "visible.txt", None), ("write", "visible.txt", None)]


def test_renaming_a_folder_to_a_hidden_name_and_back(tree, watch):
    (tree / "out").mkdir()
    (tree / "out" / "kept.txt").write_text("k")
    w = watch()
    os.rename(tree / "out", tree / ".out")
    (tree / ".out" / "unseen.txt").write_text("u")
    assert ops(w.drain(), tree) == []
    os.rename(tree / ".out", tree / "back")  # like a folder moved in: what it holds is new to the tree
    (tree / "back" / "seen.txt").write_text("s")
    seen = ops(w.drain(), tree)
    # the listing of "back" may come before or after seen.txt appears: each file is created once either way
    assert sorted(e for e in seen if e[0] == "create") == [
        ("create", "back/kept.txt", None), ("create", "back/seen.txt", None), ("create", "back/unseen.txt", None)]
    # its close is reported only if the watch on "back" was in place by then
    assert [e for e in seen if e[0] != "create"] in ([], [("write", "back/seen.txt", None)])


def test_a_folder_moved_out_of_the_tree_is_no_longer_watched(tree, tmp_path, watch):
    (tree / "gone" / "sub").mkdir(parents=True)
    w = watch()
    os.rename(tree / "gone", tmp_path / "gone")
    (tmp_path / "gone" / "sub" / "f.txt").write_text("f")
    (tree / "here.txt").write_text("h")
    assert ops(w.drain(), tree) == [("create", "here.txt", None), ("write", "here.txt", None)]


# -- drain(): order and attribution ------------------------------------------------------------
def test_drain_returns_events_in_order_and_nothing_twice(tree, watch):
    w = watch()
    for name in ("a.txt", "b.txt", "c.txt"):
        (tree / name).write_text(name)
    (tree / "a.txt").read_text()
    events = w.drain()
    assert ops(events, tree) == [
        ("create", "a.txt", None), ("write", "a.txt", None),
        ("create", "b.txt", None), ("write", "b.txt", None),
        ("create", "c.txt", None), ("write", "c.txt", None),
        ("read", "a.txt", None),
    ]
    times = [e.time for e in events]
    assert times == sorted(times)
    assert all(os.path.isabs(e.path) for e in events)
    assert w.drain() == []
    assert w.drain() == []


def test_drain_attributes_events_to_the_interval_they_happened_in(tree, watch):
    w = watch()
    w.drain()
    for i in range(40):  # a "cell" per iteration: a child writes, this process reads, then the boundary
        sh(f"echo {i} > cell{i}.txt", tree)
        (tree / "data" / "input.csv").read_text()
        cell = ops(w.drain(), tree)
        assert cell == [("create", f"cell{i}.txt", None), ("write", f"cell{i}.txt", None),
                        ("read", "data/input.csv", None)], i  # the same read again in each cell: not merged away


def test_a_childs_close_is_queued_by_the_time_it_has_exited(tree, watch):
    w = watch()
    target = "data/input.csv"
    for i in range(100):
        subprocess.run(["cat", target], cwd=tree, stdout=subprocess.DEVNULL, check=True)
        assert ("read", target, None) in ops(w.drain(), tree), i
    # files a process never closes are closed by the kernel as it exits, even when it is killed
    for i in range(20):
        subprocess.run(["sh", "-c", f"exec 3< {target}; kill -9 $$"], cwd=tree)
        assert ops(w.drain(), tree) == [("read", target, None)], i
        code = f"import os; f = open('w{i}.txt', 'w'); f.write('x'); f.flush(); os._exit(0)"
        subprocess.run([sys.executable, "-c", code], cwd=tree, check=True)
        assert ops(w.drain(), tree) == [("create", f"w{i}.txt", None), ("write", f"w{i}.txt", None)], i


def test_reading_one_file_10000_times_leaves_one_event(tree, watch):
    w = watch()
    path = tree / "data" / "input.csv"
    for _ in range(10_000):
        with open(path, "rb") as handle:
            handle.read()
    assert ops(w.drain(), tree) == [("read", "data/input.csv", None)]
    code = textwrap.dedent("""
        for _ in range(10_000):
            with open('data/input.csv', 'rb') as handle:
                handle.read()
    """)
    subprocess.run([sys.executable, "-c", code], cwd=tree, check=True)
    assert ops(w.drain(), tree) == [("read", "data/input.csv", None)]
    assert not w.overflowed


# -- what the watcher could not see --------------------------------------------------------------
def _max_queued_events() -> int:
    try:
        return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    except (OSError, ValueError):
        return 16384


@pytest.mark.skipif(_max_queued_events() > 200_000, reason="the inotify queue limit is too large to fill in a test")
def test_a_full_queue_is_reported_as_overflowed(tree, watch):
    # The reader thread calls skip() when it meets a new folder, holding the watcher's lock: holding it
    # there stops all reading (no drain() is called meanwhile) while a child floods the queue.
    entered, release = threading.Event(), threading.Event()

    def skip(path: str) -> bool:
        if os.path.basename(path) == "gate":
            entered.set()
            release.wait(120)
        return False

    (tree / "flood").mkdir()  # watched from the start: the reader will be held before it sees new folders
    for name in ("a", "b"):
        (tree / "flood" / name).write_text(name)
    w = watch(skip=skip)
    try:
        (tree / "gate").mkdir()
        assert entered.wait(60), "the reader thread did not pick up the new folder"
        reads = _max_queued_events() + 1000  # alternating between two files: the kernel cannot merge them
        code = f"for i in range({reads}):\n    open('flood/' + 'ab'[i % 2]).close()"
        subprocess.run([sys.executable, "-c", code], cwd=tree, check=True)
    finally:
        release.set()
    events = w.drain()
    assert w.overflowed
    assert len(events) < reads
    (tree / "after.txt").write_text("a")  # and it goes on watching
    assert ops(w.drain(), tree) == [("create", "after.txt", None), ("write", "after.txt", None)]


def _python_for(user: int) -> str | None:
    for candidate in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
        try:
            if candidate and subprocess.run([candidate, "-c", "pass"], user=user, capture_output=True).returncode == 0:
                return candidate
        except OSError:  # not executable by that user
            continue
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="makes an unreadable folder unreadable by running a child as nobody")
def test_folders_that_cannot_be_watched_are_listed():
    # root reads everything, so the watcher runs in a child as nobody, loading the module from its file
    nobody = 65534
    python = _python_for(nobody)
    if python is None or not os.access(MODULE_FILE, os.R_OK):
        pytest.skip("no Python interpreter the nobody user can run")
    base = Path(tempfile.mkdtemp(prefix="nbcapsule-inotify-"))
    try:
        base.chmod(0o755)
        root = base / "project"
        (root / "locked" / "inner").mkdir(parents=True)
        (root / "open").mkdir()
        for folder in (root, root / "open"):
            os.chown(folder, nobody, -1)
        (root / "locked").chmod(0o000)
        script = textwrap.dedent(f"""
            import importlib.util, json, sys
            spec = importlib.util.spec_from_file_location("inotify_under_test", {str(MODULE_FILE)!r})
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            with module.TreeWatcher({str(root)!r}) as w:
                open({str(root / "open" / "x.txt")!r}, "w").close()
                print(json.dumps({{"unwatched": w.unwatched, "events": [e.op + " " + e.path for e in w.drain()]}}))
        """)
        result = subprocess.run([python, "-c", script], user=nobody, capture_output=True, text=True, cwd=base)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["unwatched"] == [str(root / "locked")]
        # an empty file created: a create, and no write since nothing changed its content
        assert report["events"] == [f"create {root}/open/x.txt"]
    finally:
        (base / "project" / "locked").chmod(0o755)
        shutil.rmtree(base)


# -- life cycle -----------------------------------------------------------------------------------
def test_stop_is_prompt_idempotent_and_keeps_what_was_not_drained(tree):
    before = open_fds()
    w = TreeWatcher(tree).start()
    thread = next(t for t in threading.enumerate() if t.name == "nbcapsule-inotify")
    (tree / "last.txt").write_text("x")
    started = time.monotonic()
    w.stop()
    assert time.monotonic() - started < 2.0  # woken through its pipe, not left to its poll() timeout
    assert not thread.is_alive()
    w.stop()
    assert open_fds() == before
    assert ops(w.drain(), tree) == [("create", "last.txt", None), ("write", "last.txt", None)]
    assert w.drain() == []
    with pytest.raises(RuntimeError):
        w.start()


def test_context_manager_and_on_thread_start(tree):
    calls: list[threading.Thread] = []
    with TreeWatcher(tree, on_thread_start=lambda: calls.append(threading.current_thread())) as w:
        assert len(calls) == 1  # called before start() returns, in the reader thread
        assert calls[0] is not threading.main_thread() and calls[0].daemon
        (tree / "f.txt").write_text("x")
        assert ops(w.drain(), tree)[-1] == ("write", "f.txt", None)
    assert not calls[0].is_alive()


def test_an_on_thread_start_failure_is_raised_by_start(tree):
    before = open_fds()

    def fail() -> None:
        raise ValueError("cannot pause")

    with pytest.raises(ValueError, match="cannot pause"):
        TreeWatcher(tree, on_thread_start=fail).start()
    assert open_fds() == before


def test_a_missing_root_cannot_be_watched(tmp_path):
    before = open_fds()
    with pytest.raises(OSError, match="cannot be watched"):
        TreeWatcher(tmp_path / "missing").start()
    assert open_fds() == before


def test_stop_before_start_and_drain_without_start(tree):
    w = TreeWatcher(tree)
    assert w.drain() == []
    w.stop()
    w.stop()
    assert not w.overflowed and w.unwatched == []


def test_available_says_why_not_only_when_it_is_not():
    assert inotify.available() is True
    assert inotify.unavailable_reason() is None
