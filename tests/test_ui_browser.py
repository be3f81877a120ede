"""The web page in Debian's Chromium (Playwright), against a live daemon with the real pulumi CLI:
deliveries appear, a job's steps show as they finish, an approval goes through the button, a
`<script>` title stays text. With UPDATE_SCREENSHOTS=1, saves the README's screenshots to
docs/screenshots/ (not on every run: a run of the suite leaves the checkout as it found it)."""

import asyncio
import os
import stat
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from playwright.async_api import Browser, Dialog, Page, async_playwright, expect
from playwright.async_api import Error as PlaywrightError

from responder.playbook import Context, Playbook, on, playbook
from responder.store import JobStatus
from tests.helpers import API_TOKEN, REPO, Client, ProbeTarget, marked_processes, pd_event

MakeClient = Callable[..., Awaitable[Client]]
SCREENSHOTS = REPO / "docs" / "screenshots"
UPDATE_SCREENSHOTS = os.environ.get("UPDATE_SCREENSHOTS") == "1"
PNG = b"\x89PNG\r\n\x1a\n"
CHROMIUM = "/usr/bin/chromium"  # Debian's (scripts/install-test-services); no browser download
HOSTILE = "<script>window.owned = 1; alert('owned')</script> checkout 5xx"
WAIT_MS = 180_000  # real pulumi operations on a shared 2-core machine
# What a page, a click or an assertion may take on that machine (Playwright's defaults: 30 s for
# navigation and actions, 5 s for `expect`): generous, and still a failure long before the test's
# own timeout.
UI_WAIT_MS = 60_000
BROWSER_VARIABLE = "PYTEST_RESPONDER_BROWSER"
SHOWN_JOB = """() => document.readyState === "loading" ? null : [
  document.getElementById("job-status").textContent,
  document.querySelectorAll("#steps tr.step").length,
]"""
expect.set_options(timeout=UI_WAIT_MS)


def lifecycle() -> list[Playbook]:
    @playbook(idle_ttl=6 * 3600, max_age=24 * 3600)
    @on("incident.triggered")
    async def provision(ctx: Context) -> None:
        """Up the incident's diagnostics stack."""
        await ctx.stack.set_config(ctx.incident_config())
        await ctx.stack.up()

    @playbook(allow_destroy=True, approve_destroy=True)
    @on("incident.resolved")
    async def teardown(ctx: Context) -> None:
        """Destroy the incident's stack once someone approves the plan."""
        await ctx.stack.destroy(remove=True)

    return [provision, teardown]


@pytest.fixture
async def browser(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Browser]:
    """Chromium for one test; every process of it (driver, browser, renderers) gone after it."""
    marker = uuid.uuid4().hex  # inherited by the driver and every process it starts
    monkeypatch.setenv(BROWSER_VARIABLE, marker)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, timeout=UI_WAIT_MS)
        try:
            yield launched
        finally:
            await launched.close()
    for _ in range(100):
        if not (left := browser_processes(marker)):
            break
        await asyncio.sleep(0.1)
    assert not left, left


def browser_processes(marker: str) -> dict[int, list[str]]:
    """The live Playwright driver and Chromium processes of the `browser` fixture with `marker`
    (the daemon's pulumi processes inherit the marker too, and end on their own schedule)."""
    return {
        pid: args
        for pid, args in marked_processes(BROWSER_VARIABLE, marker).items()
        if "chrom" in args[0] or "playwright" in " ".join(args)
    }


async def new_page(browser: Browser) -> tuple[Page, list[str]]:
    """A page in a fresh context, and the dialogs any script on it opened (none should)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(UI_WAIT_MS)
    page = await context.new_page()
    dialogs: list[str] = []

    async def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", dismiss)
    return page, dialogs


async def screenshot(page: Page, name: str) -> None:
    """A full-page screenshot, saved for the README if asked (UPDATE_SCREENSHOTS=1), readable by
    all like the rest of the checkout (the daemon's umask would make it 0600)."""
    image = await page.screenshot(full_page=True)
    assert image.startswith(PNG)
    if UPDATE_SCREENSHOTS:
        path = SCREENSHOTS / name
        path.write_bytes(image)
        path.chmod(0o644)


async def shown_job(page: Page) -> tuple[str, int]:
    """The job page's status and number of steps, read together from one loaded document; ("", 0)
    while the page is reloading itself (two reads could straddle a reload and disagree)."""
    try:
        shown = await page.evaluate(SHOWN_JOB)
    except PlaywrightError:  # the reload replaced the document under the evaluation
        return "", 0
    return (shown[0], shown[1]) if shown else ("", 0)


async def job_ids(client: Client, incident: str) -> list[int]:
    return [j.id for j in await client.daemon.store.list_jobs(incident_id=incident)]


@pytest.mark.pulumi
async def test_a_delivery_its_steps_and_an_approval_through_the_page(
    make_client: MakeClient, probe_target: ProbeTarget, browser: Browser
) -> None:
    client = await make_client(lifecycle(), probe_url=probe_target.url)
    url = str(client.http.make_url("/ui/"))
    page, dialogs = await new_page(browser)
    decisions: list[str] = []  # every approve / reject / cancel the page sent
    page.on("request", lambda r: decisions.append(r.url) if r.method == "POST" else None)
    await page.goto(url)
    await expect(page.locator("#incidents")).to_contain_text("No incident")

    # A signed delivery: its incident appears, its title shown as text.
    body = pd_event("incident.triggered", "QBROWSER", title=HOSTILE)
    assert (await client.deliver(body, "wh-browser-t")).status == 202
    [job_id] = await job_ids(client, "QBROWSER")
    await page.goto(f"{url}jobs/{job_id}")
    # The job's page reloads itself while the job runs: record what it showed each time.
    seen: list[tuple[str, int]] = []
    deadline = asyncio.get_running_loop().time() + WAIT_MS / 1000
    while asyncio.get_running_loop().time() < deadline:
        status, count = await shown_job(page)
        if status:
            seen.append((status, count))
        if status == "succeeded":
            break
        await asyncio.sleep(0.25)
    job = await client.daemon.store.get_job(job_id)
    assert job is not None and job.status == JobStatus.SUCCEEDED, job and job.error
    assert seen[-1] == ("succeeded", len(job.steps))
    assert {s for s, _ in seen} & {"queued", "running"}, seen  # it was watched while running
    counts = [count for _, count in seen]
    assert counts == sorted(counts) and counts[0] < counts[-1], (
        counts
    )  # steps came in as they ended
    for step in job.steps:
        await expect(page.locator("#steps")).to_contain_text(step.step)
    await expect(page.locator(".title")).to_have_text(HOSTILE)
    await screenshot(page, "job.png")

    await page.goto(url)
    row = page.locator("tr.incident", has_text="QBROWSER")
    await expect(row.locator(".title")).to_have_text(HOSTILE)
    await expect(row).to_contain_text("pagerduty")
    await expect(row).to_contain_text("checkout-api (prod)")
    await expect(row).to_contain_text("live")
    stack_row = page.locator("#stacks tr.stack")
    await expect(stack_row).to_have_count(1)
    await expect(stack_row).to_contain_text("6h 00m")  # idle TTL, with its deadline
    await expect(stack_row).to_contain_text("1d 00h")  # maximum age
    await screenshot(page, "incidents.png")

    # The resolve's destroy waits for approval; the button does nothing without the token.
    body = pd_event("incident.resolved", "QBROWSER", title=HOSTILE)
    assert (await client.deliver(body, "wh-browser-r")).status == 202
    teardown = max(await job_ids(client, "QBROWSER"))
    await client.wait_for_jobs(incident_id="QBROWSER", settled=(JobStatus.AWAITING_APPROVAL,))
    await page.goto(url)
    approval = page.locator(f'article.approval[data-job-id="{teardown}"]')
    await expect(approval.locator("table.plan")).to_contain_text("delete")
    approve = approval.locator('button[data-action="approve"]')
    await expect(approve).to_be_disabled()
    await expect(page.locator("#token-saved")).to_be_hidden()
    await approve.click(force=True)  # even forced, a disabled button sends nothing (see the end)
    await screenshot(page, "approval.png")

    # The token, entered once, is kept by the tab (never in a URL) and sent by the button.
    await page.fill("#token-input", API_TOKEN)
    await page.click("#token-form button[type=submit]")
    await expect(page.locator("#token-saved")).to_be_visible()
    await expect(page.locator("#token-form")).to_be_hidden()
    assert API_TOKEN not in page.url
    assert await page.evaluate("sessionStorage.getItem('responder-api-token')") == API_TOKEN
    assert await page.evaluate("document.cookie") == ""  # the session cookie is HttpOnly
    async with page.expect_navigation():  # the page reloads to show the decision...
        await approval.locator('button[data-action="approve"]').click()
    # ...and still says what the button did, however long the answer took.
    await expect(page.locator("#action-status")).to_contain_text(f"Job {teardown}: approve sent")
    [*_, done] = await client.wait_for_jobs(incident_id="QBROWSER", timeout=WAIT_MS / 1000)
    assert done.id == teardown and done.status == JobStatus.SUCCEEDED, done.error
    await page.goto(f"{url}jobs/{teardown}")
    await expect(page.locator("#job-status")).to_have_text("succeeded")

    assert dialogs == [] and await page.evaluate("typeof window.owned") == "undefined"
    # One decision sent: the click with the token (the forced one without it sent nothing).
    approved = str(client.http.make_url(f"/jobs/{teardown}/approve"))
    assert [u for u in decisions if "/jobs/" in u] == [approved]
    for name in ("job.png", "incidents.png", "approval.png") if UPDATE_SCREENSHOTS else ():
        assert stat.S_IMODE((SCREENSHOTS / name).stat().st_mode) == 0o644, name


async def test_with_read_auth_the_page_asks_for_the_token_once(
    make_client: MakeClient, browser: Browser
) -> None:
    client = await make_client([], read_auth=True)
    url = str(client.http.make_url("/ui/"))
    page, dialogs = await new_page(browser)
    answer = await page.goto(f"{url}jobs/1")
    assert answer is not None and answer.status == 401
    await expect(page.locator("h1")).to_have_text("Sign in")

    await page.fill("#token-input", "not-the-api-token")
    await page.click("#token-form button[type=submit]")
    await expect(page.locator("#login-failed")).to_be_visible()
    await page.wait_for_load_state()  # the form's page is parsed; now its script has run too
    assert await page.evaluate("sessionStorage.getItem('responder-api-token')") is None

    await page.fill("#token-input", API_TOKEN)
    await page.click("#token-form button[type=submit]")
    await expect(page.locator("#error-message")).to_have_text("no such job")  # signed in: a 404
    assert page.url == f"{url}jobs/1"
    await page.goto(url)
    await expect(page.locator("#incidents")).to_contain_text("No incident")
    assert await page.evaluate("document.cookie") == ""
    # Another tab of the same browser has the cookie but not the token: it reads, the buttons wait.
    other = await page.context.new_page()
    await other.goto(url)
    await expect(other.locator("#token-form")).to_be_visible()
    await expect(other.locator("#token-saved")).to_be_hidden()
    assert dialogs == []
