"""One structlog configuration for every entry point: JSON lines, UTC timestamps, redaction."""

import logging
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError
from structlog.typing import EventDict, Processor, WrappedLogger

MASK = "[secret]"
BAD_REQUEST_MAX_CHARS = 200  # of a malformed request's error, which quotes the request line


class Redactor:
    """Masks known secret values wherever they appear in a log line.

    Secrets are registered as they become known (webhook secrets, API token, Pulumi passphrase,
    secret config and outputs); the processor then replaces them in every string of the event.
    """

    MIN_LENGTH = 6  # shorter strings would mask ordinary words

    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, *values: str | None) -> None:
        with self._lock:
            fresh = {v for v in values if v and len(v) >= self.MIN_LENGTH}
            self._secrets = self._secrets | fresh

    def redact(self, value: Any) -> Any:
        secrets = self._secrets
        if not secrets:
            return value
        return _redact(value, secrets)

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        return self.redact(event_dict)  # type: ignore[no-any-return]


def _redact(value: Any, secrets: Iterable[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v, secrets) for v in value]
    return value


def configure_logging(
    redactor: Redactor | None = None,
    *,
    level: str = "INFO",
    stream: TextIO | None = None,
    json_lines: bool | None = None,
) -> None:
    """Route structlog and the standard library through one renderer on `stream` (stdout)."""
    stream = stream or sys.stdout
    if json_lines is None:
        json_lines = not stream.isatty()
    redact: list[Processor] = [redactor] if redactor else []
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info if json_lines else _noop,
        *redact,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    )
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
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The access log repeats what our own request lines say.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(_BAD_REQUESTS)  # added once, however often


class BadRequestFilter(logging.Filter):
    """Shortens aiohttp's record of a request it could not parse to one line.

    aiohttp logs each one as an ERROR with a traceback and its error message, which quotes up to
    8 KB of the request: anyone could write that much to our log per request they send. A client's
    malformed request is not our error: it becomes `http.bad_request`, a WARNING (never a higher
    level than aiohttp's) with the message cut short. Every other record passes unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        level = min(record.levelno, logging.WARNING)
        if not logging.getLogger(record.name).isEnabledFor(level):
            return False
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        message = error.message
        if len(message) > BAD_REQUEST_MAX_CHARS:
            message = message[:BAD_REQUEST_MAX_CHARS] + "..."
        record.msg, record.args = "http.bad_request", ()
        record.levelno, record.levelname = level, logging.getLevelName(level)
        record.exc_info = record.exc_text = None
        record.status, record.error, record.remote = error.code, message, remote
        return True


_BAD_REQUESTS = BadRequestFilter()


def _noop(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    return event_dict


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
