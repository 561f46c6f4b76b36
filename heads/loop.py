"""Shared pieces of the heads' training loops."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def endless(batches: Callable[[], Iterable[T]]) -> Iterator[T]:
    """Yield from ``batches()`` and call it again whenever it runs dry (one call = one epoch)."""
    while True:
        empty = True
        for item in batches():
            empty = False
            yield item
        if empty:
            raise ValueError("the training data yields no batch (fewer samples than one batch?)")
