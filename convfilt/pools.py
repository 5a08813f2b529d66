"""Process-wide thread pools, made on first use (importing convfilt starts no thread).

A forked child inherits a pool but none of its threads, so each pool is dropped in the child
and made again there on first use.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class LazyPool:
    """One ``ThreadPoolExecutor`` of ``size()`` threads named ``name``, made on first use."""

    def __init__(self, name: str, size: Callable[[], int]) -> None:
        self._name, self._size = name, size
        self._made: list[ThreadPoolExecutor] = []
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        """In a forked child: no pool yet, and a lock no parent thread holds."""
        self._made = []
        self._lock = threading.Lock()

    def get(self) -> ThreadPoolExecutor:
        """The pool (made now if this process has none yet)."""
        with self._lock:
            if not self._made:
                self._made.append(
                    ThreadPoolExecutor(max_workers=self._size(), thread_name_prefix=self._name)
                )
            return self._made[0]

    def submit(self, work: Callable[..., T], *args: Any) -> Future[T] | None:
        """``work(*args)`` on the pool, in a copy of the caller's context (its context
        variables: numpy's error state, convfilt's thread cap); None once the interpreter is
        shutting down and pools take no more work (a thread still running then, or an exit
        handler, does the work itself)."""
        context = contextvars.copy_context()
        try:
            return self.get().submit(context.run, work, *args)
        except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
            return None

    def map(self, work: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``[work(item) for item in items]``, each item on the pool (as :meth:`submit`)."""
        pending = [self.submit(work, item) for item in items]
        return [
            work(item) if future is None else future.result()
            for future, item in zip(pending, items, strict=True)
        ]
