"""One structlog configuration for every entry point: JSON lines, UTC timestamps, redaction."""

import json
import logging
import re
import sys
import threading
import time
import weakref
from typing import Any, TextIO, cast

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from responder import log_sink
from responder.log_sink import Sink

MASK = "[secret]"
# Of a malformed request's error: its description (see BadRequestFilter).
BAD_REQUEST_MAX_CHARS = 200


class _Masker:
    """The registered secrets as one pattern (longest first: where one secret contains another,
    the whole of it is masked), and the short strings it has already masked: a delivery's ids,
    event names and stack names recur on every line it logs, and a lookup is cheaper than a scan."""

    __slots__ = ("_seen", "_shortest", "_sub")
    MEMO_ENTRIES, MEMO_CHARS = 4096, 200  # bounds on what the memo holds

    def __init__(self, secrets: frozenset[str]) -> None:
        ordered = sorted(secrets, key=len, reverse=True)
        self._sub = re.compile("|".join(map(re.escape, ordered))).sub
        self._shortest = len(ordered[-1])
        self._seen: dict[str, str] = {}

    def string(self, value: str) -> str:
        if len(value) < self._shortest:
            return value
        if len(value) > self.MEMO_CHARS:
            return self._sub(MASK, value)
        masked = self._seen.get(value)
        if masked is None:
            if len(self._seen) >= self.MEMO_ENTRIES:
                self._seen.clear()
            masked = self._seen[value] = self._sub(MASK, value)
        return masked

    def walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.string(value)
        if isinstance(value, dict):
            return {k: self.walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.walk(v) for v in value]
        return value


class Redactor:
    """Masks known secret values wherever they appear in a log line.

    Secrets are registered as they become known (webhook secrets, API token, Pulumi passphrase,
    secret config and outputs); the processor then replaces them in every string of the event.
    """

    MIN_LENGTH = 6  # shorter strings would mask ordinary words

    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        # Replaced whole by `add`: a thread logging meanwhile uses the old secrets or the new ones,
        # never half of a rebuild, and never a memo of the old ones with the new pattern.
        self._masker: _Masker | None = None

    def add(self, *values: str | None) -> None:
        with self._lock:
            fresh = {v for v in values if v and len(v) >= self.MIN_LENGTH} - self._secrets
            if fresh:
                self._secrets |= fresh
                self._masker = _Masker(self._secrets)

    def redact(self, value: Any) -> Any:
        masker = self._masker
        return value if masker is None else masker.walk(value)

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        masker = self._masker
        if masker is None:
            return event_dict
        # The event dict is the chain's own copy: rewriting its values in place saves a copy per
        # line; nested containers belong to the caller and are rebuilt instead.
        for key, value in event_dict.items():
            if isinstance(value, str):
                event_dict[key] = masker.string(value)
            elif isinstance(value, dict | list | tuple):
                event_dict[key] = masker.walk(value)
        return event_dict


_second: tuple[int, str] = (0, "")  # the last second stamped, formatted: one strftime a second


def _add_timestamp(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """ISO-8601 UTC to the microsecond, as TimeStamper(fmt="iso", utc=True), at half its cost."""
    global _second
    now = time.time()
    second = int(now)
    stamped = _second
    if stamped[0] != second:
        _second = stamped = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    event_dict["timestamp"] = f"{stamped[1]}.{int((now - second) * 1e6):06d}Z"
    return event_dict


_STACK = structlog.processors.StackInfoRenderer()


# Most lines carry neither a stack nor an exception: a key test is cheaper than the processor.
def _render_stack(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    return _STACK(logger, name, event_dict) if "stack_info" in event_dict else event_dict


def _format_exception(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    if "exc_info" not in event_dict:
        return event_dict
    return structlog.processors.format_exc_info(logger, name, event_dict)


def _add_logger_name(logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    name = getattr(logger, "name", None)
    if name is not None:
        event_dict["logger"] = name
    return event_dict


class _JSONRenderer:
    """One line of JSON as bytes, by orjson; `json` only for what orjson refuses."""

    # Dataclasses go through `default` (their repr) as they always did, and so get redacted.
    OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_PASSTHROUGH_DATACLASS

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def _default(self, obj: Any) -> Any:
        # An object's repr can quote a secret that no string of the event held.
        structlog_repr = getattr(obj, "__structlog__", None)
        return self._redactor.redact(structlog_repr() if structlog_repr else repr(obj))

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> bytes:
        try:
            return orjson.dumps(event_dict, default=self._default, option=self.OPTIONS)
        except TypeError:  # keys that are not strings, integers beyond 64 bits, lone surrogates
            return (json.dumps(event_dict, default=self._default) + "\n").encode()


class _ConsoleRenderer:
    """structlog's console rendering for a terminal, redacted as rendered: tracebacks included."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        # Plain tracebacks, not rich's: rich shows frame locals cut to 80 characters, wraps lines
        # and colours numbers, and a secret cut, wrapped or coloured no longer matches the redactor.
        self._render = structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.plain_traceback
        )

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> bytes:
        text = self._redactor.redact(self._render(logger, name, event_dict))
        return f"{text}\n".encode()


class _StdlibHandler(logging.Handler):
    """Sends the standard library's records (aiohttp, asyncio, Pulumi's SDK) through the same
    processors to the same sink, with their extra attributes as fields."""

    def __init__(self, processors: list[Processor], sink: Sink) -> None:
        super().__init__()
        self._extras = structlog.stdlib.ExtraAdder()
        self._processors = processors
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event: Any = {"event": record.getMessage(), "logger": record.name, "_record": record}
            if record.exc_info:
                event["exc_info"] = record.exc_info
            if record.stack_info:
                event["stack_info"] = record.stack_info
            event = self._extras(logging.getLogger(record.name), "", event)
            del event["_record"]
            method = record.levelname.lower()
            for processor in self._processors:
                event = processor(None, method, event)
            self._sink.write(event)
        except Exception:
            self.handleError(record)


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
    redactor = redactor or Redactor()
    threshold = logging.getLevelNamesMapping()[level.upper()]
    sink = Sink(stream)
    log_sink.use(sink)
    # Redaction comes before the fields we add ourselves (level, logger, timestamp), which hold
    # no secret. On a terminal the console renderer formats exceptions and redacts what it rendered.
    redacted: list[Processor] = [_format_exception, redactor]
    head: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _render_stack,
        *(redacted if json_lines else []),
        structlog.processors.add_log_level,
    ]
    tail: list[Processor] = [
        _add_timestamp,
        _JSONRenderer(redactor) if json_lines else _ConsoleRenderer(redactor),
    ]
    structlog.configure(
        processors=[*head, _add_logger_name, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=log_sink.Output,
        cache_logger_on_first_use=True,
    )
    _forget_cached_loggers()
    handler = _StdlibHandler([*head, *tail], sink)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(threshold)
    # The access log repeats what our own request lines say.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(_BAD_REQUESTS)  # added once, however often


class BadRequestFilter(logging.Filter):
    """Shortens aiohttp's record of a request it could not parse to one line.

    aiohttp logs each one as an ERROR with a traceback and its error message, which quotes up to
    8 KB of the request: anyone could write that much to our log per request they send. A client's
    malformed request is not our error: it becomes `http.bad_request`, a WARNING (never a higher
    level than aiohttp's) with the error's description, cut short. The request aiohttp quotes
    after it (its parser's `desc:\n\n  b'line'\n  ^`) is left out: the line can be a header
    holding a secret (an `Authorization` with a stray CR), quoted as a bytes repr the redactor
    cannot match, or cut inside the secret. Every other record passes unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        level = min(record.levelno, logging.WARNING)
        if not logging.getLogger(record.name).isEnabledFor(level):
            return False
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
        message = bad_request_description(error.message)
        if len(message) > BAD_REQUEST_MAX_CHARS:
            message = message[:BAD_REQUEST_MAX_CHARS] + "..."
        record.msg, record.args = "http.bad_request", ()
        record.levelno, record.levelname = level, logging.getLevelName(level)
        record.exc_info = record.exc_text = None
        record.status, record.error, record.remote = error.code, message, remote
        return True


# A part of aiohttp's message quoting what it read (a bytes or text repr), to its closing quote or
# the message's end: `when reading: b'Cookie: …'`, `bytearray(b'/path…')`.
_QUOTED = re.compile(r"""(?:bytearray\()?b?(['"])(?:\\.|(?!\1).)*(?:\1\)?|$)""", re.DOTALL)


def bad_request_description(message: str) -> str:
    """aiohttp's error for a request it cannot parse, without any part of the request it quotes:
    the lines before the first blank one (the request line shown under it), on one line, with
    each quoted part replaced by `…` (a line too long is quoted on the first)."""
    first = " ".join(line.strip() for line in message.split("\n\n", 1)[0].splitlines())
    return _QUOTED.sub("…", first)


_BAD_REQUESTS = BadRequestFilter()

# Every logger handed out, so that a reconfiguration reaches those already cached.
_LOGGERS: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _forget_cached_loggers() -> None:
    # structlog caches a lazy logger by setting its `bind` to the assembled one; dropping that
    # makes the next line assemble it again from the new configuration (level, processors). The
    # daemon configures once, before its first line; the test suite reconfigures for each test.
    for proxy in list(_LOGGERS):
        vars(proxy).pop("bind", None)


def get_logger(name: str) -> FilteringBoundLogger:
    # The name reaches log_sink.Output through the logger factory, for the `logger` field.
    proxy = structlog.get_logger(name)
    _LOGGERS.add(proxy)
    # A lazy proxy that becomes the configured filtering bound logger on first use.
    return cast(FilteringBoundLogger, proxy)
