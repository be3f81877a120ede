"""The store's own thread: it runs calls one at a time in arrival order, and answers on the event loop
the calls that finished together with one wake-up.

It replaces a one-worker `ThreadPoolExecutor`, whose per-call hand-off (a work item, a condition,
a future chained to an asyncio one, a wake-up of the loop per call) cost about twice the CPU, all of
it under the GIL that intake and the runner share (bench/RESULTS.md, "Runner"). Waiting answers are
sent whenever the thread runs out of calls, before a call its caller marks slow (a commit to disk, a
prune), before any call once the oldest has waited `LONG`, and after any call that took `LONG`: so
an answer waits little more than `LONG`, unless the call after it turned out long though not marked
slow (a commit that checkpoints the WAL, say).
"""

import asyncio
import contextlib
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any], bool]
_Answer = tuple["asyncio.Future[Any]", Any, BaseException | None]
LONG = 0.001  # s: how long an answer may wait for others; a call this long is sent at once


class StoreThreadClosed(RuntimeError):
    """The thread was stopped: no call is taken any more."""


class StoreThread:
    """One daemon thread for one SQLite connection, started by the first call.

    `stop()` lets the calls already taken finish, refuses later ones and joins the thread; a store
    dropped without a stop ends its thread when collected. (A daemon: a process that exits with a
    transaction under way leaves SQLite to roll it back, as after any crash.)
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # a call is taken, or refused, whole: never half a stop
        self._closed = False
        # The thread holds the queue, not this object, so that it can be collected.
        self._thread = threading.Thread(target=_serve, args=(self._calls,), name=name, daemon=True)
        weakref.finalize(self, self._calls.put, None)

    def call(self, fn: Callable[[], T], *, slow: bool = False) -> "asyncio.Future[T]":
        """`fn` run on the thread after every call taken before it; its result or exception comes
        back in the future. A call cancelled before it starts is not run. `slow`: it may take long
        (an fsync), so the answers of the calls before it are sent first."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed:
                raise StoreThreadClosed("the store's thread is stopped")
            if self._thread.ident is None:
                self._thread.start()  # a store never used holds no thread
            self._calls.put((loop, future, fn, slow))
        return future

    def stop(self) -> None:
        """Take no more calls, let those taken finish, and end the thread (blocking)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._calls.put(None)
        if self._thread.ident is not None and threading.current_thread() is not self._thread:
            self._thread.join()


def _serve(calls: "queue.SimpleQueue[_Call | None]") -> None:
    answers = _Answers()
    while True:
        try:
            call = calls.get_nowait()
        except queue.Empty:
            answers.send()  # out of calls: nothing more would join these
            call = calls.get()
        if call is None:
            answers.send()
            return
        _take(call, answers)
        del call  # holds nothing of a call (its closure, its loop) while it waits for the next


def _take(call: _Call, answers: "_Answers") -> None:
    """Run one call, its answer kept with those waiting to be sent, or sent at once with them."""
    loop, future, fn, slow = call
    if future.cancelled():  # its caller gave up before it started
        return
    if slow or answers.older_than(LONG):  # nothing waits behind a call that may take long
        answers.send()
    started = time.monotonic()
    answers.add(loop, _outcome(future, fn))
    if time.monotonic() - started >= LONG:
        answers.send()


class _Answers:
    """Answers not yet sent, by event loop (in practice one)."""

    def __init__(self) -> None:
        self._waiting: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
        self._since = 0.0  # when the oldest of them was added

    def add(self, loop: asyncio.AbstractEventLoop, answer: _Answer) -> None:
        if not self._waiting:
            self._since = time.monotonic()
        self._waiting.setdefault(loop, []).append(answer)

    def older_than(self, seconds: float) -> bool:
        return bool(self._waiting) and time.monotonic() - self._since >= seconds

    def send(self) -> None:
        waiting, self._waiting = self._waiting, {}
        for loop, answers in waiting.items():
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits for these
                loop.call_soon_threadsafe(_settle, answers)


def _outcome(future: "asyncio.Future[Any]", fn: Callable[[], Any]) -> _Answer:
    try:
        return future, fn(), None
    except StopIteration as e:  # a future cannot carry it
        return future, None, RuntimeError(f"store call raised {e!r}")
    except BaseException as e:  # handed to the caller, whatever it is
        return future, None, e


def _settle(answers: list[_Answer]) -> None:
    for future, result, error in answers:
        if future.cancelled():  # its caller gave up while it ran
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
