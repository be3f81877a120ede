"""Which destinations a job's notes go to, rendered for each with its own idempotency key."""

import urllib.parse
import uuid
from collections.abc import Callable, Sequence

from responder.notes.note import Note, masked
from responder.notes.render import Subject, pagerduty_body, slack_body
from responder.store import Job, JobStatus, NewNote

PAGERDUTY = "pagerduty"
SLACK = "slack"


class NotePlanner:
    """Turns the notes a playbook buffered into the store's `NewNote`s for the configured
    destinations: PagerDuty only for incidents from PagerDuty V3 webhooks (others have no
    PagerDuty incident id), chat for every incident. No destination configured: nothing."""

    def __init__(
        self,
        *,
        pagerduty: bool,
        slack: bool,
        public_url: str,
        mask: Callable[[str], str],
        queued: Callable[[], None] = lambda: None,
    ) -> None:
        self.pagerduty = pagerduty
        self.slack = slack
        self.public_url = public_url.rstrip("/")
        self.mask = mask  # registered secrets out of every note's text and values
        self.queued = queued  # wakes the delivery loop once the notes are committed

    @property
    def enabled(self) -> bool:
        return self.pagerduty or self.slack

    def plan(self, job: Job, outcome: JobStatus, notes: Sequence[Note]) -> list[NewNote]:
        if not notes or not self.enabled:
            return []
        incident = job.event.incident
        subject = Subject(
            incident_id=job.incident_id,
            incident_title=incident.title if incident else "",
            incident_url=incident.html_url if incident else "",
            playbook=job.playbook,
            outcome=outcome.value,
            job_id=job.id,
            job_url=f"{self.public_url}/ui/jobs/{job.id}" if self.public_url else "",
        )
        to_pagerduty = self.pagerduty and job.event.source == "pagerduty" and bool(job.incident_id)
        planned: list[NewNote] = []
        for note in notes:
            shown = masked(note, self.mask)
            if to_pagerduty:
                key = uuid.uuid4().hex
                body = pagerduty_body(shown, subject, key)
                planned.append(NewNote(PAGERDUTY, job.incident_id, body, key))
            if self.slack:
                body = slack_body(shown, subject)
                planned.append(NewNote(SLACK, "", body, uuid.uuid4().hex))
        return planned


def incident_path(incident_id: str) -> str:
    """The incident id as one URL path segment."""
    return urllib.parse.quote(incident_id, safe="")
