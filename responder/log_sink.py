"""The one stream every log line goes to: whole lines, one write each, nothing held back."""

import contextlib
import os
import select
import sys
import threading
from typing import TextIO


class Sink:
    """The one stream every line goes to, structlog's and the standard library's alike.

    One write per whole line under one lock, so concurrent writers never interleave; nothing is
    held in a buffer of ours, so a normal exit has nothing to flush and a crash loses only what the
    OS had not yet received. A stream with a file descriptor is written with `os.write`, measured
    cheaper than a buffered write and flush per line (bench/logcost.py); others (a test's StringIO)
    get text.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.RLock()  # re-entrant: a signal handler that logs must not deadlock
        self._failed = False
        stream.flush()  # whatever was printed before goes out first
        try:
            self._fd: int | None = stream.fileno()
        except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both
            self._fd = None

    def write(self, line: bytes) -> None:
        try:
            with self._lock:
                if self._fd is None:
                    self._stream.write(line.decode())
                    self._stream.flush()
                    return
                try:
                    written = os.write(self._fd, line)
                except BlockingIOError:
                    written = 0
                if written < len(line):
                    _write_all(self._fd, line[written:])
        except (OSError, ValueError) as e:  # a closed stream, a full disk, a reader gone
            self._report(e)

    def _report(self, error: Exception) -> None:
        # Once: a log that cannot be written must neither crash the caller nor flood stderr.
        if not self._failed:
            self._failed = True
            with contextlib.suppress(Exception):
                print(f"responder: a log line could not be written: {error!r}", file=sys.stderr)


def _write_all(fd: int, data: bytes) -> None:
    """The slow path: a pipe that took part of a long line, or a non-blocking stream that is full."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


_current = Sink(sys.stderr)  # until configure_logging says where


def use(sink: Sink) -> None:
    global _current
    _current = sink


class Output:
    """What structlog's bound loggers write to: named for the `logger` field, one sink for all.

    The sink is looked up at each line, so a logger cached before a reconfiguration still writes
    where the latest configuration says.
    """

    __slots__ = ("name",)

    def __init__(self, name: str | None = None) -> None:
        self.name = name

    def msg(self, line: bytes) -> None:
        _current.write(line)

    debug = info = warning = warn = error = critical = exception = fatal = failure = err = log = msg
