"""Work a cancelled caller leaves running goes on, and its later failure is logged, not lost."""

import asyncio
import gc
from typing import Any

import pytest

from responder.shielded import shielded
from tests.helpers import LogCapture


async def test_the_work_s_result_and_error_reach_a_caller_that_waits(logs: LogCapture) -> None:
    async def answer() -> int:
        return 42

    async def fail() -> None:
        raise OSError("disk full")

    assert await shielded(answer(), "answer") == 42
    with pytest.raises(OSError, match="disk full"):
        await shielded(fail(), "fail")
    assert logs.events("task.failed_after_cancel") == []


async def test_work_left_by_a_cancelled_caller_goes_on_and_its_failure_is_logged(
    logs: LogCapture,
) -> None:
    unretrieved: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: unretrieved.append(context))
    release, ran = asyncio.Event(), asyncio.Event()

    async def save() -> None:
        await release.wait()
        ran.set()
        raise OSError("disk full")

    caller = asyncio.create_task(shielded(save(), "settings_save"))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not ran.is_set()
    release.set()
    await ran.wait()
    for _ in range(3):  # the task's end, then its callbacks
        await asyncio.sleep(0)
    del caller
    gc.collect()
    [failed] = logs.events("task.failed_after_cancel")
    assert failed["task"] == "settings_save" and failed["error"] == "disk full"
    assert failed["error_type"] == "OSError"
    assert unretrieved == []  # asyncio had nothing left to report


async def test_an_expected_failure_after_the_caller_went_is_not_logged(logs: LogCapture) -> None:
    release = asyncio.Event()

    async def save() -> None:
        await release.wait()
        raise LookupError("lease lost")

    caller = asyncio.create_task(shielded(save(), "settings_save", expected=(LookupError,)))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    release.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert logs.events("task.failed_after_cancel") == []
