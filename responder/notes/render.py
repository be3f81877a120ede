"""A note rendered as each service's request body: PagerDuty's incident note and a Block Kit message."""

import json
import re
from dataclasses import dataclass

from responder.events import Event
from responder.notes.note import Note, cut

# PagerDuty's API reference gives no length limit for a note's content (only at most 2000 notes an
# incident); a note is a summary, so it is kept under this cautious bound, with its key line whole.
PAGERDUTY_MAX_CONTENT = 25_000
# Block Kit limits (Slack's reference): header text 150, section text 3000, 10 fields of 2000 each
# per section, 50 blocks; the top-level `text` (the notification and the whole message for
# Mattermost and Rocket.Chat, which ignore blocks) is truncated by Slack after 40 000.
HEADER_MAX = 150
SECTION_MAX = 3000
FIELDS_PER_SECTION = 10
FIELD_MAX = 2000
TEXT_MAX = 40_000
LINK_MAX = 1000  # an incident URL longer than this is shown as the incident id only
# A mass mention, also when `_`, `.`, `-` or `:` follow it: Mattermost strips those from a word's end.
MASS_MENTION = re.compile(r"@(?=(?:channel|all|here|everyone)(?![^\W_]))", re.IGNORECASE)
# The `]` of a Markdown link's label before its URL, or of a reference definition's at a line's
# start (a `]:` elsewhere is an IPv6 address's before its port, as in a job link: left whole).
LINK_TARGET = re.compile(r"\](?=\()|(?m:^ {0,3}\[[^\]\n]*\](?=:))")


@dataclass(frozen=True)
class Subject:
    """What a note is about: the incident, and the job that wrote it."""

    incident_id: str
    incident_title: str
    incident_url: str
    playbook: str
    outcome: str  # the job's final status
    job_id: int
    job_url: str  # empty when RESPONDER_PUBLIC_URL is not set


def key_line(key: str) -> str:
    """The line that carries a note's idempotency key, so the note can be found again."""
    return f"responder note {key}"


# A key line (`key_line` of a planner's uuid4().hex) on a line of its own.
_KEY_LINE = re.compile(r"^responder note [0-9a-f]{32}$", re.MULTILINE)


def is_own_note(event: Event) -> bool:
    """Whether the event is PagerDuty telling of a note responder wrote (its content holds a key
    line): `incident.annotated` is sent for every note, ours too, and a playbook run on it that
    notes again would never stop."""
    data = event.data
    content = data.get("content") if data.get("type") == "incident_note" else None
    return isinstance(content, str) and _KEY_LINE.search(content) is not None


def pagerduty_body(note: Note, subject: Subject, key: str) -> str:
    lines = [note.text, ""]
    lines += [f"{name}: {value}" for name, value in note.fields]
    lines += ["", f"Playbook {subject.playbook}, job {subject.job_id}: {subject.outcome}"]
    if subject.job_url:
        lines.append(f"Job page: {subject.job_url}")
    tail = "\n" + key_line(key)  # always whole: it is what a restart looks for
    content = cut("\n".join(lines), PAGERDUTY_MAX_CONTENT - len(tail)) + tail
    return json.dumps({"note": {"content": content}})


def slack_body(note: Note, subject: Subject) -> str:
    """Every text from the incident or the playbook is escaped (`_escape`): an incident titled
    `<!channel>` or `<https://evil|Job 1>` shows as written, and pings or links nothing."""
    title = subject.incident_title.strip() or subject.incident_id or "manual run"
    facts = [("Playbook", subject.playbook), ("Outcome", subject.outcome), *note.fields]
    blocks: list[dict[str, object]] = [
        {"type": "header", "text": {"type": "plain_text", "text": cut(title, HEADER_MAX)}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": cut(_escape(note.text), SECTION_MAX)},
        },
    ]
    for start in range(0, len(facts), FIELDS_PER_SECTION):
        chunk = facts[start : start + FIELDS_PER_SECTION]
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": cut(f"*{_escape(k)}*\n{_escape(v)}", FIELD_MAX)}
                    for k, v in chunk
                ],
            }
        )
    links = (
        [f"<{subject.job_url.replace('&', '&amp;')}|Job {subject.job_id}>"]
        if _linkable(subject.job_url)
        else [f"Job {subject.job_id}"]
    )
    incident = _escape(cut(subject.incident_id, HEADER_MAX))
    if _linkable(subject.incident_url):
        links.append(f"<{subject.incident_url.replace('&', '&amp;')}|Incident {incident}>")
    elif subject.incident_id:
        links.append(f"Incident {incident}")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(links)}]})
    # The notification's text, and the whole message for Mattermost and Rocket.Chat: escaped too.
    plain = [f"{title}: {note.text}", *(f"{k}: {v}" for k, v in facts)]
    if subject.job_url:
        plain.append(subject.job_url)
    return json.dumps({"text": cut(_escape("\n".join(plain)), TEXT_MAX), "blocks": blocks})


def _linkable(url: str) -> bool:
    """A URL from the event that can go inside `<url|label>`: http(s), short, and without the
    characters that would end the link early (`|`, `>`) or whitespace."""
    return (
        url.startswith(("https://", "http://"))
        and len(url) <= LINK_MAX
        and not any(c in url for c in "|<>")
        and not any(c.isspace() for c in url)
    )


def _escape(text: str) -> str:
    """Slack's mrkdwn control characters, escaped as its reference asks; and, broken by an
    invisible word joiner, what Mattermost and Rocket.Chat act on in plain text: mass mentions
    (`@channel`, `@all`, `@here`) and Markdown links and images (`[label](url)`, `![](url)`, a
    reference's definition `[label]: url`, without which `[text][label]` links nothing), which
    would show an incident title's link as the daemon's own or load its image. A backslash
    escape would show in Slack, which reads the same text."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return LINK_TARGET.sub(lambda m: m[0] + "\u2060", MASS_MENTION.sub("@\u2060", text))
