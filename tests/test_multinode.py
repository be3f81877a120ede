"""Several nodes on one PostgreSQL (jobs) and Pulumi's `postgres://` backend, with the real CLI:
work is shared and done once, one stack's jobs run in order across nodes, a dead node's job is
finished elsewhere, a stack made on one node is run by another, duplicates across nodes make one
job, a database restart loses nothing acknowledged, and the reaper runs on one node at a time."""

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.helpers import API_TOKEN, pd_event, until
from tests.multinode_playbooks.nodes import TOKEN
from tests.nodes import PASSPHRASE, Node
from tests.postgres_server import PostgresServer, fresh_database

pytestmark = pytest.mark.pulumi

MakeNodes = Callable[[int], Awaitable[list[Node]]]

POLL = 0.25  # seconds between two looks at the nodes' APIs


@pytest.fixture
async def cluster(
    postgres_server: PostgresServer, tmp_path: Path
) -> AsyncIterator[tuple[MakeNodes, Callable[[], Awaitable[list[dict[str, Any]]]]]]:
    """`make(n)` → n nodes (not started) on fresh databases; `jobs()` → every job row, by id."""
    made: list[Node] = []
    async with (
        fresh_database(postgres_server) as jobs_url,
        fresh_database(postgres_server) as pulumi_url,
    ):

        async def make(n: int) -> list[Node]:
            nodes = [Node(tmp_path, f"node{len(made) + i}", jobs_url, pulumi_url) for i in range(n)]
            made.extend(nodes)
            return nodes

        async def jobs() -> list[dict[str, Any]]:
            db = await asyncpg.connect(jobs_url)
            try:
                return [dict(r) for r in await db.fetch("SELECT * FROM jobs ORDER BY id")]
            finally:
                await db.close()

        try:
            yield make, jobs
        finally:
            for node in made:
                node.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


async def start(session: aiohttp.ClientSession, *nodes: Node, **settings: str) -> None:
    for node in nodes:
        node.start(**settings)
    await asyncio.gather(*(node.wait_ready(session) for node in nodes))


async def all_final(jobs: Callable[[], Awaitable[list[dict[str, Any]]]], count: int) -> bool:
    rows = await jobs()
    final = {"succeeded", "failed", "cancelled", "refused", "rejected", "coalesced"}
    return len(rows) >= count and all(r["status"] in final for r in rows)


async def test_incidents_sent_round_robin_are_provisioned_exactly_once(
    cluster: tuple[MakeNodes, Any], session: aiohttp.ClientSession
) -> None:
    make, jobs = cluster
    nodes = await make(3)
    unlimited = {"max_stacks_per_service": "0", "max_stacks_per_playbook": "0"}
    await start(session, *nodes, max_operations_per_minute="0", **unlimited)
    statuses = await asyncio.gather(
        *(
            nodes[i % 3].deliver(
                session, pd_event("incident.triggered", f"QRR{i:03d}", title="x 0")
            )
            for i in range(50)
        )
    )
    assert set(statuses) == {202}
    await until(lambda: all_final(jobs, 50), "50 provisions", 420, POLL)
    rows = await jobs()
    assert len(rows) == 50 and len({r["incident_id"] for r in rows}) == 50
    assert {r["status"] for r in rows} == {"succeeded"}, [r["error"] for r in rows if r["error"]]
    assert {r["attempts"] for r in rows} == {1}  # none interrupted, none run twice
    assert len({r["node"] for r in rows}) >= 2, "the work was not shared"


async def test_one_incidents_events_sent_to_alternate_nodes_run_one_at_a_time_in_order(
    cluster: tuple[MakeNodes, Any], session: aiohttp.ClientSession
) -> None:
    make, jobs = cluster
    a, b = await make(2)
    await start(session, a, b)
    sent = [
        (a, pd_event("incident.triggered", "QORDER", title="slow 2")),
        (b, pd_event("incident.acknowledged", "QORDER")),
        (a, pd_event("incident.acknowledged", "QORDER")),
        (b, pd_event("incident.resolved", "QORDER")),
    ]
    for node, body in sent:
        assert await node.deliver(session, body) == 202
    await until(lambda: all_final(jobs, 4), "the incident's four jobs", 180, POLL)
    rows = await jobs()
    assert [r["playbook"] for r in rows] == [
        "provision",
        "refresh_and_update",
        "refresh_and_update",
        "teardown",
    ]
    assert {r["status"] for r in rows} == {"succeeded"}, [r["error"] for r in rows]
    for earlier, later in itertools.pairwise(rows):
        assert later["started_at"] >= earlier["finished_at"], "two jobs of one stack overlapped"
    for node in (a, b):
        assert "locked" not in node.log_path.read_text().lower()


async def test_a_stack_made_on_one_node_with_a_secret_is_refreshed_and_destroyed_by_another(
    cluster: tuple[MakeNodes, Any], session: aiohttp.ClientSession
) -> None:
    make, jobs = cluster
    a, b = await make(2)
    await start(session, a)
    assert await a.deliver(session, pd_event("incident.triggered", "QMOVE", title="x 0")) == 202
    await until(lambda: all_final(jobs, 1), "the stack on node A", 120, POLL)
    a.stop()
    await start(session, b)  # its data dir is empty: no workspace, no settings file
    assert not list(b.data_dir.glob("workspaces/*/Pulumi.*.*.yaml"))
    assert await b.deliver(session, pd_event("incident.acknowledged", "QMOVE")) == 202
    assert await b.deliver(session, pd_event("incident.resolved", "QMOVE")) == 202
    await until(lambda: all_final(jobs, 3), "refresh, update and destroy on node B", 120, POLL)
    rows = await jobs()
    assert [r["status"] for r in rows] == ["succeeded"] * 3, [r["error"] for r in rows]
    assert rows[0]["node"] == a.id and {r["node"] for r in rows[1:]} == {b.id}
    assert '"token": "[secret]"' in rows[1]["outputs"] or '"token":"[secret]"' in rows[1]["outputs"]
    assert TOKEN not in b.log_path.read_text() and TOKEN not in rows[1]["outputs"]


async def test_a_node_killed_mid_update_has_its_job_finished_by_another(
    cluster: tuple[MakeNodes, Any], session: aiohttp.ClientSession
) -> None:
    make, jobs = cluster
    a, b = await make(2)
    await start(session, a)
    assert await a.deliver(session, pd_event("incident.triggered", "QKILL", title="slow 8")) == 202

    async def creating() -> bool:
        rows = await jobs()
        return (
            bool(rows)
            and rows[0]["status"] == "running"
            and bool(
                [
                    e
                    for e in a.events("pulumi.engine")
                    if e.get("type") == "resource_pre_event"
                    and "Slow" in str(e.get("resource_type"))
                ]
            )
        )

    await until(creating, "node A's update to be under way", 60, POLL)
    await start(session, b)
    a.kill_machine()
    killed = time.monotonic()
    await until(lambda: all_final(jobs, 1), "node B to finish the job", 120, POLL)
    failover = time.monotonic() - killed
    [job] = await jobs()
    assert job["status"] == "succeeded", job["error"]
    assert job["node"] == b.id and job["attempts"] == 2 and job["fence"] >= 2
    assert b.events("job.recovering"), "node B did not repair the stack first"
    bearer = {"Authorization": f"Bearer {API_TOKEN}"}
    async with session.get(f"{b.url}/jobs/{job['id']}", headers=bearer) as r:
        assert (await r.json())["node"] == b.id  # the API says who ran it
    # No stale lock: the stack takes the incident's next operations.
    assert await b.deliver(session, pd_event("incident.acknowledged", "QKILL")) == 202
    await until(lambda: all_final(jobs, 2), "the next job on the recovered stack", 120, POLL)
    assert (await jobs())[1]["status"] == "succeeded", (await jobs())[1]["error"]
    print(f"failover: node killed -> its job finished on another node in {failover:.1f}s")


async def test_a_delivery_sent_to_two_nodes_at_once_makes_one_job(
    cluster: tuple[MakeNodes, Any], session: aiohttp.ClientSession
) -> None:
    make, jobs = cluster
    a, b = await make(2)
    await start(session, a, b)
    for i in range(10):
        body = pd_event("incident.annotated", f"QDUP{i}")
        webhook_id = uuid.uuid4().hex
        statuses = await asyncio.gather(
            a.deliver(session, body, webhook_id), b.deliver(session, body, webhook_id)
        )
        assert all(200 <= s < 300 for s in statuses), statuses
    await until(lambda: all_final(jobs, 10), "the ten jobs", 60, POLL)
    rows = await jobs()
    assert len(rows) == 10 and len({r["incident_id"] for r in rows}) == 10


async def test_a_database_restart_loses_nothing_acknowledged(
    cluster: tuple[MakeNodes, Any],
    session: aiohttp.ClientSession,
    postgres_server: PostgresServer,
) -> None:
    make, jobs = cluster
    a, b = await make(2)
    await start(session, a, b)
    acknowledged: list[str] = []
    answers: list[int] = []
    stop = asyncio.Event()

    async def flood() -> None:
        i = 0
        while not stop.is_set():
            node = (a, b)[i % 2]
            incident = f"QOUT{i:04d}"
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                status = await node.deliver(session, pd_event("incident.annotated", incident))
                answers.append(status)
                if 200 <= status < 300:
                    acknowledged.append(incident)
            i += 1
            await asyncio.sleep(0.02)

    flooding = asyncio.create_task(flood())
    try:
        await asyncio.sleep(1)
        postgres_server.pause()
        await asyncio.sleep(3)
        postgres_server.resume()
        await asyncio.sleep(3)
    finally:
        stop.set()
        await flooding
    assert 503 in answers, "the outage never showed"
    assert set(answers) <= {202, 503}, set(answers)

    async def done() -> bool:
        rows = await jobs()
        finished = {r["incident_id"] for r in rows if r["status"] == "succeeded"}
        return set(acknowledged) <= finished

    await until(done, "every acknowledged delivery's job", 60, POLL)
    for node in (a, b):  # both recover, without a restart (an idle worker may still be in its
        # store backoff, up to 5 s, and says so in /readyz until its next store call succeeds)

        async def ready(node: Node = node) -> bool:
            async with session.get(f"{node.url}/readyz") as response:
                return response.status == 200

        await until(ready, f"{node.url} ready again", 15, POLL)


async def test_the_reaper_runs_on_one_node_and_moves_when_it_dies(
    cluster: tuple[MakeNodes, Any], session: aiohttp.ClientSession
) -> None:
    make, _ = cluster
    a, b = await make(2)
    await start(session, a, b)

    async def one_leads() -> bool:
        return len([n for n in (a, b) if n.events("reaper.leading")]) == 1 and all(
            n.events("reaper.leading") or n.events("reaper.standby") for n in (a, b)
        )

    await until(one_leads, "one leader and one standby", 30, POLL)
    leader, standby = (a, b) if a.events("reaper.leading") else (b, a)
    await asyncio.sleep(2)  # several passes later, still one leader
    assert not standby.events("reaper.leading")
    leader.kill_machine()

    async def moved() -> bool:
        return bool(standby.events("reaper.leading"))

    started = time.monotonic()
    await until(moved, "the standby to lead", 30, POLL)
    print(f"leadership moved in {time.monotonic() - started:.1f}s")


async def test_on_pulumis_postgres_backend_stacks_are_tagged_listed_swept_and_exported(
    cluster: tuple[MakeNodes, Any], session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    make, jobs = cluster
    [node] = await make(1)
    await start(session, node, orphan_sweep_interval="1")
    assert (
        await node.deliver(session, pd_event("incident.triggered", "QPGSTATE", title="x 0")) == 202
    )
    await until(lambda: all_final(jobs, 1), "the stack", 120, POLL)
    [provisioned] = await jobs()
    stack = provisioned["stack"]
    assert provisioned["status"] == "succeeded", provisioned["error"]
    tags = pulumi(node, tmp_path, "stack", "tag", "ls", "--json", "--stack", stack)
    assert tags["responder:incident"] == "QPGSTATE", tags
    # A stack no incident owns, made in the shared backend behind responder's back.
    pulumi(node, tmp_path, "stack", "init", "orphan-pg", parse=False)
    bearer = {"Authorization": f"Bearer {API_TOKEN}"}
    async with session.get(f"{node.url}/stacks", headers=bearer) as response:
        listed = {s["stack"]: s for s in (await response.json())["stacks"]}
    assert listed[stack]["in_backend"] is True
    assert listed["orphan-pg"]["status"] == "unknown to the store"

    async def swept() -> bool:
        rows = await jobs()
        return any(r["stack"] == "orphan-pg" and r["status"] == "succeeded" for r in rows)

    await until(swept, "the orphan to be reaped", 60, POLL)
    names = [s["name"] for s in pulumi(node, tmp_path, "stack", "ls", "--json")]
    assert "orphan-pg" not in names and stack in names
    assert list((node.data_dir / "postmortem").rglob("*orphan-pg*")), "no postmortem export"


def pulumi(node: Node, tmp_path: Path, *args: str, parse: bool = True) -> Any:
    """The CLI against the node's backend, in a workspace of the playbooks' project."""
    workspace = tmp_path / "cli"
    workspace.mkdir(exist_ok=True)
    (workspace / "Pulumi.yaml").write_text("name: multinode\nruntime: python\n")
    env = {
        **os.environ,
        "PULUMI_BACKEND_URL": node.pulumi_backend,
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_HOME": str(tmp_path / "pulumi-home"),
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "pulumi"), "--non-interactive", *args],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout) if parse else done.stdout
