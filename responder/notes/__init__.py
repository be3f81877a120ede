"""Notes written back to where the on-call engineer looks: the PagerDuty incident and chat.

A playbook's `ctx.note(...)` buffers a `Note`; the runner renders each for its configured
destinations (`planner`, `render`) and queues them with the job's result; the delivery loop
(`delivery`) sends them through `senders`, retried, given up after a bounded time, never twice.
"""

from responder.notes.delivery import NoteDelivery
from responder.notes.note import Note, make_note
from responder.notes.planner import NotePlanner
from responder.notes.senders import PagerDutySender, Sender, SlackSender

__all__ = [
    "Note",
    "NoteDelivery",
    "NotePlanner",
    "PagerDutySender",
    "Sender",
    "SlackSender",
    "make_note",
]
