"""The package's own I/O threads: copying and hashing in parallel without being recorded as the analysis."""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

from .audit import pause_this_thread

#: Threads the package copies and hashes files with: enough to keep a cold disk busy, few enough for 2 cores.
IO_THREADS = 4


def io_pool(workers: int = IO_THREADS) -> ThreadPoolExecutor:
    """Worker threads for the package's own file I/O, whose opens are never recorded as the analysis's."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nbcapsule-io", initializer=pause_this_thread)


def ordered_map(executor: ThreadPoolExecutor | None, fn: Callable[[Any], Any], items: Iterable[Any], *,
                window: int = 64) -> Iterator[Any]:
    """``fn`` over ``items`` in order, at most ``window`` calls in flight (tens of thousands of futures cost memory).

    Closing the iterator early cancels what has not started and waits for what has.
    """
    if executor is None:
        yield from map(fn, items)
        return
    pending: collections.deque = collections.deque()
    try:
        for item in items:
            pending.append(executor.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        for future in pending:
            if not future.cancelled():
                future.exception()  # wait; its error, if any, is not the one to report


