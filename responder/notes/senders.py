"""The two services a note goes to, each one HTTP request as its API documents it."""

import datetime
import email.utils
import re
from collections.abc import Mapping
from typing import Protocol

import aiohttp

from responder.notes.planner import incident_path
from responder.notes.render import key_line
from responder.store import NoteRecord


class Retry(Exception):
    """The attempt failed in a way worth trying again (5xx, 429, a timeout, no connection);
    `after`: the seconds the service asked to wait (Retry-After), if it did."""

    def __init__(self, error: str, after: float | None = None) -> None:
        super().__init__(error)
        self.after = after


class Refused(Exception):
    """The service refused the note for good (4xx other than 408 and 429): sending it again won't help."""


# PagerDuty's object ids are letters and digits. Anything else is refused before a request is made:
# an id of `.` or `..` survives percent-encoding and would move the request to another endpoint.
PAGERDUTY_ID = re.compile(r"[A-Za-z0-9]{1,64}")
ERROR_BODY = 200  # characters of a refusing answer kept as the error (the rest is not read)
LISTING_CHUNK = 64 * 1024


class Sender(Protocol):
    async def send(self, note: NoteRecord) -> None:
        """Send the note once; raise `Retry` or `Refused` when it was not taken."""

    async def already_sent(self, note: NoteRecord) -> bool:
        """Whether an earlier attempt's note is already there (False when the service can't tell)."""


class PagerDutySender:
    """Incident notes through PagerDuty's REST API v2: `POST /incidents/{id}/notes`, as the user the
    `From` header names, with an API token (`Authorization: Token token=...`)."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, token: str, sender: str
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.headers = {
            "Authorization": f"Token token={token}",
            "From": sender,
            "Accept": "application/vnd.pagerduty+json;version=2",
            "Content-Type": "application/json",
        }

    def _url(self, note: NoteRecord) -> str:
        if not PAGERDUTY_ID.fullmatch(note.target):
            raise Refused(f"{note.target[:80]!r} is not a PagerDuty incident id")
        return f"{self.base_url}/incidents/{incident_path(note.target)}/notes"

    async def send(self, note: NoteRecord) -> None:
        # No redirects: one would carry the token, the From user and the note to wherever it points.
        try:
            async with self.session.post(
                self._url(note), data=note.body, headers=self.headers, allow_redirects=False
            ) as answer:
                await judge(answer)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise Retry(_describe(e)) from None

    async def already_sent(self, note: NoteRecord) -> bool:
        """The incident's notes hold this one's key: an earlier attempt was taken, its answer lost.

        The answer is scanned for the key line as it streams in, never held whole: an incident
        takes up to 2000 notes. The key line is ASCII letters, digits and spaces, so its JSON
        encoding is itself. (The list is not paged: PagerDuty's own clients read it in one request.)"""
        headers = {k: v for k, v in self.headers.items() if k != "Content-Type"}
        wanted = key_line(note.key).encode()
        try:
            async with self.session.get(
                self._url(note), headers=headers, allow_redirects=False
            ) as answer:
                await judge(answer)
                if answer.content_type != "application/json":  # not the API: a proxy, a login page
                    raise Retry(f"listing the incident's notes: a {answer.content_type} answer")
                tail = b""
                async for chunk in answer.content.iter_chunked(LISTING_CHUNK):
                    if wanted in tail + chunk:
                        return True
                    tail = (tail + chunk)[-len(wanted) :]
                return False
        except (aiohttp.ClientError, TimeoutError) as e:
            raise Retry(f"listing the incident's notes: {_describe(e)}") from None


class SlackSender:
    """A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat): the message JSON POSTed
    to its URL. It has no idempotency key and no way to list what it took: see `already_sent`."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url  # carries the webhook's credential: never logged (the redactor has it)

    async def send(self, note: NoteRecord) -> None:
        headers = {"Content-Type": "application/json"}
        try:
            async with self.session.post(
                self.url, data=note.body, headers=headers, allow_redirects=False
            ) as answer:
                await judge(answer)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise Retry(_describe(e)) from None

    async def already_sent(self, note: NoteRecord) -> bool:
        return False  # an incoming webhook cannot be asked: a resumed note is sent again


async def judge(answer: aiohttp.ClientResponse) -> None:
    """2xx: taken. 429 and 5xx (and 408): try again, after the time the service asked for. Any other
    4xx (and a redirect, not followed): refused, with the start of the service's answer, of which
    no more is read than that: a service may answer with an endless body."""
    if 200 <= answer.status < 300:
        return
    text = (await _start_of(answer.content, ERROR_BODY * 4)).decode(errors="replace")[:ERROR_BODY]
    error = f"HTTP {answer.status}: {text}" if text else f"HTTP {answer.status}"
    if answer.status == 429 or answer.status >= 500 or answer.status == 408:
        raise Retry(error, retry_after(answer.headers))
    raise Refused(error)


async def _start_of(body: aiohttp.StreamReader, size: int) -> bytes:
    """Up to `size` bytes from the start of a body (`read(n)` may return fewer while more come)."""
    start = b""
    while len(start) < size and (more := await body.read(size - len(start))):
        start += more
    return start


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait: `Retry-After` (seconds or an HTTP date), else PagerDuty's `ratelimit-reset`
    (seconds until its rate limit resets); None if neither is there or readable. `headers` is
    aiohttp's case-insensitive mapping."""
    raw = headers.get("Retry-After")
    if raw is not None:
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        now = datetime.datetime.now(datetime.UTC)
        return max(0.0, (when - now).total_seconds()) if when.tzinfo else None
    reset = headers.get("ratelimit-reset")
    try:
        return max(0.0, float(reset)) if reset is not None else None
    except ValueError:
        return None


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
