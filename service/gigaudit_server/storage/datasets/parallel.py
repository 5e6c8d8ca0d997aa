"""Work on a thread pool whose results come back in order, with a bounded number in flight (torch-free)."""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(function: Callable[[T], R], items: Iterable[T], threads: int, window: int | None = None
                ) -> Iterator[R]:
    """``function(item)`` of every item, in the items' order, on ``threads`` threads (1: in the caller's thread).
    At most ``window`` (default ``2 * threads``) results are pending at a time, so memory stays bounded; the
    items are drawn in the caller's thread (an item may be read from a stream there). The first error is raised
    in order, and what is still pending is cancelled."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    if threads == 1:
        yield from map(function, items)
        return
    window = window or 2 * threads
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="decode") as pool:
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
