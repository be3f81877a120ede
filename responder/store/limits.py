"""What a store refuses to record (naming the field), and free text made storable by every store."""

import re
from typing import overload

from responder.store import NewDelivery, NewJob, RecordRejected

# The bytes (UTF-8) of a delivery's id, event id, incident id or dedupe key: each is indexed, and
# PostgreSQL refuses an index entry over 2,704 bytes, failing every delivery of its group commit;
# SQLite would store it, so both refuse the same. Far above any id a source sends (PagerDuty's and
# Alertmanager's are under a hundred characters; Events v2 keys are cut to 255 characters).
MAX_KEY_BYTES = 1024


def refuse_unstorable(delivery: NewDelivery, jobs: list[NewJob], *, nul: bool) -> None:
    """Raise `RecordRejected` for text no store can hold (lone surrogates, e.g. from a header
    decoded with surrogateescape), a NUL character if the store cannot hold one (`nul`), or a key
    over `MAX_KEY_BYTES`. Every source validates first; this is the last line."""
    keys = [
        ("delivery id", delivery.id),
        ("event id", delivery.event_id),
        ("incident id", delivery.incident_id),
        ("dedupe key", delivery.dedupe_key),
    ]
    fields = [*keys, ("source", delivery.source), ("event type", delivery.event_type)]
    for job in jobs:
        fields += [("playbook", job.playbook), ("project", job.project), ("stack", job.stack)]
        fields += [("cancel_on event type", t) for t in job.cancel_on]
    for name, value in fields:
        try:
            value.encode()
        except UnicodeEncodeError:
            raise RecordRejected(f"the {name} is not valid Unicode text") from None
        if nul and "\0" in value:
            raise RecordRejected(f"the {name} contains a NUL character")
    for name, value in keys:
        if len(value.encode()) > MAX_KEY_BYTES:
            raise RecordRejected(f"the {name} is longer than {MAX_KEY_BYTES} bytes")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@overload
def storable(text: str) -> str: ...
@overload
def storable(text: None) -> None: ...
def storable(text: str | None) -> str | None:
    """Free text from outside (an exception's message quoting an event, a service's name, a reply's
    body) as every store can hold it: NUL (which PostgreSQL's text cannot hold) and lone surrogates
    (which UTF-8 cannot) become U+FFFD. Such text is shown (or, a service's name, counted under a
    cap, always as altered), never a key a delivery is found by, so it is stored altered rather than
    refused: a job whose result could not be written would stay running. Keys are refused instead
    (`refuse_unstorable`)."""
    if text is None:
        return None
    if "\0" in text:
        text = text.replace("\0", "\ufffd")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = _LONE_SURROGATE.sub("\ufffd", text)
    return text
