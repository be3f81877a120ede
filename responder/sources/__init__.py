"""Sources, sans I/O: each turns one pager's request (headers, body, credentials) into a `Delivery`."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from responder.events import Event


class InvalidDelivery(ValueError):
    """The body or a header is not what this source accepts (a 400); `message` and `errors` say why
    and are shown to the sender."""

    def __init__(self, message: str, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.errors = list(errors) or [message]


class Unauthorized(Exception):
    """The sender did not prove it holds this source's credential (a 401); `reason` is logged."""

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        errors: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.errors = list(errors) or [message]
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Arrival:
    """One event of a delivery, with how a repeat of it is recognised (see `store.NewDelivery`)."""

    delivery_id: str
    event: Event
    # Acknowledge/resolve for an incident that is unknown or already resolved are dropped, as the
    # Events API does.
    updates_need_open_incident: bool = False
    dedupe_key: str = ""
    dedupe_window: float = 0.0


@dataclass(frozen=True)
class Delivery:
    """What one request delivered: the body to store (once, however many events) and its events."""

    body: bytes
    arrivals: tuple[Arrival, ...]
