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
from functools import partial
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


class SideWork:
    """A caller's work for a second core while its own thread computes (matching's window
    energies beside the engine's transforms), started once on a pool thread; the starter may
    put one task of its own ahead of it on that thread (the engine's kernel spectra).

    A task whose thread has not begun when it is wanted is taken back and done by whoever
    wants it, so no thread ever waits on a queued task (a caller that is itself a pool
    thread cannot deadlock the pool).
    """

    def __init__(self, work: Callable[[], object], pool: LazyPool) -> None:
        self._work, self._pool = work, pool
        self._future: Future[None] | None = None
        self._started = False

    def start(self, first: Callable[[], T] | None = None) -> Callable[[], T] | None:
        """Start the work on the pool, after ``first``; return a function giving ``first``'s
        result as soon as it is ready (computed by the caller if the thread has not begun).
        Only the first call starts anything; later calls, a pool that takes no more work
        (interpreter shutdown), and a call without ``first`` return None."""
        if self._started:
            return None
        self._started = True
        ahead: Future[T] = Future()

        def run() -> None:
            if first is not None and ahead.set_running_or_notify_cancel():
                try:
                    ahead.set_result(first())
                except BaseException as error:  # handed to whoever wants the result
                    ahead.set_exception(error)
            self._work()

        self._future = self._pool.submit(run)
        if first is None or self._future is None:
            return None
        return partial(_result_or_run, ahead, first)

    def finished(self) -> bool:
        """Whether the pool thread is done with the work (False until it has started)."""
        return self._future is not None and self._future.done()

    def wait(self) -> None:
        """Wait until the pool thread is done with the work; if it has not begun, take it
        back (the caller has done the work's share itself)."""
        if self._future is not None and not self._future.cancel():
            self._future.result()


def _result_or_run(ahead: Future[T], task: Callable[[], T]) -> T:
    """``ahead``'s result, or ``task()`` run here if ``ahead`` had not begun (then cancelled)."""
    return task() if ahead.cancel() else ahead.result()
