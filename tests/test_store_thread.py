"""The SQLite store's own thread: calls in order, answers and errors handed back, a cancelled call
not run, nothing taken after a stop, and no thread left behind."""

import asyncio
import functools
import gc
import threading
import time

import pytest

from responder.store.sqlite.thread import LONG, StoreThread, StoreThreadClosed


def threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


async def test_calls_run_in_order_on_one_thread_and_answer_their_own_callers() -> None:
    worker = StoreThread("store-order")
    ran: list[tuple[int, int | None]] = []

    def record(i: int) -> int:
        ran.append((i, threading.get_ident()))
        return i * 10

    try:
        answers = await asyncio.gather(
            *(worker.call(functools.partial(record, i)) for i in range(200))
        )
    finally:
        worker.stop()
    assert answers == [i * 10 for i in range(200)]
    assert [i for i, _ in ran] == list(range(200))
    idents = {ident for _, ident in ran}
    assert len(idents) == 1 and idents != {threading.get_ident()}


async def test_an_error_reaches_its_caller_and_the_thread_goes_on() -> None:
    worker = StoreThread("store-errors")

    def fail() -> None:
        raise ValueError("refused")

    def stop_iteration() -> None:
        raise StopIteration  # a future cannot carry it: it arrives as a RuntimeError

    try:
        with pytest.raises(ValueError, match="refused"):
            await worker.call(fail)
        with pytest.raises(RuntimeError, match="StopIteration"):
            await worker.call(stop_iteration)
        assert await worker.call(lambda: "still serving") == "still serving"
    finally:
        worker.stop()


async def test_a_call_cancelled_before_it_starts_is_not_run() -> None:
    worker = StoreThread("store-cancel")
    gate = threading.Event()
    ran: list[str] = []
    try:
        blocker = worker.call(gate.wait)  # holds the thread until the cancel is in
        skipped = worker.call(lambda: ran.append("skipped"))
        skipped.cancel()
        gate.set()
        assert await blocker is True
        assert await worker.call(lambda: "after") == "after"
    finally:
        gate.set()
        worker.stop()
    assert ran == []


async def test_a_call_cancelled_while_it_runs_leaves_the_others_answered() -> None:
    worker = StoreThread("store-cancel-running")
    started, gate = threading.Event(), threading.Event()
    loop_errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: loop_errors.append(context))

    def slow() -> str:
        started.set()
        gate.wait()
        return "late"

    try:
        running = worker.call(slow)
        behind = worker.call(lambda: "behind")
        await asyncio.to_thread(started.wait)
        running.cancel()  # its caller gives up while it runs
        gate.set()
        assert await asyncio.wait_for(behind, 10) == "behind"
        assert running.cancelled()
        await asyncio.sleep(0)  # the late answer's callback has run
        assert loop_errors == []  # it was dropped, not forced into the cancelled future
    finally:
        gate.set()
        worker.stop()


async def test_answers_are_sent_before_a_call_marked_slow_runs() -> None:
    worker = StoreThread("store-slow")
    gate = threading.Event()
    try:
        fast = worker.call(lambda: "fast")
        slow = worker.call(gate.wait, slow=True)  # as an fsync: the answers before it go first
        assert await asyncio.wait_for(fast, 10) == "fast"
        assert not slow.done()
        gate.set()
        assert await slow is True
    finally:
        gate.set()
        worker.stop()


def long_call() -> str:
    time.sleep(LONG * 5)
    return "long"


async def test_a_long_call_is_answered_without_waiting_for_the_calls_after_it() -> None:
    worker = StoreThread("store-long")
    gate = threading.Event()
    try:
        long = worker.call(long_call)  # not marked slow, but took long
        blocked = worker.call(gate.wait)
        assert await asyncio.wait_for(long, 10) == "long"
        assert not blocked.done()
        gate.set()
        assert await blocked is True
    finally:
        gate.set()
        worker.stop()


async def test_a_dropped_thread_ends_without_a_stop() -> None:
    worker = StoreThread("store-dropped")
    assert await worker.call(lambda: 1) == 1
    [thread] = threads_named("store-dropped")
    del worker
    gc.collect()
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()


async def test_a_stream_of_quick_calls_does_not_hold_an_answer_back() -> None:
    worker = StoreThread("store-stream")
    gate = threading.Event()
    try:
        first = worker.call(lambda: "first")
        for _ in range(4):  # quick calls, each under LONG, together over it
            worker.call(functools.partial(time.sleep, LONG / 2))
        blocked = worker.call(gate.wait)
        assert await asyncio.wait_for(first, 10) == "first"
        assert not blocked.done()
    finally:
        gate.set()
        worker.stop()


class Owner:
    """What holds a store's thread (the SQLite connection), and whose calls hold it in return."""

    def __init__(self) -> None:
        self.thread = StoreThread("store-owned")

    def ping(self) -> str:
        return "pong"


async def test_a_dropped_owner_s_thread_ends_even_after_a_cancelled_call() -> None:
    owner = Owner()
    gate = threading.Event()
    blocker = owner.thread.call(gate.wait)
    skipped = owner.thread.call(owner.ping)  # holds the owner, and is cancelled before it runs
    skipped.cancel()
    gate.set()
    assert await blocker is True
    [thread] = threads_named("store-owned")
    del owner, skipped
    gc.collect()
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()


async def test_nothing_is_taken_after_a_stop_and_no_thread_is_left() -> None:
    unused = StoreThread("store-unused")
    assert threads_named("store-unused") == []  # a store never used holds no thread
    unused.stop()

    worker = StoreThread("store-stop")
    assert await worker.call(lambda: 1) == 1
    assert len(threads_named("store-stop")) == 1
    worker.stop()
    assert threads_named("store-stop") == []
    with pytest.raises(StoreThreadClosed):
        worker.call(lambda: 2)
