"""pools.SideWork: a caller's work on a pool thread, with one task of the starter's ahead of it."""

from __future__ import annotations

import threading

import pytest

from convfilt import pools


def _blocked_pool() -> tuple[pools.LazyPool, threading.Event]:
    """A pool of one thread, held busy until the returned event is set."""
    pool = pools.LazyPool("convfilt-test", lambda: 1)
    release = threading.Event()
    pool.submit(release.wait)
    return pool, release


def test_the_first_task_runs_on_the_pool_thread_ahead_of_the_work() -> None:
    order: list[tuple[str, str]] = []

    def note(what: str) -> str:
        order.append((what, threading.current_thread().name))
        return what

    begun = threading.Event()

    def first() -> str:
        begun.set()
        return note("first")

    side = pools.SideWork(lambda: note("work"), pools.LazyPool("convfilt-test", lambda: 1))
    assert not side.finished()
    ready = side.start(first)
    assert ready is not None
    assert begun.wait(timeout=10)  # else the caller would take the task back (tested below)
    assert ready() == "first"
    side.wait()
    assert side.finished()
    assert [what for what, _ in order] == ["first", "work"]
    assert all(name.startswith("convfilt-test") for _, name in order)
    assert side.start(lambda: note("again")) is None  # started once only
    assert len(order) == 2


def test_a_first_task_not_begun_is_done_by_whoever_wants_it() -> None:
    """The pool's one thread is busy: the caller takes the first task back and runs it
    itself (no thread waits on a queued task); the work runs once the thread is free."""
    pool, release = _blocked_pool()
    ran: list[str] = []

    def first() -> str:
        ran.append("first")
        return threading.current_thread().name

    side = pools.SideWork(lambda: ran.append("work"), pool)
    ready = side.start(first)
    assert ready is not None
    assert ready() == threading.current_thread().name
    release.set()
    behind = pool.submit(lambda: None)  # queued after the side work: its thread is done then
    assert behind is not None
    behind.result(timeout=10)
    side.wait()
    assert ran == ["first", "work"]  # the first task once, on the caller; then the work


def test_work_not_begun_is_taken_back_by_wait() -> None:
    pool, release = _blocked_pool()
    ran: list[str] = []
    side = pools.SideWork(lambda: ran.append("work"), pool)
    assert side.start() is None
    side.wait()  # returns at once: the caller has done the work's share itself
    release.set()
    assert ran == []


def test_an_error_in_the_first_task_reaches_its_caller_and_the_work_still_runs() -> None:
    ran: list[str] = []

    def fail() -> None:
        raise MemoryError("no room for the spectra")

    side = pools.SideWork(lambda: ran.append("work"), pools.LazyPool("convfilt-test", lambda: 1))
    ready = side.start(fail)
    assert ready is not None
    with pytest.raises(MemoryError, match="no room"):
        ready()
    side.wait()
    assert ran == ["work"]


def test_an_error_in_the_work_reaches_whoever_waits() -> None:
    def fail() -> None:
        raise RuntimeError("the sums failed")

    side = pools.SideWork(fail, pools.LazyPool("convfilt-test", lambda: 1))
    assert side.start() is None
    with pytest.raises(RuntimeError, match="the sums failed"):
        side.wait()
    assert side.finished()
