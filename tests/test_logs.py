"""The log path: JSON lines with their fields, one stream for all, redaction, threads, shutdown."""

import io
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import pytest
import structlog

from responder.logs import MASK, Redactor, configure_logging, get_logger
from tests.helpers import REPO, LogCapture

SECRET = "s3cr3t-value-0123456789"


@pytest.fixture(name="log_file")
def _log_file(tmp_path: Path) -> Iterator[Path]:
    """A file for `configure_file`: a real file descriptor, as in production; reset afterwards."""
    path = tmp_path / "daemon.log"
    with path.open("w") as stream:
        _FILES[path] = stream
        yield path
    configure_logging(json_lines=True)
    del _FILES[path]


_FILES: dict[Path, TextIO] = {}


def configure_file(path: Path, redactor: Redactor | None = None) -> None:
    configure_logging(redactor, stream=_FILES[path], json_lines=True)


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_line_is_json_with_timestamp_level_event_logger_and_context(logs: LogCapture) -> None:
    log = get_logger("tests.logs")
    with structlog.contextvars.bound_contextvars(delivery_id="d-1", incident_id="Q1"):
        log.info("delivery.received", bytes=12)
    log.warning("outside.context", ids={1: "int keys"}, stack_info=True)

    first, second = logs.lines()
    assert first["event"] == "delivery.received" and first["level"] == "info"
    assert first["logger"] == "tests.logs" and first["bytes"] == 12
    assert (first["delivery_id"], first["incident_id"]) == ("d-1", "Q1")
    stamp = datetime.fromisoformat(str(first["timestamp"]))
    assert stamp.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    assert second["level"] == "warning" and "delivery_id" not in second
    assert second["ids"] == {"1": "int keys"} and "test_logs.py" in str(second["stack"])


def test_a_terminal_gets_console_lines_redacted_tracebacks_included() -> None:
    stream, redactor = io.StringIO(), Redactor()
    redactor.add(SECRET)
    configure_logging(redactor, stream=stream, json_lines=False)
    try:
        try:
            raise RuntimeError(f"rejected {SECRET}")
        except RuntimeError:
            get_logger("tests.logs").exception("call.failed", token=SECRET)
    finally:
        configure_logging(json_lines=True)
    shown = without_colours(stream.getvalue())
    assert "call.failed" in shown and "RuntimeError" in shown
    assert SECRET not in shown and MASK in shown


def without_colours(text: str) -> str:
    """The text a terminal shows: without its colour codes (a secret coloured in part is whole)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_a_terminals_traceback_shows_no_part_of_a_long_or_numbered_secret() -> None:
    """Rich's tracebacks showed frame locals cut at 80 characters, wrapped long lines and coloured
    the numbers in a message: a secret cut, wrapped or coloured no longer matched the redactor."""
    stream, redactor = io.StringIO(), Redactor()
    long_secret, numbered = "pem-" + "Zq9Xw2" * 20, "s3cr3t-value-0123456789"
    redactor.add(long_secret, numbered)
    configure_logging(redactor, stream=stream, json_lines=False)
    try:
        try:
            token = long_secret
            raise RuntimeError(f"rejected {token} and {numbered}")
        except RuntimeError:
            get_logger("tests.logs").exception("call.failed")
    finally:
        configure_logging(json_lines=True)
    shown = without_colours(stream.getvalue())
    assert "call.failed" in shown and "RuntimeError" in shown
    for secret in (long_secret, numbered):
        assert secret[:12] not in shown and secret[-12:] not in shown


def test_standard_library_lines_share_the_stream_and_fields(logs: LogCapture) -> None:
    get_logger("tests.logs").info("ours")
    with structlog.contextvars.bound_contextvars(job_id=7):
        logging.getLogger("aiohttp.server").error("theirs %s", "formatted", extra={"remote": "x"})
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("pulumi").exception("failed")

    ours, theirs, failed = logs.lines()
    assert ours["logger"] == "tests.logs"
    assert theirs["event"] == "theirs formatted" and theirs["logger"] == "aiohttp.server"
    assert theirs["level"] == "error" and theirs["job_id"] == 7 and theirs["remote"] == "x"
    assert datetime.fromisoformat(str(theirs["timestamp"])).utcoffset() is not None
    assert "ValueError: boom" in str(failed["exception"]) and failed["logger"] == "pulumi"


def test_a_secret_added_after_the_first_line_is_masked_in_the_next(logs: LogCapture) -> None:
    logs.redactor.add("an-earlier-secret")  # so the pattern is built, used and must be rebuilt
    log = get_logger("tests.logs")
    log.info("before", value=f"token={SECRET}")  # the logger is assembled and cached here
    logs.redactor.add(SECRET)
    log.info("after", value=f"token={SECRET}")
    logging.getLogger("pulumi").warning("after %s", SECRET)

    before, after, library = logs.lines()
    assert before["value"] == f"token={SECRET}"
    assert after["value"] == f"token={MASK}" and library["event"] == f"after {MASK}"


@dataclass
class Credentials:
    user: str
    password: str


def test_secrets_in_nested_values_exceptions_and_objects_are_masked(logs: LogCapture) -> None:
    logs.redactor.add(SECRET, "short", None)  # too short to mask: ordinary words stay
    nested = {"headers": {"auth": f"Bearer {SECRET}"}, "tried": [SECRET, ("x", SECRET)]}
    try:
        raise RuntimeError(f"rejected {SECRET}")
    except RuntimeError:
        get_logger("tests.logs").exception("call.failed", detail=nested, words="short")
    get_logger("tests.logs").info("object", creds=Credentials("me", SECRET))

    assert SECRET not in logs.text
    failed, shown = logs.lines()
    assert failed["detail"] == {"headers": {"auth": f"Bearer {MASK}"}, "tried": [MASK, ["x", MASK]]}
    assert f"RuntimeError: rejected {MASK}" in str(failed["exception"])
    assert failed["words"] == "short"
    assert shown["creds"] == f"Credentials(user='me', password='{MASK}')"
    assert nested["tried"] == [SECRET, ("x", SECRET)]  # the caller's values are left alone


def test_redact_prefers_the_longest_secret_and_escapes_patterns() -> None:
    redactor = Redactor()
    assert redactor.redact("nothing registered") == "nothing registered"
    redactor.add("abcdef", "abcdef-ghijkl", "a.b*c+d")
    assert redactor.redact("x abcdef-ghijkl y") == f"x {MASK} y"
    assert redactor.redact("a.b*c+d axbbcd") == f"{MASK} axbbcd"
    assert redactor.redact({"k": ("abcdef", 3)}) == {"k": [MASK, 3]}


def test_debug_is_dropped_at_info_even_for_a_logger_already_used(logs: LogCapture) -> None:
    log = get_logger("tests.logs")
    log.debug("debug.shown")  # the fixture configured DEBUG: cached at that level
    configure_logging(logs.redactor, stream=logs.stream, json_lines=True, level="INFO")
    log.debug("debug.dropped")
    logging.getLogger("pulumi").debug("stdlib.dropped")
    log.info("info.kept")
    assert [line["event"] for line in logs.lines()] == ["debug.shown", "info.kept"]


def test_a_logger_used_before_reconfiguration_follows_it(logs: LogCapture, log_file: Path) -> None:
    log = get_logger("tests.logs")
    log.info("to.capture")
    redactor = Redactor()
    redactor.add(SECRET)
    configure_file(log_file, redactor)
    log.info("to.file", value=SECRET)
    assert [line["event"] for line in logs.lines()] == ["to.capture"]
    assert read_lines(log_file) == [
        {**read_lines(log_file)[0], "event": "to.file", "value": MASK, "logger": "tests.logs"}
    ]


def test_threads_logging_at_once_never_interleave_lines(log_file: Path) -> None:
    redactor = Redactor()
    configure_file(log_file, redactor)
    payload = "x" * 20_000  # far beyond a pipe's atomic write and any single buffer
    threads, per_thread = 8, 150
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        log = get_logger(f"tests.thread{n}")
        start.wait()
        for i in range(per_thread):
            if i % 3:
                log.info("thread.line", n=n, i=i, payload=payload, secret=f"{SECRET}{n}")
            else:
                logging.getLogger("pulumi").warning("stdlib %d %d %s", n, i, payload)
            if n == 0:
                redactor.add(f"{SECRET}{i % threads}")  # registering while the others log

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: mid-line, if a line allows
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(interval)

    lines = read_lines(log_file)  # fails on any line cut into or glued to another
    assert len(lines) == threads * per_thread
    ours = [line for line in lines if line["event"] == "thread.line"]
    assert all(line["payload"] == payload for line in ours)
    assert sorted((line["n"], line["i"]) for line in ours) == sorted(
        (n, i) for n in range(threads) for i in range(per_thread) if i % 3
    )
    get_logger("tests.logs").info("last", secrets=[f"{SECRET}{n}" for n in range(threads)])
    assert read_lines(log_file)[-1]["secrets"] == [MASK] * threads


EXITING = """
import logging, os, sys, threading
from responder.logs import configure_logging, get_logger
configure_logging(stream=sys.stdout, json_lines=True)
log = get_logger("tests.exit")
def work(n):
    for i in range(500):
        log.info("line", n=n, i=i)
        logging.getLogger("pulumi").info("stdlib")
threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
for t in threads: t.start()
for t in threads: t.join()
log.info("final")
if sys.argv[1] == "crash":
    os._exit(3)  # no atexit, no flush: only what already reached the OS survives
"""


@pytest.mark.parametrize("how", ["exit", "crash"])
def test_no_line_is_lost_on_exit_or_crash(how: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", EXITING, how], cwd=REPO, capture_output=True, timeout=60
    )
    assert done.returncode == (3 if how == "crash" else 0), done.stderr
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert len(lines) == 4 * 500 * 2 + 1 and lines[-1]["event"] == "final"


def test_the_log_cost_benchmark_runs() -> None:
    """bench/logcost.py's micro-benchmark (the daemon part is left to `python -m bench.logcost`)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.logcost",
            "--runs",
            "1",
            "--deliveries",
            "50",
            "--daemon",
            "0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| new, INFO, 3 secrets |" in done.stdout and "INFO, new / old" in done.stdout
