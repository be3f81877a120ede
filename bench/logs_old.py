"""The log configuration before issue 12, kept as bench/logcost.py's baseline."""

import logging
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from responder.logs import MASK


class OldRedactor:
    """The redactor before issue 12: every secret searched in every string, in turn."""

    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()

    def add(self, *values: str | None) -> None:
        self._secrets = self._secrets | {v for v in values if v and len(v) >= 6}

    def redact(self, value: Any) -> Any:
        return _old_redact(value, self._secrets)

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        return _old_redact(event_dict, self._secrets)  # type: ignore[no-any-return]


def _old_redact(value: Any, secrets: Iterable[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: _old_redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_old_redact(v, secrets) for v in value]
    return value


def old_configure(redactor: OldRedactor, level: str, stream: TextIO) -> None:
    """responder/logs.py's configure_logging before issue 12 (JSON lines), kept as the baseline."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redactor,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
