"""A bounded least-recently-used cache of per-image attention features. Pure.

Keys are tuples (model identity, image content hash, settings); each entry may carry weak references to the
objects its key names by id (the MODEL, the VAE, ...): an entry whose objects died or were replaced is a miss,
so a recycled ``id()`` never returns another model's features. Bounded by entry count and by bytes.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any


class FeatureCache:
    def __init__(self, max_bytes: int = 1 << 30, max_entries: int = 4096):
        self.max_bytes = int(max_bytes)
        self.max_entries = int(max_entries)
        self._data: OrderedDict[Hashable, tuple[Any, int, tuple]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable, owners: Sequence[Any] = ()) -> Any | None:
        with self._lock:
            item = self._data.get(key)
            if item is not None:
                value, size, refs = item
                if len(refs) == len(owners) and all(r() is o for r, o in zip(refs, owners)):
                    self._data.move_to_end(key)
                    self.hits += 1
                    return value
                self._drop(key)
            self.misses += 1
            return None

    def put(self, key: Hashable, value: Any, nbytes: int, owners: Sequence[Any] = ()) -> None:
        """Store ``value`` (``nbytes`` large). Larger than the whole budget: not stored."""
        if nbytes > self.max_bytes or self.max_entries <= 0:
            return
        refs = tuple(weakref.ref(o) for o in owners)
        with self._lock:
            if key in self._data:
                self._drop(key)
            self._data[key] = (value, int(nbytes), refs)
            self._bytes += int(nbytes)
            while self._data and (self._bytes > self.max_bytes or len(self._data) > self.max_entries):
                self._drop(next(iter(self._data)))

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def _drop(self, key: Hashable) -> None:
        _, size, _ = self._data.pop(key)
        self._bytes -= size
