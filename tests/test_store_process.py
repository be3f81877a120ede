"""The SQLite store in a process of its own: what crosses to it, and what happens when either side
dies. (The store contract suite runs against it too, as `sqlite-process`.)"""

import asyncio
import os
import pickle
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog

from responder.playbook import Context, on
from responder.store import JobStatus, LeaseLost, Store, StoreUnavailable
from responder.store.sqlite import deliveries as sqlite_deliveries
from responder.store.sqlite import process as process_module
from responder.store.sqlite import server
from responder.store.sqlite.process import SQLiteProcessStore
from responder.store.wire import Channel
from tests.helpers import Client, LogCapture, bare_event, pd_event
from tests.test_store_contract import NOW, delivery, job

pytestmark = pytest.mark.timeout(60)


def child_of(store: SQLiteProcessStore) -> int:
    process = store._process
    assert process is not None and process.returncode is None
    return process.pid


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether `pid` ended (and was reaped, or is a zombie) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):  # reaped before the open, or during it
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


async def opened(path: Path) -> tuple[SQLiteProcessStore, Store]:
    process_store = SQLiteProcessStore(path)
    store = process_store.as_store()
    await store.open()
    return process_store, store


async def test_the_store_runs_in_another_process_and_ends_with_close(tmp_path: Path) -> None:
    process_store, store = await opened(tmp_path / "responder.db")
    pid = child_of(process_store)
    assert pid != os.getpid()
    recorded = await store.record_delivery(delivery("PX1"), [job("s1")])
    assert recorded.created and len(recorded.job_ids) == 1
    # What it committed is in the file, for any other connection to read.
    jobs = await store.list_jobs()
    assert [j.id for j in jobs] == recorded.job_ids
    await store.close()
    assert gone(pid)
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.list_jobs()


async def test_a_killed_store_process_fails_its_calls_and_the_next_call_starts_another(
    tmp_path: Path, logs: LogCapture
) -> None:
    process_store, store = await opened(tmp_path / "responder.db")
    try:
        first = await store.record_delivery(delivery("PK1"), [job("s1")])
        pid = child_of(process_store)
        os.kill(pid, signal.SIGSTOP)  # a call now waits on it, as on a process about to die
        waiting = asyncio.ensure_future(store.list_jobs())
        await asyncio.sleep(0.2)
        assert not waiting.done()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(StoreUnavailable, match="process ended"):
            await asyncio.wait_for(waiting, 10)
        # The next call starts a new process on the same file, with the same node: nothing lost.
        second = await store.record_delivery(delivery("PK2"), [job("s2")])
        assert child_of(process_store) != pid
        assert {j.id for j in await store.list_jobs()} == {*first.job_ids, *second.job_ids}
        assert store.node == process_store.node
        lines = logs.lines()
        assert any(line["event"] == "store.process_lost" for line in lines)
        restarted = [line for line in lines if line["event"] == "store.process_restarted"]
        assert restarted and restarted[0]["previous_returncode"] == -signal.SIGKILL
    finally:
        await store.close()


async def test_a_store_process_that_does_not_answer_fails_its_calls_after_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process stopped (or stuck on a hung disk): a webhook waited for its answer without bound,
    its connection held, where PostgreSQL's store gives up after its command timeout."""
    monkeypatch.setattr(process_module, "CALL_TIMEOUT", 0.5)
    process_store, store = await opened(tmp_path / "responder.db")
    try:
        pid = child_of(process_store)
        os.kill(pid, signal.SIGSTOP)
        sent = delivery("PS1")
        with pytest.raises(StoreUnavailable, match=r"did not answer within 0\.5s"):
            await asyncio.wait_for(store.record_delivery(sent, [job("s1")]), 10)
        os.kill(pid, signal.SIGCONT)  # back: its late answer is dropped, the next call answered
        again = await store.record_delivery(sent, [job("s1")])
        assert not again.created  # committed once it ran on: the sender's retry is a duplicate
    finally:
        await store.close()


async def test_a_crashing_store_process_says_where_in_one_log_line(
    tmp_path: Path, logs: LogCapture
) -> None:
    """A crash in the store process's C code (here: SIGSEGV) is dumped by faulthandler to its
    stderr, which reaches the daemon's log as one JSON event, not raw lines among the daemon's."""
    process_store, store = await opened(tmp_path / "responder.db")
    try:
        pid = child_of(process_store)
        os.kill(pid, signal.SIGSEGV)
        assert await asyncio.to_thread(gone, pid)
        for _ in range(100):  # the output arrives after the process ends
            if logs.events("store.process_output"):
                break
            await asyncio.sleep(0.05)
        [crash] = logs.events("store.process_output")
        assert crash["pid"] == pid and crash["level"] == "error"
        output = str(crash["output"])
        assert output.startswith("Fatal Python error: Segmentation fault"), output
        assert "server.py" in output and "main" in output  # where it was: the event loop
        # The next call starts another process, whose lines carry none of that caller's fields.
        with structlog.contextvars.bound_contextvars(job_id=99):
            await store.record_delivery(delivery("PS1"), [job("s1")])
        restarted = logs.events("store.process_restarted")
        assert restarted and restarted[0]["previous_returncode"] == -signal.SIGSEGV
        assert "job_id" not in restarted[0]
    finally:
        await store.close()
    assert len(logs.events("store.process_output")) == 1  # a clean close writes nothing


DAEMON = """
import asyncio, sys, uvloop
from pathlib import Path
from responder.store.sqlite import deliveries as sqlite_deliveries
from responder.store.sqlite import server
from responder.store.sqlite.process import SQLiteProcessStore
from responder.store.wire import Channel

async def main():
    store = SQLiteProcessStore(Path(sys.argv[1]))
    await store.open()
    print(store._process.pid, flush=True)
    await asyncio.sleep(3600)

uvloop.run(main())  # as the daemon runs
"""


def test_the_store_process_ends_when_the_daemon_is_killed(tmp_path: Path) -> None:
    daemon = subprocess.Popen(
        [sys.executable, "-c", DAEMON, str(tmp_path / "responder.db")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    try:
        assert daemon.stdout is not None
        child = int(daemon.stdout.readline())
        assert not gone(child, within=0.5)
    finally:
        daemon.kill()
        daemon.wait()
    assert gone(child)


async def test_the_store_process_inherits_no_secret_from_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESPONDER_WEBHOOK_SECRET", "s3cr3t-webhook")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "s3cr3t-passphrase")
    process_store, store = await opened(tmp_path / "responder.db")
    try:
        pid = child_of(process_store)
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        for secret in (b"s3cr3t-webhook", b"s3cr3t-passphrase"):
            assert secret not in environ and secret not in cmdline
        assert b"PATH=" in environ  # what it needs to start Python, it has
    finally:
        await store.close()


def store_processes() -> list[int]:
    """The store processes this test's process started, alive or not yet reaped."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid() and b"responder.store.sqlite.server" in command:
            found.append(int(entry.name))
    return found


async def test_a_store_that_cannot_open_fails_open_and_leaves_no_process(tmp_path: Path) -> None:
    (tmp_path / "responder.db").mkdir()  # a directory where the database file should be
    process_store = SQLiteProcessStore(tmp_path / "responder.db")
    store = process_store.as_store()
    with pytest.raises(IsADirectoryError, match="Is a directory") as raised:
        await store.open()  # as the store raised it, in its process, with where it came from
    assert "in the store process" in "".join(getattr(raised.value, "__notes__", []))
    assert store_processes() == []
    # For a moment the next call fails at once rather than start a process again.
    with pytest.raises(StoreUnavailable, match="failed to start"):
        await store.list_jobs()
    assert store_processes() == []
    await store.close()


async def test_a_caller_that_gives_up_does_not_stop_the_restart(
    tmp_path: Path, logs: LogCapture
) -> None:
    process_store, store = await opened(tmp_path / "responder.db")
    try:
        os.kill(child_of(process_store), signal.SIGKILL)
        await asyncio.sleep(0.2)  # the loss noticed: the next call starts another
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.list_jobs(), 0.01)
        assert await store.list_jobs() == []
        assert len(store_processes()) == 1
        assert len(logs.events("store.process_restarted")) == 1
    finally:
        await store.close()
    assert store_processes() == []


async def test_errors_cross_as_they_were_raised(tmp_path: Path) -> None:
    process_store, store = await opened(tmp_path / "responder.db")
    try:
        await store.record_delivery(delivery("PE1"), [job("s1")])
        claimed = await store.claim_next(NOW + 10)
        assert claimed is not None
        with pytest.raises(LeaseLost) as lost:  # a fenced write under a fence no longer held
            await store.finish(claimed.id, JobStatus.SUCCEEDED, NOW + 11, fence=claimed.fence + 1)
        assert lost.value.job_id == claimed.id
        with pytest.raises(AttributeError):
            await process_store.no_such_call()
        with pytest.raises(AttributeError):
            await process_store._call("_open")  # nothing private is reachable
    finally:
        await store.close()


def test_lease_lost_pickles_as_it_was_made() -> None:
    error = pickle.loads(pickle.dumps(LeaseLost(7)))
    assert isinstance(error, LeaseLost) and error.job_id == 7 and str(error) == str(LeaseLost(7))


async def test_events_with_every_kind_of_value_cross_unchanged(tmp_path: Path) -> None:
    _, store = await opened(tmp_path / "responder.db")
    try:
        event = bare_event(big=2**70, text="lone \udcff surrogate", nested={"a": [1, 2.5, None]})
        recorded = await store.record_delivery(delivery("PV1"), [replace(job("s1"), event=event)])
        stored = await store.get_job(recorded.job_ids[0])
        assert stored is not None and stored.event == event
    finally:
        await store.close()


async def test_a_daemon_whose_store_process_died_answers_503_then_records_again(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    @on("incident.triggered")
    async def noted(ctx: Context) -> None:
        """Does nothing."""

    client = await make_client([noted])
    first = await client.deliver(pd_event("incident.triggered", "PD1"), "died-1")
    assert first.status == 202
    process_store = client.daemon.store
    assert isinstance(process_store, SQLiteProcessStore)
    pid = child_of(process_store)
    os.kill(pid, signal.SIGSTOP)  # the delivery below waits on it, then it dies
    waiting = asyncio.ensure_future(client.deliver(pd_event("incident.triggered", "PD2"), "died-2"))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    os.kill(pid, signal.SIGKILL)
    refused = await asyncio.wait_for(waiting, 10)
    assert refused.status == 503, await refused.text()  # not acknowledged: its sender retries
    # The retry starts a new store process, and is recorded once.
    again = await client.deliver(pd_event("incident.triggered", "PD2"), "died-2")
    assert again.status in (200, 202), await again.text()
    jobs = await client.wait_for_jobs()
    assert sorted(j.event.incident_id for j in jobs) == ["PD1", "PD2"]
    assert all(j.status == JobStatus.SUCCEEDED for j in jobs)
    assert await client.store.delivery_ids() == {"died-1", "died-2"}


async def test_calls_that_arrive_together_share_one_commit_in_the_store_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's own loop (run here, in this process, so that its commits can be counted)."""
    batches: list[int] = []
    record = sqlite_deliveries.record_requests

    def hooked(db: sqlite3.Connection, requests: Sequence[sqlite_deliveries.Request]) -> Any:
        batches.append(len(requests))
        return record(db, requests)

    monkeypatch.setattr(sqlite_deliveries, "record_requests", hooked)
    ours, theirs = socket.socketpair()
    serving = asyncio.ensure_future(server.serve(theirs))
    answers: dict[int, tuple[int, bool, Any]] = {}

    def answered(answer: tuple[int, bool, Any]) -> None:
        answers[answer[0]] = answer

    _, channel = await asyncio.get_running_loop().create_unix_connection(
        lambda: Channel(answered), sock=ours
    )
    # All in one write, the close last: it waits for the calls sent before it.
    channel.send((0, server.OPEN, (str(tmp_path / "responder.db"), "n1", 30.0), {}))
    for i in range(1, 51):
        channel.send((i, "record_deliveries", ([(delivery(f"PB{i}"), [job(f"s{i}")])],), {}))
    channel.send((51, server.CLOSE, (), {}))
    await asyncio.wait_for(serving, 10)
    channel.close()
    assert sorted(answers) == list(range(52))
    assert all(ok for _, ok, _ in answers.values()), [a for a in answers.values() if not a[1]]
    assert all(answers[i][2][0].created for i in range(1, 51))
    assert sum(batches) == 50 and len(batches) <= 2, batches  # not one commit each
