"""The web page's handlers over the HTTP client: escaping, odd ids, CSP, refresh, and signing in."""

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from responder.events import Event, Incident
from responder.playbook import Context, on
from responder.store import Caps, NewDelivery, NewJob, StackRecord, StackStatus, StepRecord
from responder.store.records import NoteRecord, NoteStatus
from responder.store.sqlite import SQLiteStore
from responder.web.ui import data
from tests.helpers import API_TOKEN, Client, pd_event

MakeClient = Callable[..., Awaitable[Client]]
SCRIPT = '<script>alert("owned")</script>'
ESCAPED = "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;"


@on("incident.triggered")
async def nothing(_ctx: Context) -> None:
    """Touches no stack."""


async def test_titles_services_and_step_errors_from_outside_are_shown_as_text(
    make_client: MakeClient,
) -> None:
    client = await make_client([nothing])
    service = {"id": "PSVC", "type": "service_reference", "summary": "<b>checkout</b>"}
    body = pd_event("incident.triggered", "QESCAPE", title=SCRIPT, service=service)
    assert (await client.deliver(body, "wh-escape")).status == 202
    [job] = await client.wait_for_jobs(incident_id="QESCAPE")
    await client.daemon.store.add_step(
        job.id, StepRecord("up", job.created_at, 5.0, "failed", f"boom {SCRIPT}", {"create": 1})
    )

    for path in ("/ui/", f"/ui/jobs/{job.id}"):
        answer = await client.http.get(path)
        assert answer.status == 200 and answer.content_type == "text/html"
        page = await answer.text()
        assert SCRIPT not in page and "<b>checkout</b>" not in page
        assert ESCAPED in page
    overview = await (await client.http.get("/ui/")).text()
    assert "&lt;b&gt;checkout&lt;/b&gt;" in overview and "QESCAPE" in overview
    job_page = await (await client.http.get(f"/ui/jobs/{job.id}")).text()
    assert f"boom {ESCAPED}" in job_page and "create 1" in job_page


async def test_every_page_loads_its_script_from_a_file_under_a_policy_forbidding_inline_ones(
    make_client: MakeClient,
) -> None:
    client = await make_client([nothing])
    for path in ("/ui/", "/ui/jobs/1", "/ui/login"):
        answer = await client.http.get(path)
        policy = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        scripts = re.findall(r"<script[^>]*>", await answer.text())
        assert scripts == ['<script src="/ui/static/ui.js" defer>']
    script = await client.http.get("/ui/static/ui.js")
    assert script.status == 200 and script.content_type in (
        "application/javascript",
        "text/javascript",
    )
    assert "sessionStorage" in await script.text()


async def test_unknown_and_odd_job_ids_answer_4xx_pages_never_500(make_client: MakeClient) -> None:
    client = await make_client([nothing])
    unknown = await client.http.get("/ui/jobs/4242")
    assert unknown.status == 404 and "no such job" in await unknown.text()
    for odd in ("abc", "-1", "1e3", "+7", "99999999999999999999", "%F0%9F%92%A5", "%00", "%D9%A1"):
        answer = await client.http.get(f"/ui/jobs/{odd}")
        assert answer.status == 400, (odd, answer.status)
        assert answer.content_type == "text/html"
        assert "job id must be a whole number" in await answer.text()
    assert (await client.http.get("/ui/jobs/1/2")).status == 404
    assert (await client.http.get("/ui/nowhere")).status == 404
    for name in ("pages.py", "..%2Fpages.py", "%2E%2E%2F__init__.py", "templates"):
        assert (await client.http.get(f"/ui/static/{name}")).status == 404, name


async def test_the_page_reloads_itself_only_while_work_runs(make_client: MakeClient) -> None:
    release = asyncio.Event()

    @on("incident.triggered")
    async def waits(_ctx: Context) -> None:
        """Runs until the test lets it end."""
        await release.wait()

    client = await make_client([waits])
    assert 'data-refresh="0"' in await (await client.http.get("/ui/")).text()
    assert (await client.deliver(pd_event("incident.triggered", "QLIVE"), "wh-live")).status == 202
    for _ in range(100):
        [job] = await client.daemon.store.list_jobs(incident_id="QLIVE")
        if job.status == "running":
            break
        await asyncio.sleep(0.05)
    assert 'data-refresh="2"' in await (await client.http.get("/ui/")).text()
    assert 'data-refresh="2"' in await (await client.http.get(f"/ui/jobs/{job.id}")).text()
    release.set()
    [job] = await client.wait_for_jobs(incident_id="QLIVE")
    assert 'data-refresh="0"' in await (await client.http.get("/ui/")).text()
    assert 'data-refresh="0"' in await (await client.http.get(f"/ui/jobs/{job.id}")).text()


async def test_signing_in_takes_the_token_in_a_post_and_answers_a_strict_http_only_cookie(
    make_client: MakeClient,
) -> None:
    client = await make_client([nothing])
    wrong = await client.http.post(
        "/ui/login", data={"token": "not-the-token-at-all", "next": "/ui/jobs/1"}
    )
    assert wrong.status == 401 and "Set-Cookie" not in wrong.headers
    assert 'id="login-failed"' in await wrong.text()
    empty = await client.http.post("/ui/login", data={"next": "/ui/"})
    assert empty.status == 401 and "Set-Cookie" not in empty.headers

    right = await client.http.post(
        "/ui/login", data={"token": API_TOKEN, "next": "/ui/jobs/1"}, allow_redirects=False
    )
    assert right.status == 303 and right.headers["Location"] == "/ui/jobs/1"
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie
    assert API_TOKEN not in cookie
    for elsewhere in ("//evil.example/", "https://evil.example/", "/jobs/1", "/ui/../jobs"):
        sent = await client.http.post(
            "/ui/login", data={"token": API_TOKEN, "next": elsewhere}, allow_redirects=False
        )
        assert sent.status == 303 and sent.headers["Location"] == "/ui/", elsewhere


async def test_a_sign_in_form_body_python_cannot_decode_is_a_400(make_client: MakeClient) -> None:
    client = await make_client([nothing])
    for charset in ("bogus", "utf-99"):
        answer = await client.http.post(
            "/ui/login",
            data=f"token={API_TOKEN}".encode(),
            headers={"Content-Type": f"application/x-www-form-urlencoded; charset={charset}"},
        )
        assert answer.status == 400, (charset, answer.status)
        assert await answer.json() == {
            "error": "the sign-in form's body is malformed",
            "status": 400,
        }


async def test_another_site_cannot_sign_the_browser_in_or_out(make_client: MakeClient) -> None:
    client = await make_client([nothing], read_auth=True)
    for site in ("cross-site", "same-site", "none"):
        for path in ("/ui/login", "/ui/logout"):
            answer = await client.http.post(
                path,
                data={"token": API_TOKEN, "next": "/ui/"},
                headers={"Sec-Fetch-Site": site},
                allow_redirects=False,
            )
            assert answer.status == 403 and "Set-Cookie" not in answer.headers, (site, path)
            assert (await answer.json())[
                "error"
            ] == "signing in or out only from this daemon's own pages"
    bearer = {"Authorization": f"Bearer {API_TOKEN}"}
    document = await (await client.http.get("/openapi.json", headers=bearer)).json()
    for path in ("/ui/login", "/ui/logout"):  # the refusal is a documented answer
        assert "403" in document["paths"][path]["post"]["responses"], path
    # The daemon's own pages (and clients that are not browsers) still sign in and out.
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {}):
        answer = await client.http.post(
            "/ui/login",
            data={"token": API_TOKEN, "next": "/ui/"},
            headers=headers,
            allow_redirects=False,
        )
        assert answer.status == 303 and "responder_ui=" in answer.headers["Set-Cookie"]
        answer = await client.http.post("/ui/logout", headers=headers, allow_redirects=False)
        assert answer.status == 303 and 'responder_ui=""' in answer.headers["Set-Cookie"]


async def test_an_incident_row_lists_its_newest_jobs_and_counts_the_older_ones(
    make_client: MakeClient,
) -> None:
    @on("incident.resolved")
    async def resolved(_ctx: Context) -> None:
        """Touches no stack."""

    client = await make_client([nothing, resolved])
    total = data.JOBS_PER_INCIDENT + 3  # a flapping incident: triggered, resolved, triggered, ...
    for n in range(total):
        kind = ("incident.triggered", "incident.resolved")[n % 2]
        assert (await client.deliver(pd_event(kind, "QFLAP"), f"wh-flap-{n}")).status == 202
    jobs = await client.wait_for_jobs(incident_id="QFLAP")
    assert len(jobs) == total
    page = await (await client.http.get("/ui/")).text()
    shown = [int(i) for i in re.findall(r'href="/ui/jobs/(\d+)"', page)]
    assert shown == [j.id for j in reversed(jobs)][: data.JOBS_PER_INCIDENT]
    assert "and 3 older" in page


def titled_event(incident_id: str, kind: str) -> Event:
    return Event(
        id=f"e-{incident_id}-{kind}",
        source="pagerduty",
        type=kind,
        resource_type="incident",
        incident=Incident(id=incident_id, title=f"title of {incident_id}"),
    )


async def test_a_noisy_incident_does_not_crowd_the_others_out_of_the_list(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "responder.db")
    await store.open()
    try:
        for incident_id in ("QQUIET1", "QQUIET2", "QNOISY"):
            event = titled_event(incident_id, "incident.triggered")
            delivery = NewDelivery.of(event, id=f"d-{incident_id}", body=b"{}", received_at=1.0)
            await store.record_delivery(delivery, [NewJob("pb", "p", incident_id, event, 1)])
        # The noisy incident then owns the newest 600 jobs (annotations: no repeat triggers).
        noise = titled_event("QNOISY", "incident.annotated")
        delivery = NewDelivery.of(noise, id="d-noise", body=b"{}", received_at=2.0)
        await store.record_delivery(delivery, [NewJob("pb", "p", "QNOISY", noise, 1)] * 600)
        # An incident whose jobs are gone (pruned) but which still has a live stack.
        stack = StackRecord(
            "p", "left", "prog", "QSTACKONLY", "pb", "svc", StackStatus.LIVE, 1, 1, ""
        )
        assert await store.reserve_stack(stack, Caps()) is None

        view = await data.overview(store, now=10.0)
    finally:
        await store.close()
    rows = {row.id: row for row in view.incidents}
    assert [row.id for row in view.incidents] == ["QNOISY", "QQUIET2", "QQUIET1", "QSTACKONLY"]
    noisy = rows["QNOISY"]
    assert len(noisy.jobs) == data.JOBS_PER_INCIDENT and noisy.older_jobs == 601 - len(noisy.jobs)
    assert [j.id for j in noisy.jobs] == sorted((j.id for j in noisy.jobs), reverse=True)
    assert noisy.title == "title of QNOISY" and noisy.sources == ["pagerduty"]
    assert rows["QQUIET1"].status == "triggered" and rows["QQUIET1"].older_jobs == 0
    assert [s.stack for s in rows["QSTACKONLY"].stacks] == ["left"]


async def test_a_job_page_shows_its_notes_deliveries_with_errors_as_text(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client([nothing])
    body = pd_event("incident.triggered", "QNOTES", title="notes")
    assert (await client.deliver(body, "wh-notes")).status == 202
    [job] = await client.wait_for_jobs(incident_id="QNOTES")
    failed = NoteRecord(
        id=1,
        job_id=job.id,
        destination="pagerduty",
        target="QNOTES",
        body="{}",
        key="k1",
        status=NoteStatus.FAILED,
        attempts=4,
        created_at=job.created_at,
        not_before=0.0,
        last_error=f"given up: HTTP 500 {SCRIPT}",
    )
    sent = replace(failed, id=2, destination="slack", status=NoteStatus.SENT, last_error=None)

    async def job_notes(job_id: int) -> list[NoteRecord]:
        return [failed, sent] if job_id == job.id else []

    monkeypatch.setattr(client.daemon.store, "job_notes", job_notes)
    page = await (await client.http.get(f"/ui/jobs/{job.id}")).text()
    notes = page[page.index('id="notes"') :]
    assert "pagerduty" in notes and "failed" in notes and "slack" in notes and "sent" in notes
    assert f"given up: HTTP 500 {ESCAPED}" in notes and SCRIPT not in page
