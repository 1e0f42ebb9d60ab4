"""Ordered, bounded parallel map over processes (results come back in input order)."""

from __future__ import annotations

import collections
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator


def ordered_map(func: Callable, items: Iterable, workers: int, ahead: int = 2) -> Iterator:
    """Like `map(func, items)` on `workers` processes, at most `workers * ahead` results pending.

    Bounded so that large per-item results (a subject's slices) never pile up in memory. With
    `workers` ≤ 1 it is the plain `map` in this process. `func` and the items must pickle; an
    exception raised by `func` is raised here, when its result is due.
    """
    if workers <= 1:
        yield from map(func, items)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.submit(func, item))
            if len(pending) >= workers * ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def parse_shard(text: str | None) -> tuple[int, int]:
    """`--shard` 'i/n' or 'i-of-n' (0-based) as (i, n); None or '' is (0, 1), the whole set.

    Raises InputError for anything else, or unless 0 <= i < n.
    """
    from medmem.errors import InputError

    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.replace("-of-", "/").split("/"))
    except ValueError:
        raise InputError(f"--shard must look like i/n or i-of-n (e.g. 0/4), got '{text}'") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"--shard {text}: need 0 <= i < n")
    return i, n
