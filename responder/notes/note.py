"""A playbook's note: a line of text and named values (outputs, findings), checked and bounded."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

MAX_NOTES = 10  # per job: a playbook noting in a loop must not flood the incident and the channel
MAX_TEXT = 2900  # fits one Slack section (3000) with room for its formatting
MAX_FIELDS = 20
MAX_NAME = 60
MAX_VALUE = 500


@dataclass(frozen=True)
class Note:
    text: str
    fields: tuple[tuple[str, str], ...] = ()


def make_note(text: str, fields: Mapping[str, object] | None = None) -> Note:
    """The note a playbook asked for; a wrong type is the playbook's error, raised where it called.
    Fields beyond the first 20 are dropped: a note is a summary, the job page holds the rest. The
    text and values are kept whole here: see `masked`."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a note needs non-empty text")
    if fields is not None and not isinstance(fields, Mapping):
        raise TypeError("a note's fields are a mapping of names to values")
    shown: list[tuple[str, str]] = []
    for name, value in list((fields or {}).items())[:MAX_FIELDS]:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a note's field names are non-empty strings, not {name!r}")
        shown.append((name, _text(value)))
    return Note(text.strip(), tuple(shown))


def masked(note: Note, mask: Callable[[str], str]) -> Note:
    """The note with secrets masked, then long text, names and values cut (with `…`). In that
    order: a cut first could split a secret, leaving a prefix the mask no longer recognises."""
    return Note(
        cut(mask(note.text), MAX_TEXT),
        tuple((cut(mask(k), MAX_NAME), cut(mask(v), MAX_VALUE)) for k, v in note.fields),
    )


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
