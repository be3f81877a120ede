"""Idle workers: an announcement wakes exactly one waiting worker, and none is lost."""

import asyncio

from responder.idle import IdleWorkers


async def waiting(idle: IdleWorkers, count: int, timeout: float = 30.0) -> list[asyncio.Task[None]]:
    """`count` workers waiting, in order."""
    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(idle.wait(idle.mark(), timeout)))
        await asyncio.sleep(0)  # each is in line before the next
    return tasks


async def test_an_announcement_wakes_the_first_waiting_worker_only() -> None:
    idle = IdleWorkers()
    first, second, third = await waiting(idle, 3)
    idle.announce()
    await asyncio.wait_for(first, 1)
    await asyncio.sleep(0.05)
    assert not second.done() and not third.done()
    idle.announce()
    await asyncio.wait_for(second, 1)
    assert not third.done()
    idle.announce(everyone=True)
    await asyncio.wait_for(third, 1)


async def test_a_stop_wakes_every_waiting_worker() -> None:
    idle = IdleWorkers()
    tasks = await waiting(idle, 4)
    idle.announce(everyone=True)
    await asyncio.wait_for(asyncio.gather(*tasks), 1)


async def test_a_worker_still_looking_when_work_was_announced_does_not_wait() -> None:
    idle = IdleWorkers()
    mark = idle.mark()  # it begins to look (its claim finds nothing) ...
    idle.announce()  # ... while work is announced, with nobody waiting to hear it
    await asyncio.wait_for(idle.wait(mark, 30), 0.5)


async def test_an_announcement_passes_over_a_worker_whose_wait_ended() -> None:
    idle = IdleWorkers()
    [gone] = await waiting(idle, 1, timeout=0.01)
    [late] = await waiting(idle, 1)
    await gone  # timed out: it looks for work on its own
    idle.announce()
    await asyncio.wait_for(late, 1)


async def test_waits_that_end_leave_nothing_behind() -> None:
    idle = IdleWorkers()
    timed_out = await waiting(idle, 5, timeout=0.01)
    await asyncio.gather(*timed_out)
    cancelled = await waiting(idle, 3)
    for task in cancelled:
        task.cancel()
    await asyncio.gather(*cancelled, return_exceptions=True)
    woken = await waiting(idle, 2)
    idle.announce(everyone=True)
    await asyncio.gather(*woken)
    assert len(idle._waiting) == 0
