"""A small time-to-live cache, so that a page load does not list a large bucket again.

Each entry remembers when it was loaded; the page shows that age. Loads of one key are
serialised (two browsers opening the page at once list the bucket once), loads of different
keys are not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any


class TTLCache:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: dict[Hashable, tuple[Any, int]] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], Any], refresh: bool = False) -> tuple[Any, int]:
        """``(value, loaded at, epoch ms)``: the cached value while younger than the TTL, else ``load()``'s."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            entry = self._entries.get(key)
            now_ms = int(self.clock() * 1000)
            if entry is not None and not refresh and now_ms - entry[1] < self.ttl_s * 1000:
                return entry
            entry = (load(), now_ms)
            self._entries[key] = entry
            return entry

    def clear(self) -> None:
        with self._guard:
            self._entries.clear()
