"""Bounded memo tables: the module-level caches of values that are a pure function
of their key (a retry delay's ``timedelta``, a readable duration, a local midnight, a
generated copier, a SQL statement of a given shape)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["Memo"]

K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V]):
    """A dict that computes a missing entry with ``make(key)`` and keeps at most
    ``limit`` entries: it is emptied when full (e.g. jittered delays, which take many
    values). A key is what its entry is made from, so an entry is always
    ``make(key)``: it can never go stale. Read it by subscript: ``table[key]``."""

    def __init__(self, make: Callable[[K], V], limit: int = 1024) -> None:
        super().__init__()
        self._make = make
        self._limit = limit

    def __missing__(self, key: K) -> V:
        if len(self) >= self._limit:
            self.clear()
        value = self[key] = self._make(key)
        return value
