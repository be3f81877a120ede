"""The notes service as the daemon runs it: senders for the configured destinations, the loop."""

import contextlib
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable

import aiohttp
import yarl

from responder.config import Settings
from responder.logs import Redactor, get_logger
from responder.notes.delivery import NoteDelivery
from responder.notes.planner import PAGERDUTY, SLACK, NotePlanner
from responder.notes.senders import PagerDutySender, Sender, SlackSender
from responder.store import Store

log = get_logger("responder.notes")

# One attempt's limits: a slow service is a failed attempt (retried), not a stuck loop.
ATTEMPT_TIMEOUT = aiohttp.ClientTimeout(total=10, connect=5)


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """What the redactor must mask: the API token, and the webhook URL with the credential in its
    path or its query (Zulip's `?api_key=`): whole, as aiohttp normalises it (an error about the
    answer quotes that form), and each long path segment and query value, as an error may quote
    either."""
    url = settings.slack_webhook_url
    if not url:
        return (settings.pagerduty_api_token,) if settings.pagerduty_api_token else ()
    split = urllib.parse.urlsplit(url)
    parts = [*split.path.split("/"), *(v for _, v in urllib.parse.parse_qsl(split.query))]
    pieces = [part for part in parts if len(part) >= 16]
    found = (settings.pagerduty_api_token, url, str(yarl.URL(url)), *pieces)
    return tuple(dict.fromkeys(v for v in found if v))


@contextlib.asynccontextmanager
async def running_notes(
    settings: Settings,
    store: Store,
    redactor: Redactor,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[NotePlanner]:
    """The planner the runner queues notes with, and (when a destination is configured) the
    delivery loop sending them, until the context exits."""
    redactor.add(*secrets_of(settings))

    def mask(text: str) -> str:
        return str(redactor.redact(text))

    pagerduty = bool(settings.pagerduty_api_token)
    slack = bool(settings.slack_webhook_url)
    planner = NotePlanner(
        pagerduty=pagerduty, slack=slack, public_url=settings.public_url, mask=mask
    )
    if not planner.enabled:
        log.info("notes.disabled", reason="no PagerDuty API token and no chat webhook configured")
        yield planner
        return
    async with aiohttp.ClientSession(timeout=ATTEMPT_TIMEOUT) as session:
        senders: dict[str, Sender] = {}
        if pagerduty:
            senders[PAGERDUTY] = PagerDutySender(
                session,
                settings.pagerduty_api_url,
                settings.pagerduty_api_token,
                settings.pagerduty_from,
            )
        if slack:
            senders[SLACK] = SlackSender(session, settings.slack_webhook_url)
        delivery = NoteDelivery(
            store, senders, give_up=settings.note_give_up, mask=mask, clock=clock
        )
        planner.queued = delivery.notify
        delivery.start()
        log.info(
            "notes.enabled", destinations=sorted(senders), give_up_seconds=settings.note_give_up
        )
        try:
            yield planner
        finally:
            await delivery.stop()
