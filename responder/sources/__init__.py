"""Sources: each parses and verifies one pager's deliveries into `Event`s."""


class InvalidPayload(ValueError):
    """The body is not what this source accepts; the message says why (it is shown to the sender)."""
