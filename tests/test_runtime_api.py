"""The JSON API's input checks and costs: ids and pagination in range, a page size that moves, run
parameters a playbook declares, and GET /stacks listing the backend at most once per interval."""

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from responder.playbook import Context, manual, on, playbook
from responder.stacks import CLIError
from tests.helpers import API_TOKEN, Client, pd_event

MakeClient = Callable[..., Awaitable[Client]]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
TOO_BIG = str(2**63)
HUGE = "9" * 5000


@on("incident.triggered")
async def nothing(_ctx: Context) -> None:
    """Touches no stack."""


@pytest.mark.parametrize(
    "path",
    [
        f"/jobs/{TOO_BIG}",
        f"/jobs/{HUGE}",
        "/jobs/-1",
        "/jobs/+1",
        "/jobs/1_0",
        "/jobs/%D9%A1",  # ARABIC-INDIC DIGIT ONE: int() takes it
        "/jobs/%201",
        f"/jobs?limit={TOO_BIG}",
        f"/jobs?offset={TOO_BIG}",
        f"/jobs?offset={HUGE}",
        "/jobs?limit=0",
        "/jobs?limit=-5",
    ],
)
async def test_out_of_range_or_odd_numbers_are_400(make_client: MakeClient, path: str) -> None:
    client = await make_client([nothing])
    answer = await client.http.get(path)
    assert answer.status == 400, await answer.text()
    assert (await answer.json())["status"] == 400


@pytest.mark.parametrize("action", ["approve", "reject", "cancel"])
@pytest.mark.parametrize("job_id", [TOO_BIG, HUGE, "-3", "%D9%A1"])
async def test_actions_on_out_of_range_ids_are_400(
    make_client: MakeClient, action: str, job_id: str
) -> None:
    client = await make_client([nothing])
    answer = await client.http.post(f"/jobs/{job_id}/{action}", headers=AUTH)
    assert answer.status == 400 and "job id" in (await answer.json())["error"]


async def test_pages_always_move_on(make_client: MakeClient) -> None:
    client = await make_client([nothing])
    for i in range(3):
        await client.deliver(pd_event("incident.triggered", f"QPAGE{i}"), f"page-{i}")
    await client.wait_for_jobs()
    seen: list[int] = []
    offset: int | None = 0
    while offset is not None:
        page = await (await client.http.get(f"/jobs?limit=1&offset={offset}")).json()
        assert page["next_offset"] is None or page["next_offset"] > offset
        seen += [j["id"] for j in page["jobs"]]
        offset = page["next_offset"]
    assert seen == [1, 2, 3]
    last = await (await client.http.get(f"/jobs?limit=50&offset={2**63 - 1}")).json()
    assert last["jobs"] == [] and last["next_offset"] is None


async def test_run_refuses_parameters_its_playbook_does_not_declare(
    make_client: MakeClient,
) -> None:
    @playbook(params=("request",))
    @manual
    async def check(_ctx: Context) -> None:
        """Declares one parameter."""

    client = await make_client([check])
    many = {f"p{i}": "x" for i in range(30)}
    answer = await client.http.post(
        "/playbooks/check/run", headers=AUTH, json={"params": {"request": "a", **many}}
    )
    assert answer.status == 400
    error = (await answer.json())["error"]
    assert "'p0'" in error and "and 10 more" in error and "accepts: request" in error
    for body in ({"incident_id": ["x"]}, {"incident_id": 5}, {"params": {"request": 1}}):
        answer = await client.http.post("/playbooks/check/run", headers=AUTH, json=body)
        assert answer.status == 400, body
    deep = b'{"params": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    answer = await client.http.post("/playbooks/check/run", headers=AUTH, data=deep)
    assert answer.status == 400
    answer = await client.http.post(
        "/playbooks/check/run", headers=AUTH, json={"params": {"request": "a"}}
    )
    assert answer.status == 202


async def test_concurrent_stack_listings_start_one_backend_listing(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client()
    ops = client.daemon.ops
    started: list[str] = []
    real = ops.list_stacks

    async def counted(project: str, program: str) -> list[str]:
        started.append(project)
        return await real(project, program)

    monkeypatch.setattr(ops, "list_stacks", counted)
    projects = sorted({p.project for p in client.daemon.playbook_order})
    answers = await asyncio.gather(*(client.http.get("/stacks") for _ in range(8)))
    assert [a.status for a in answers] == [200] * 8
    assert sorted(started) == projects  # one listing per project, shared by the eight

    await client.http.get("/stacks")
    assert sorted(started) == projects  # still fresh: no new listing

    from responder.web.stacks import LISTINGS

    client.app[LISTINGS].interval = 0.0  # now stale as soon as it ends
    await client.http.get("/stacks")
    assert sorted(started) == sorted(projects * 2)


async def test_a_failing_listing_is_a_503_and_is_not_retried_at_once(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client()
    calls: list[str] = []

    async def failing(project: str, program: str) -> list[str]:
        calls.append(project)
        raise CLIError("backend unreachable")

    monkeypatch.setattr(client.daemon.ops, "list_stacks", failing)
    answers = await asyncio.gather(*(client.http.get("/stacks") for _ in range(4)))
    assert [a.status for a in answers] == [503] * 4
    assert len(calls) == 1  # the first project's listing failed, once for all four
