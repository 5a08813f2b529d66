"""Process-wide thread pools, made on first use (importing convfilt starts no thread).

A forked child inherits a pool but none of its threads, so each pool is dropped in the child
and made again there on first use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class LazyPool:
    """One ``ThreadPoolExecutor`` of ``size()`` threads named ``name``, made on first use."""

    def __init__(self, name: str, size: Callable[[], int]) -> None:
        self._name, self._size = name, size
        self._made: list[ThreadPoolExecutor] = []
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._made.clear)

    def get(self) -> ThreadPoolExecutor:
        """The pool (made now if this process has none yet)."""
        with self._lock:
            if not self._made:
                self._made.append(
                    ThreadPoolExecutor(max_workers=self._size(), thread_name_prefix=self._name)
                )
            return self._made[0]
