"""Secrets that really reach a log line (exception messages, step errors, stdlib loggers) are masked."""

import logging
from collections.abc import Awaitable, Callable

from responder.logs import MASK, get_logger
from responder.playbook import Context, on
from responder.store import JobStatus
from tests.helpers import API_TOKEN, SECRET_A, Client, LogCapture, pd_event

MakeClient = Callable[..., Awaitable[Client]]
SECRET = "s3cr3t-config-value-7f1e"


def test_registered_secret_is_masked_in_every_kind_of_line(logs: LogCapture) -> None:
    logs.redactor.add(SECRET)
    log = get_logger("tests.redaction")
    try:
        raise RuntimeError(f"upstream rejected credentials {SECRET}")
    except RuntimeError:
        log.exception("call.failed", detail={"header": f"Bearer {SECRET}", "tried": [SECRET]})
    log.warning("step.failed", error=f"exit 1: password={SECRET};")
    # A library logging through the standard library (aiohttp, asyncio) goes through the same chain.
    logging.getLogger("aiohttp.server").error("Error handling request: %s", SECRET)

    assert SECRET not in logs.text
    failed, step, library = logs.lines()
    assert MASK in str(failed["exception"]) and "RuntimeError" in str(failed["exception"])
    assert failed["detail"] == {"header": f"Bearer {MASK}", "tried": [MASK]}
    assert step["error"] == f"exit 1: password={MASK};"
    assert library["event"] == f"Error handling request: {MASK}"


async def test_a_playbook_error_carrying_a_daemon_secret_is_masked_in_the_log(
    make_client: MakeClient, logs: LogCapture
) -> None:
    @on("incident.triggered")
    async def leaky(ctx: Context) -> None:
        """Fails with the daemon's own credentials in the message, as a careless client might."""
        raise RuntimeError(f"request failed: Authorization: Bearer {API_TOKEN} key={SECRET_A}")

    client = await make_client([leaky])
    assert (await client.deliver(pd_event("incident.triggered", "QLEAK"), "leak-1")).status == 202
    [job] = await client.wait_for_jobs()
    assert job.status == JobStatus.FAILED

    assert API_TOKEN not in logs.text and SECRET_A not in logs.text
    [traceback] = logs.events("job.playbook_error")
    assert f"Bearer {MASK} key={MASK}" in str(traceback["exception"])
    [failed] = logs.events("job.failed")
    assert (
        failed["error"] == f"RuntimeError: request failed: Authorization: Bearer {MASK} key={MASK}"
    )


async def test_a_secret_in_a_job_error_is_masked_in_the_api_answer(make_client: MakeClient) -> None:
    @on("incident.triggered")
    async def leaky(ctx: Context) -> None:
        """Fails with the API token in the message."""
        raise RuntimeError(f"request failed: Authorization: Bearer {API_TOKEN}")

    client = await make_client([leaky])
    await client.deliver(pd_event("incident.triggered", "QLEAK2"), "leak-2")
    [job] = await client.wait_for_jobs()
    for path in (f"/jobs/{job.id}", "/jobs", "/incidents/QLEAK2"):
        text = await (await client.http.get(path)).text()
        assert API_TOKEN not in text, path
    answer = await (await client.http.get(f"/jobs/{job.id}")).json()
    assert answer["error"] == f"RuntimeError: request failed: Authorization: Bearer {MASK}"
