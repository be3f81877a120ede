"""Generated requests for fuzzing the daemon, how to send them, and the properties every answer keeps.

Every generator takes a `random.Random`: the long run (`bench.fuzz`) uses a seeded one, the property
tests (`tests/test_fuzz_properties.py`) one that Hypothesis drives. A case starts from a valid body (the
fixtures, or an Alertmanager notification) with fresh ids, is mutated at any position with any JSON
type (deep nesting, numbers with thousands of digits, lone surrogates, NUL, non-BMP text), sometimes
truncated or corrupted byte-wise, and is then signed (or given the token) so it reaches the parser,
the matcher and the store. Header values may hold raw non-ASCII bytes, which the aiohttp client
cannot send, so such cases go out byte-exact over a plain socket.
"""

import asyncio
import contextlib
import copy
import dataclasses
import datetime
import functools
import gzip
import hashlib
import json
import random
import sqlite3
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from responder.sources import events_v2, pagerduty

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
PLAYBOOKS_DIR = Path(__file__).resolve().parent / "fuzz_playbooks"
# The playbooks of PLAYBOOKS_DIR, which a case may run by hand (each finishes at once).
RUNNABLE_PLAYBOOKS = ("fuzz_noop", "fuzz_delayed", "fuzz_coalesced")
KINDS = ("pagerduty", "events_v2", "alertmanager", "api")
MAX_BODY = 512 * 1024  # the daemon's default RESPONDER_MAX_BODY_BYTES
# An error answer may echo what was sent, never amplify it (issue 9: 510 KB in, 8.8 MB out).
ERROR_ANSWER_SLACK = 16 * 1024

T = TypeVar("T")
# aiohttp refuses a request line over 8190 bytes before any handler runs (a plain-text 400).
MAX_QUERY = 7000
CONTROL = bytes([*range(0x20), 0x7F])  # forbidden in header values: the HTTP parser rejects them


@dataclass(frozen=True)
class Keys:
    """The credentials the daemon under test was configured with."""

    pagerduty_secret: str = "fuzz-pagerduty-secret-0123456789abcdefghijklmnopqrstuvwxyz"
    routing_key: str = "fuzz0123456789abcdefghijklmnopqr"
    alertmanager_token: str = "fuzz-alertmanager-token-0123456789abcdef"
    api_token: str = "fuzz-api-token-0123456789abcdefghij"


@dataclass(frozen=True)
class Case:
    """One HTTP request, byte-exact, and how it was made (for failure reports)."""

    kind: str
    method: str
    path: str  # already percent-encoded, sent as is
    headers: tuple[tuple[str, bytes], ...]
    body: bytes
    notes: tuple[str, ...] = ()
    chunked: bool = False  # the body goes out with Transfer-Encoding: chunked

    @property
    def raw(self) -> bool:
        """Sent over a plain socket: the aiohttp client would re-encode a non-ASCII header value,
        and would not choose the chunked framing."""
        return self.chunked or any(not value.isascii() for _, value in self.headers)

    def describe(self, limit: int = 300) -> dict[str, Any]:
        body = self.body
        shown = body if len(body) <= limit else body[: limit // 2] + b"..." + body[-limit // 2 :]
        return {
            "kind": self.kind,
            "request": f"{self.method} {self.path[:limit]}",
            "headers": [f"{k}: {v[:limit]!r}" for k, v in self.headers],
            "body_bytes": len(body),
            "body": shown.decode("utf-8", "backslashreplace"),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Answer:
    """What came back: a status, or `unanswered` with the reason (timeout, reset...)."""

    status: int = 0
    content_type: str = ""
    body: bytes = b""
    unanswered: str = ""

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None


# -- generation -----------------------------------------------------------------------------------


class Raw:
    """JSON text inserted verbatim: numbers Python cannot print and nesting it cannot recurse into."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}, {len(self.text)} chars)"


ODD_STRINGS = (
    "",
    " ",
    ".",
    "..",
    "../../x",
    "/etc/passwd",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "x\udc80y",
    "\U0001f600",
    "\u202e\u0645\u0631\u062d\u0628\u0627",
    "\ufeff",
    "\uffff",
    "\u2028\u2029",
    "e\u0301\u0301\u0301",
    "\u0663\u0664",  # digits int() accepts
    "1_000",
    "%00%ff",
    "' OR 1=1 --",
    "${jndi:ldap://127.0.0.1/x}",
    "\r\n\t",
    "Q" * 81,
    "i" * 5000,
)
ODD_NUMBERS = (
    "-0",
    "1e999",
    "-1e999",
    "1.5e-400",
    "NaN",
    "Infinity",
    "-Infinity",
    "18446744073709551616",
    "-9223372036854775809",
    "9223372036854775807",
    "0.1e1",
    "1E+2",
)


def weighted(rng: random.Random, table: Sequence[tuple[int, T]]) -> T:
    roll = rng.randrange(sum(weight for weight, _ in table))
    for weight, value in table:
        if roll < weight:
            return value
        roll -= weight
    raise AssertionError("unreachable")


def odd_char(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return chr(rng.randrange(0x20, 0x7F))
    if kind == 1:
        return chr(rng.choice((*range(0x20), 0x7F)))
    if kind == 2:
        return chr(rng.randrange(0x80, 0x100))
    if kind == 3:
        return chr(rng.randrange(0x100, 0xD800))
    if kind == 4:
        return chr(rng.randrange(0xD800, 0xE000))  # a lone surrogate
    if kind == 5:
        return chr(rng.randrange(0x10000, 0x110000))
    if kind == 6:
        return rng.choice(("\x00", "\u2028", "\ufeff", "\ufffe", "\uffff", "\\", '"'))
    return chr(rng.randrange(0x300, 0x370))  # combining marks


def odd_text(rng: random.Random) -> str:
    kind = rng.randrange(10)
    if kind < 4:
        return rng.choice(ODD_STRINGS)
    if kind < 9:
        return "".join(odd_char(rng) for _ in range(rng.randrange(1, 24)))
    return rng.choice(("x", "\u00e9", "\U0001f600", "\ud800")) * rng.randrange(1000, 60_000)


def huge_number(rng: random.Random) -> Raw:
    digits = rng.choice((20, 39, 300, 4301, 5000, 20_000))
    shape = rng.randrange(4)
    if shape == 0:
        return Raw("9" * digits)
    if shape == 1:
        return Raw("-1" + "0" * digits)
    if shape == 2:
        return Raw("1." + "0" * digits + "1")
    return Raw("1e" + "9" * min(digits, 400))


def deep(rng: random.Random) -> Raw:
    depth = rng.choice((100, 1000, 3000, 10_000, 100_000))
    if rng.randrange(2) or depth > 50_000:
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "0" + "}" * depth)


def json_value(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value, odd ones favoured."""
    kind = weighted(
        rng,
        (
            (3, "null"),
            (3, "bool"),
            (4, "int"),
            (2, "float"),
            (3, "odd number"),
            (3, "huge number"),
            (8, "string"),
            (4, "list"),
            (4, "object"),
            (2, "deep"),
            (1, "long list"),
        ),
    )
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice((0, 1, -1, 2**31, 2**63 - 1, 2**63, -(2**64), rng.randrange(-1000, 1000)))
    if kind == "float":
        return rng.uniform(-1e9, 1e9)
    if kind == "odd number":
        return Raw(rng.choice(ODD_NUMBERS))
    if kind == "huge number":
        return huge_number(rng)
    if kind == "string":
        return odd_text(rng)
    if kind == "deep":
        return deep(rng)
    if kind == "long list":
        return Raw("[" + ",".join(["1"] * rng.randrange(1000, 150_000)) + "]")
    if depth >= 3:
        return odd_text(rng)
    size = rng.randrange(4)
    if kind == "list":
        return [json_value(rng, depth + 1) for _ in range(size)]
    return {odd_text(rng): json_value(rng, depth + 1) for _ in range(size)}


def encode(value: Any, ensure_ascii: bool) -> str:
    """JSON text of a document that may hold `Raw` parts (the json module cannot print those)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        members = (
            f"{encode(str(k), ensure_ascii)}:{encode(v, ensure_ascii)}" for k, v in value.items()
        )
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v, ensure_ascii) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ensure_ascii)


def to_bytes(value: Any, rng: random.Random, notes: list[str]) -> bytes:
    # ensure_ascii writes a lone surrogate as a valid "\ud800" escape; without it the surrogate
    # becomes bytes that are not UTF-8 at all. Both must be answered cleanly.
    ensure_ascii = rng.random() < 0.7
    if not ensure_ascii:
        notes.append("raw UTF-8 (not escaped)")
    return encode(value, ensure_ascii).encode("utf-8", "surrogatepass")


def _slots(value: Any, path: str = "$") -> list[tuple[Any, Any, str]]:
    """Every (container, key, path) of a document: the positions a mutation may hit."""
    found: list[tuple[Any, Any, str]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            found.append((value, key, f"{path}.{key}"))
            found += _slots(child, f"{path}.{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.append((value, index, f"{path}[{index}]"))
            found += _slots(child, f"{path}[{index}]")
    return found


def mutate(document: Any, rng: random.Random, notes: list[str]) -> Any:
    """Replace, delete, add or wrap a value at a random position (or the whole document)."""
    slots = _slots(document)
    if not slots or rng.random() < 0.05:
        replacement = json_value(rng)
        notes.append(f"document replaced by {replacement!r:.80}")
        return replacement
    container, key, where = rng.choice(slots)
    action = rng.randrange(10)
    if action < 6:
        container[key] = json_value(rng)
        notes.append(f"{where} = {container[key]!r:.80}")
    elif action < 8 and isinstance(container, dict):
        del container[key]
        notes.append(f"del {where}")
    elif action < 9 and isinstance(container[key], dict):
        name = rng.choice(("type", "id", "status", "labels", "alerts", "payload", odd_text(rng)))
        container[key][name] = json_value(rng)
        notes.append(f"{where}[{name!r:.40}] = {container[key][name]!r:.80}")
    else:
        container[key] = [container[key]] if rng.random() < 0.5 else {"x": container[key]}
        notes.append(f"{where} wrapped")
    return document


def corrupt(body: bytes, rng: random.Random, notes: list[str]) -> bytes:
    """Byte-level damage after serialisation: truncation, flipped or inserted bytes, a BOM."""
    action = rng.randrange(6)
    at = rng.randrange(len(body) + 1)
    if action == 0:
        notes.append(f"truncated at {at}")
        return body[:at]
    if action == 1 and body:
        at = min(at, len(body) - 1)
        notes.append(f"byte {at} flipped")
        return body[:at] + bytes([body[at] ^ (1 << rng.randrange(8))]) + body[at + 1 :]
    if action == 2:
        notes.append(f"\\xff inserted at {at}")
        return body[:at] + b"\xff" + body[at:]
    if action == 3:
        notes.append("BOM prefix")
        return b"\xef\xbb\xbf" + body
    if action == 4:
        replacement = rng.choice((b"", b" ", b"null", b"[]", b"{}", b'"x"', b"0", b"{", b"\x00"))
        notes.append(f"body replaced by {replacement!r}")
        return replacement
    notes.append("trailing garbage")
    return body + rng.choice((b"}", b"]", b",", b"x", b"\x00", b" {}"))


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


PD_FIXTURES = tuple(
    _fixture(name)
    for name in (
        "pd_v3_incident_triggered.json",
        "pd_v3_incident_resolved.json",
        "pd_v3_pagey_ping.json",
    )
)
EV2_FIXTURE = _fixture("events_v2_trigger.json")
PD_EVENT_TYPES = (
    "incident.triggered",
    "incident.acknowledged",
    "incident.resolved",
    "incident.reopened",
    "incident.escalated",
    "incident.priority_updated",
    "incident.annotated",
    "incident.unknown_type",
)


def incident_id(rng: random.Random, notes: list[str]) -> str:
    """Mostly fresh ids; some shared (events about one incident); some odd (path-like, huge)."""
    kind = rng.randrange(10)
    if kind < 3:
        return f"QFUZZ{rng.randrange(6)}"
    if kind < 4:
        odd = odd_text(rng)
        notes.append(f"incident id {odd!r:.80}")
        return odd
    return f"Q{uuid.UUID(int=rng.getrandbits(128)).hex[:14].upper()}"


def _hex(rng: random.Random, chars: int = 32) -> str:
    return f"{rng.getrandbits(chars * 4):0{chars}x}"


def pagerduty_document(rng: random.Random, notes: list[str]) -> Any:
    document = copy.deepcopy(rng.choice(PD_FIXTURES))
    event = document["event"]
    event["id"] = _hex(rng, 26)
    # Signed events older than the retention are refused as replays: date them now.
    event["occurred_at"] = datetime.datetime.now(datetime.UTC).isoformat()
    if event["event_type"] != "pagey.ping" and isinstance(event.get("data"), dict):
        event["event_type"] = rng.choice(PD_EVENT_TYPES)
        event["data"]["id"] = incident_id(rng, notes)
        event["data"]["status"] = event["event_type"].rpartition(".")[2]
    return document


def events_v2_document(rng: random.Random, keys: Keys, notes: list[str]) -> Any:
    document = copy.deepcopy(EV2_FIXTURE)
    document["routing_key"] = keys.routing_key
    document["event_action"] = rng.choice(("trigger", "trigger", "acknowledge", "resolve"))
    document["dedup_key"] = incident_id(rng, notes)
    if document["event_action"] != "trigger" and rng.random() < 0.5:
        del document["payload"]
    return document


def alertmanager_document(rng: random.Random) -> Any:
    status = rng.choice(("firing", "resolved"))
    labels = {
        "alertname": rng.choice(("HighLatency", "DiskFull", "5xx")),
        "service": rng.choice(("checkout", "cart", "check-out")),
        "severity": rng.choice(("critical", "warning", "page", "")),
    }
    alerts = [
        {
            "status": rng.choice((status, status, "resolved")),
            "labels": {**labels, "instance": f"db-{rng.randrange(100)}"},
            "annotations": {"summary": "p99 > 2s", "description": "latency"},
            "startsAt": f"2026-11-26T10:{rng.randrange(60):02d}:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.test/graph",
            "fingerprint": _hex(rng, 16),
        }
        for _ in range(rng.randrange(1, 4))
    ]
    return {
        "receiver": "responder",
        "status": status,
        "alerts": alerts,
        "groupLabels": {"alertname": labels["alertname"]},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.test",
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{labels["alertname"]}"}}',
        "truncatedAlerts": 0,
    }


def body_of(document: Any, rng: random.Random, notes: list[str]) -> bytes:
    """Serialise after 0-3 mutations, sometimes damaged byte-wise or made oversized."""
    for _ in range(weighted(rng, ((3, 0), (5, 1), (2, 2), (1, 3)))):
        document = mutate(document, rng, notes)
    body = to_bytes(document, rng, notes)
    if rng.random() < 0.12:
        body = corrupt(body, rng, notes)
    if rng.random() < 0.01:
        notes.append("oversized body")
        body += b" " * (MAX_BODY + 1 - len(body))
    return body


def content_type(rng: random.Random, notes: list[str]) -> tuple[tuple[str, bytes], ...]:
    value = weighted(
        rng,
        (
            (40, b"application/json"),
            (2, b"application/json; charset=utf-8"),
            (1, b"APPLICATION/JSON"),
            (1, b"text/plain"),
            (1, b""),
            (1, b"application/json; charset=\xff"),
            (1, b"application/\xc3\xa9"),
            (1, None),
        ),
    )
    if value != b"application/json":
        notes.append(f"content type {value!r}")
    return () if value is None else (("Content-Type", value),)


def header_value(rng: random.Random) -> bytes:
    """An odd header value: raw non-ASCII bytes (obs-text), UTF-8, long, or empty."""
    return weighted(
        rng,
        (
            (2, b"\xff"),
            (2, bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randrange(1, 12)))),
            (2, odd_text(rng)[:200].encode("utf-8", "surrogatepass").translate(None, CONTROL)),
            (1, b"x" * rng.randrange(100, 4000)),
            (1, b""),
            (1, b" \t "),
        ),
    )


def extra_headers(rng: random.Random, notes: list[str]) -> tuple[tuple[str, bytes], ...]:
    if rng.random() > 0.1:
        return ()
    name = rng.choice(("X-Fuzz", "Accept", "Content-Encoding", "X-Forwarded-For", "Cookie"))
    value = (
        rng.choice((b"gzip", b"deflate", b"br", b"identity", b"bogus"))
        if name == "Content-Encoding"
        else header_value(rng)
    )
    notes.append(f"{name}: {value[:40]!r}")
    return ((name, value),)


def pagerduty_case(rng: random.Random, keys: Keys) -> Case:
    notes: list[str] = []
    body = body_of(pagerduty_document(rng, notes), rng, notes)
    valid = pagerduty.sign(body, keys.pagerduty_secret).encode()
    roll = rng.randrange(20)
    signature: bytes | None = valid
    if roll == 0:
        signature = None
    elif roll == 1:
        signature = header_value(rng)
    elif roll == 2:
        signature = rng.choice((b"v1=", b"v1=" + _hex(rng, 64).encode(), b"v0=" + valid[3:]))
    elif roll == 3:  # a valid entry among junk ones still verifies
        signature = rng.choice((b"v1=junk, ", b"v1=\xff,", b"v2=x,")) + valid
    webhook_id = weighted(
        rng,
        (
            (12, f"fuzz-{_hex(rng, 16)}".encode()),
            (2, None),
            (2, f"fuzz-shared-{rng.randrange(4)}".encode()),
            (2, header_value(rng)),
        ),
    )
    if roll < 4:
        notes.append(("no signature", "odd signature", "bad signature", "junk entries")[roll])
    headers = content_type(rng, notes)
    if signature is not None:
        headers += (("X-PagerDuty-Signature", signature),)
    if webhook_id is not None:
        headers += (("X-Webhook-Id", webhook_id),)
    return Case(
        "pagerduty",
        "POST",
        "/webhooks/pagerduty",
        headers + extra_headers(rng, notes),
        body,
        tuple(notes),
    )


def events_v2_case(rng: random.Random, keys: Keys) -> Case:
    notes: list[str] = []
    document = events_v2_document(rng, keys, notes)
    if rng.random() < 0.05:
        document["routing_key"] = rng.choice((_hex(rng, 32), odd_text(rng)))
        notes.append("unknown routing key")
    body = body_of(document, rng, notes)
    headers = content_type(rng, notes) + extra_headers(rng, notes)
    return Case("events_v2", "POST", "/v2/enqueue", headers, body, tuple(notes))


def authorization(
    rng: random.Random, token: str, notes: list[str]
) -> tuple[tuple[str, bytes], ...]:
    roll = rng.randrange(20)
    if roll >= 4:
        return (("Authorization", f"Bearer {token}".encode()),)
    notes.append("bad authorization")
    if roll == 0:
        return ()
    value = rng.choice(
        (
            b"Bearer",
            b"Bearer ",
            b"Basic dXNlcjpwYXNz",
            f"bearer  {token} ".encode(),
            f"Bearer {token[:-1]}".encode(),
            b"Bearer \xff",
            b"Bearer " + header_value(rng),
            b"\xff" + token.encode(),
        )
    )
    return (("Authorization", value),)


def alertmanager_case(rng: random.Random, keys: Keys) -> Case:
    notes: list[str] = []
    body = body_of(alertmanager_document(rng), rng, notes)
    headers = authorization(rng, keys.alertmanager_token, notes) + content_type(rng, notes)
    return Case(
        "alertmanager",
        "POST",
        "/webhooks/alertmanager",
        headers + extra_headers(rng, notes),
        body,
        tuple(notes),
    )


def path_segment(rng: random.Random) -> str:
    """An id in a path: numbers small, huge, negative or odd; text percent-encoded or malformed."""
    return weighted(
        rng,
        (
            (4, str(rng.randrange(1, 60))),
            (1, "9" * rng.choice((19, 20, 30, 5000))),
            (1, str(2**63)),
            (1, "-1"),
            (1, rng.choice(("0", "00", "1_0", "+1", "%201", "1.0", "0x10", "nan"))),
            (3, urllib.parse.quote(odd_text(rng)[:300], safe="", errors="surrogatepass")),
            (1, rng.choice(("%ff", "%zz", "%", "%00", "%ed%a0%80", "..", "%2e%2e"))),
        ),
    )


def query_value(rng: random.Random) -> str:
    return weighted(
        rng,
        (
            (3, str(rng.randrange(0, 300))),
            (1, "9" * rng.choice((19, 20, 40, 4301))),
            (1, rng.choice(("-1", "0", "1_0", "%D9%A3", "1e3", "", "nan", "0x1"))),
            (2, urllib.parse.quote(odd_text(rng)[:300], safe="", errors="surrogatepass")),
            (1, rng.choice(("%ff", "%", "%00"))),
        ),
    )


def api_case(rng: random.Random, keys: Keys) -> Case:
    notes: list[str] = []
    target = weighted(
        rng,
        (
            (5, "jobs"),
            (3, "job"),
            (3, "incident"),
            (1, "stacks"),
            (1, "fixed"),
            (3, "run"),
            (3, "decide"),
            (1, "wrong"),
        ),
    )
    token = authorization(rng, keys.api_token, notes) if rng.random() < 0.7 else ()
    headers: tuple[tuple[str, bytes], ...] = ()
    body = b""
    method = "GET"
    if target == "jobs":
        params = [
            (name, query_value(rng) if name != "status" or rng.random() < 0.5 else "queued")
            for name in ("limit", "offset", "status", "incident", "x")
            if rng.random() < 0.4
        ]
        while sum(len(k) + len(v) for k, v in params) > MAX_QUERY:
            params.pop()
        path = "/jobs" + ("?" + "&".join(f"{k}={v}" for k, v in params) if params else "")
    elif target == "job":
        path = f"/jobs/{path_segment(rng)}"
    elif target == "incident":
        path = f"/incidents/{path_segment(rng)}"
    elif target == "stacks":
        path = f"/stacks?reconcile={rng.choice(('false', 'FALSE', 'False'))}"
    elif target == "fixed":
        path = rng.choice(("/", "/healthz", "/readyz", "/playbooks"))
    elif target == "run":
        method = "POST"
        name = rng.choice(RUNNABLE_PLAYBOOKS) if rng.random() < 0.8 else path_segment(rng)
        # Only short waits: a valid run waits for its job, and its job is a no-op.
        wait = rng.choice(("", "?wait=0", "?wait=0.2", "?wait=-1", "?wait=abc", "?wait=nan"))
        path = f"/playbooks/{name}/run{wait}"
        headers, body = token, run_body(rng, notes)
    elif target == "decide":
        method = "POST"
        decision = rng.choice(("approve", "reject", "cancel"))
        path = f"/jobs/{path_segment(rng)}/{decision}"
        headers = token
    else:
        method, path = rng.choice(
            (
                ("PUT", "/jobs"),
                ("DELETE", "/jobs/1"),
                ("GET", "/webhooks/pagerduty"),
                ("POST", "/nowhere"),
                ("GET", "/%ff"),
                ("PATCH", "/v2/enqueue"),
                ("HEAD", "/jobs"),
                ("OPTIONS", "/webhooks/alertmanager"),
            )
        )
    return Case("api", method, path, headers + extra_headers(rng, notes), body, tuple(notes))


def run_body(rng: random.Random, notes: list[str]) -> bytes:
    document: Any = {
        "incident_id": rng.choice(("..", ".", "../../x", "i" * 5000, odd_text(rng), "QRUN1")),
        "params": {"request": rng.choice(("timezone", "location"))},
    }
    if rng.random() < 0.3:
        del document["params"]
    if rng.random() < 0.5:
        return body_of(document, rng, notes)
    return to_bytes(document, rng, notes)


def framed(
    generate: Callable[[random.Random, Keys], Case],
) -> Callable[[random.Random, Keys], Case]:
    """Some requests with a body go out chunked: no Content-Length, so only the read enforces the limit."""

    def generate_framed(rng: random.Random, keys: Keys) -> Case:
        case = generate(rng, keys)
        if case.body and rng.random() < 0.05:
            return dataclasses.replace(case, chunked=True, notes=(*case.notes, "chunked"))
        return case

    return generate_framed


GENERATORS: dict[str, Callable[[random.Random, Keys], Case]] = {
    "pagerduty": framed(pagerduty_case),
    "events_v2": framed(events_v2_case),
    "alertmanager": framed(alertmanager_case),
    "api": framed(api_case),
}


def any_case(rng: random.Random, keys: Keys) -> Case:
    kind = weighted(rng, ((30, "pagerduty"), (25, "events_v2"), (25, "alertmanager"), (20, "api")))
    return GENERATORS[kind](rng, keys)


@functools.cache
def hazards(keys: Keys) -> dict[str, Case]:
    """The inputs issue 9 lists as answered with a 5xx or no answer at all: always sent."""

    def pd(body: bytes, **headers: bytes) -> Case:
        sent = {
            "Content-Type": b"application/json",
            "X-PagerDuty-Signature": pagerduty.sign(body, keys.pagerduty_secret).encode(),
            **{k.replace("_", "-"): v for k, v in headers.items()},
        }
        return Case("pagerduty", "POST", "/webhooks/pagerduty", tuple(sent.items()), body)

    def ev2(document: Any) -> Case:
        body = encode(document, True).encode()
        return Case(
            "events_v2", "POST", "/v2/enqueue", (("Content-Type", b"application/json"),), body
        )

    def am(body: bytes, token: bytes | None = None) -> Case:
        auth = token if token is not None else f"Bearer {keys.alertmanager_token}".encode()
        headers = (("Content-Type", b"application/json"), ("Authorization", auth))
        return Case("alertmanager", "POST", "/webhooks/alertmanager", headers, body)

    def api(method: str, path: str) -> Case:
        auth = (("Authorization", f"Bearer {keys.api_token}".encode()),)
        return Case("api", method, path, auth if method == "POST" else (), b"")

    rng = random.Random(9)
    pd_doc = pagerduty_document(rng, [])
    pd_doc["event"]["event_type"] = "incident.triggered"
    pd_doc["event"]["data"]["type"] = "incident"
    ev2_doc = events_v2_document(rng, keys, [])
    ev2_doc["event_action"] = "trigger"
    ev2_doc["payload"] = copy.deepcopy(EV2_FIXTURE["payload"])
    am_doc = alertmanager_document(rng)
    nested = Raw("[" * 100_000 + "]" * 100_000)
    huge = Raw("1" + "0" * 5000)

    def pd_with(path: tuple[str, ...], value: Any) -> bytes:
        document = copy.deepcopy(pd_doc)
        document["event"]["id"] = f"hazard-{'.'.join(path)}"
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return encode(document, True).encode()

    def with_key(document: Any, key: str, value: Any) -> Any:
        return {**copy.deepcopy(document), key: value}

    # 20 MB of JSON whitespace in 20 KB: decompressed, it must still meet the body limit.
    bomb = gzip.compress(b"{" + b" " * 20_000_000 + b"}", mtime=0)
    am_surrogate = copy.deepcopy(am_doc)
    am_surrogate["alerts"][0]["annotations"]["summary"] = "\ud800"
    am_surrogate["alerts"][0]["labels"]["instance"] = "\udfff"
    return {
        "pd deep nesting": pd(pd_with(("event", "data", "title"), nested)),
        "pd huge number": pd(pd_with(("event", "data", "number"), huge)),
        "pd lone surrogate title": pd(pd_with(("event", "data", "title"), "\ud800")),
        "pd lone surrogate incident id": pd(pd_with(("event", "data", "id"), "\udc80..")),
        "pd \\xff in signature": pd(
            pd_with(("event", "id"), "sig"), X_PagerDuty_Signature=b"v1=\xff"
        ),
        "pd \\xff in webhook id": pd(
            pd_with(("event", "id"), "whid"), X_Webhook_Id=b"fuzz-\xff\xfe"
        ),
        "pd \\xff in content type": pd(
            pd_with(("event", "id"), "ct"), Content_Type=b"application/json; x=\xff"
        ),
        "ev2 deep nesting": ev2(with_key(ev2_doc, "payload", {"custom_details": nested})),
        "ev2 huge number": ev2(with_key(ev2_doc, "dedup_key", huge)),
        "ev2 event_action list": ev2(with_key(ev2_doc, "event_action", [])),
        "ev2 payload list": ev2(with_key(ev2_doc, "payload", [])),
        "ev2 custom_details surrogate key": ev2(
            with_key(ev2_doc, "payload", {**ev2_doc["payload"], "custom_details": {"\ud800": "x"}})
        ),
        "ev2 lone surrogate dedup_key": ev2(with_key(ev2_doc, "dedup_key", "q\udb2b")),
        "ev2 links amplification": ev2(
            with_key(ev2_doc, "links", Raw("[" + ",".join(["1"] * 170_000) + "]"))
        ),
        "am deep nesting": am(encode(with_key(am_doc, "commonLabels", nested), True).encode()),
        "am huge number": am(encode(with_key(am_doc, "truncatedAlerts", huge), True).encode()),
        "am commonLabels list": am(encode(with_key(am_doc, "commonLabels", ["a"]), True).encode()),
        "am commonLabels string": am(encode(with_key(am_doc, "commonLabels", "a"), True).encode()),
        "am status list": am(
            encode({**am_doc, "alerts": [{**am_doc["alerts"][0], "status": []}]}, True).encode()
        ),
        "am lone surrogate": am(encode(am_surrogate, True).encode()),
        "am \\xff in authorization": am(encode(am_doc, True).encode(), b"Bearer \xff"),
        "am many alerts": am(
            encode(
                {
                    **am_doc,
                    "alerts": [
                        {**am_doc["alerts"][0], "fingerprint": f"{i:016x}"} for i in range(300)
                    ],
                },
                True,
            ).encode()
        ),
        "pd chunked oversized body": dataclasses.replace(
            pd(b"[" + b" " * (MAX_BODY + 1) + b"]"), chunked=True
        ),
        "pd gzip bomb": pd(bomb, Content_Encoding=b"gzip", X_Webhook_Id=b"fuzz-bomb"),
        "am content-encoding gzip, body not gzip": Case(
            "alertmanager",
            "POST",
            "/webhooks/alertmanager",
            (*am(b"{}").headers, ("Content-Encoding", b"gzip")),
            encode(am_doc, True).encode(),
        ),
        "api job id beyond 64 bits": api("GET", "/jobs/" + "9" * 20),
        "api limit beyond 64 bits": api("GET", "/jobs?limit=" + "9" * 20),
        "api offset beyond 64 bits": api("GET", "/jobs?offset=" + "9" * 20),
        "api cancel id beyond 64 bits": api("POST", "/jobs/" + "9" * 20 + "/cancel"),
        "api approve id beyond 64 bits": api("POST", "/jobs/" + "9" * 20 + "/approve"),
        "api cancel \\xff in authorization": Case(
            "api", "POST", "/jobs/1/cancel", (("Authorization", b"Bearer \xff"),), b""
        ),
        "api incident id surrogate": api("GET", "/incidents/%ed%a0%80"),
        "api incident id invalid utf-8": api("GET", "/incidents/%ff"),
        "api run deep nesting": Case(
            "api",
            "POST",
            "/playbooks/fuzz_noop/run",
            (("Authorization", f"Bearer {keys.api_token}".encode()),),
            ("[" * 100_000 + "]" * 100_000).encode(),
        ),
        "api run huge number": Case(
            "api",
            "POST",
            "/playbooks/fuzz_noop/run",
            (("Authorization", f"Bearer {keys.api_token}".encode()),),
            b'{"incident_id": ' + b"1" + b"0" * 5000 + b"}",
        ),
    }


# -- sending --------------------------------------------------------------------------------------


async def send(session: aiohttp.ClientSession, base: URL, case: Case, timeout: float) -> Answer:
    """Send a case and read the whole answer; byte-exact over a socket when aiohttp cannot."""
    try:
        async with asyncio.timeout(timeout):
            if case.raw:
                return await _send_raw(base, case)
            url = URL(f"{base}{case.path}", encoded=True)
            headers = {k: v.decode("ascii") for k, v in case.headers}
            async with session.request(
                case.method,
                url,
                data=case.body or None,
                headers=headers,
                skip_auto_headers=("Content-Type",),
                allow_redirects=False,
            ) as response:
                return Answer(response.status, response.content_type, await response.read())
    except TimeoutError:
        return Answer(unanswered=f"no answer within {timeout:g}s")
    except (aiohttp.ClientError, OSError) as e:
        return Answer(unanswered=f"{type(e).__name__}: {e}")


def _chunks(body: bytes, size: int = 65536) -> bytes:
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


async def _send_raw(base: URL, case: Case) -> Answer:
    framing = (
        b"Transfer-Encoding: chunked" if case.chunked else b"Content-Length: %d" % len(case.body)
    )
    head = [
        f"{case.method} {case.path} HTTP/1.1".encode(),
        f"Host: {base.host}:{base.port}".encode(),
        b"Connection: close",
        framing,
        *(name.encode() + b": " + value for name, value in case.headers),
    ]
    body = _chunks(case.body) if case.chunked else case.body
    return await send_bytes(base, b"\r\n".join(head) + b"\r\n\r\n" + body)


async def send_bytes(base: URL, request: bytes) -> Answer:
    """Write a request byte-exact on a new connection and read the answer until the server closes."""
    assert base.host is not None and base.port is not None
    reader, writer = await asyncio.open_connection(base.host, base.port)
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionError):  # an early answer (413) may close first
            await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return Answer(unanswered=f"no HTTP answer: {data[:100]!r}")
    content_type = ""
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-type":
            content_type = value.decode("latin-1").split(";")[0].strip()
    return Answer(int(parts[1]), content_type, body)


# -- properties -----------------------------------------------------------------------------------


@dataclass
class Acknowledged:
    """What a 2xx answer promised is in the store (see `missing`)."""

    delivery_ids: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)  # a duplicate may be known by its event id
    body_sha256: str | None = None
    incident_ids: list[str] = field(default_factory=list)  # alerts answered as duplicates
    job_ids: list[int] = field(default_factory=list)


def violations(case: Case, answer: Answer, *, allow_503: bool = False) -> list[str]:
    """The properties every answer keeps: answered, never a 5xx (a 503 only where a store outage
    may happen, and then JSON), errors JSON and not amplified, successes JSON."""
    if answer.unanswered:
        return [f"unanswered: {answer.unanswered}"]
    found = []
    document = answer.json()
    if answer.status >= 500 and not (
        allow_503 and answer.status == 503 and isinstance(document, dict)
    ):
        found.append(f"status {answer.status}")
    if case.method == "HEAD":  # the answer to HEAD has headers only
        return found
    if answer.status >= 400:
        if answer.content_type != "application/json" or not isinstance(document, dict):
            found.append(f"{answer.status} error is not a JSON object: {answer.body[:200]!r}")
        if len(answer.body) > len(case.body) + ERROR_ANSWER_SLACK:
            found.append(
                f"error answer of {len(answer.body)} bytes for a {len(case.body)}-byte body"
            )
    elif 200 <= answer.status < 300 and not isinstance(document, dict):
        found.append(f"{answer.status} answer is not a JSON object: {answer.body[:200]!r}")
    return found


def acknowledged(case: Case, answer: Answer) -> Acknowledged | None:
    """For a 2xx answer to a delivery or a manual run, what must now be in the store."""
    if not 200 <= answer.status < 300 or case.method != "POST":
        return None
    document = answer.json()
    if not isinstance(document, dict):
        return None
    ack = Acknowledged()
    jobs = document.get("jobs") or ([document["job"]] if "job" in document else [])
    ack.job_ids = [j for j in jobs if isinstance(j, int)]
    body_sha256 = hashlib.sha256(case.body).hexdigest()
    if case.kind == "pagerduty":
        ack.delivery_ids = [str(document.get("delivery_id"))]
        if document.get("status") == "duplicate":
            ack.event_ids = [str(document.get("event_id"))]
    elif case.kind == "events_v2":
        # The store keeps the body with its routing key (a credential) masked.
        stored = events_v2.parse(case.body).stored_body
        ack.body_sha256 = hashlib.sha256(stored).hexdigest()
    elif case.kind == "alertmanager":
        alerts = [a for a in document.get("alerts") or [] if isinstance(a, dict)]
        if any(a.get("status") != "duplicate" for a in alerts):
            ack.body_sha256 = body_sha256
        ack.incident_ids = [
            str(a.get("incident_id")) for a in alerts if a.get("status") == "duplicate"
        ]
        ack.job_ids = [j for a in alerts for j in a.get("jobs") or [] if isinstance(j, int)]
    elif not ack.job_ids:
        return None  # an API decision (approve/cancel) stores no new record
    return ack


# Lookup(column, value): whether the store has a row with that value; the columns used are
# deliveries.id, deliveries.event_id, deliveries.incident_id, deliveries.body_sha256 and jobs.id.
Lookup = Callable[[str, object], bool]


def missing(ack: Acknowledged, has: Lookup) -> list[str]:
    """What the answer promised but the store lacks (empty: all there)."""
    lost: list[str] = []
    for delivery_id in ack.delivery_ids:
        known_event = any(has("deliveries.event_id", e) for e in ack.event_ids)
        if not has("deliveries.id", delivery_id) and not known_event:
            lost.append(f"delivery {delivery_id!r}")
    if ack.body_sha256 is not None and not has("deliveries.body_sha256", ack.body_sha256):
        lost.append(f"delivery with body sha256 {ack.body_sha256[:16]}")
    lost += [f"incident {i!r}" for i in ack.incident_ids if not has("deliveries.incident_id", i)]
    lost += [f"job {j}" for j in ack.job_ids if not has("jobs.id", j)]
    return lost


def _sha256(body: bytes | str | None) -> str | None:
    if body is None:
        return None
    return hashlib.sha256(body.encode() if isinstance(body, str) else body).hexdigest()


def open_store(path: Path) -> sqlite3.Connection:
    """A read-only connection to the daemon's store, with `sha256(body)` for body lookups."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    db.create_function("sha256", 1, _sha256, deterministic=True)
    return db


def _body_digest(db: sqlite3.Connection) -> str:
    """SQL for the SHA-256 of a delivery's stored body, in either layout of the store: the body in
    the delivery row, or (since bodies are stored once each) in `payloads`, keyed by that digest."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(deliveries)")}
    if "payload" in columns:
        return "(SELECT p.digest FROM payloads AS p WHERE p.digest = deliveries.payload)"
    return "sha256(body)"


def live_lookup(db: sqlite3.Connection) -> Lookup:
    """Each lookup a query on the store as it is now (for a store that keeps changing)."""
    body_digest = _body_digest(db)

    def has(column: str, value: object) -> bool:
        table, _, name = column.partition(".")
        expression = body_digest if name == "body_sha256" else name
        sql = f"SELECT 1 FROM {table} WHERE {expression} = ? LIMIT 1"
        return db.execute(sql, (value,)).fetchone() is not None

    return has


def snapshot_lookup(db: sqlite3.Connection) -> Lookup:
    """Every lookup answered from one read of the store (for checking many answers at once)."""
    columns: dict[str, set[object]] = {
        "deliveries.id": set(),
        "deliveries.event_id": set(),
        "deliveries.incident_id": set(),
        "deliveries.body_sha256": set(),
    }
    sql = f"SELECT id, event_id, incident_id, {_body_digest(db)} FROM deliveries"
    for row in db.execute(sql):
        for column, value in zip(columns.values(), row, strict=True):
            column.add(value)
    columns["jobs.id"] = {row[0] for row in db.execute("SELECT id FROM jobs")}

    def has(column: str, value: object) -> bool:
        return value in columns[column]

    return has
