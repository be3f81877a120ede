"""N server processes on one port (SO_REUSEPORT) under a supervisor that restarts and stops them."""

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator

from responder import metrics
from responder.config import PREFIX, ConfigError, Settings, database_secrets
from responder.daemon import credentials_for, prepare_data_dir
from responder.logs import Redactor, get_logger
from responder.runner import INTERRUPTED_WAIT
from responder.stacks import PulumiEnvironment, processes

log = get_logger("responder.supervisor")

# The hidden `serve` option that makes a child: its value is the supervisor's pid.
CHILD_OPTION = "--supervised-by"
# A child's longest graceful stop, past its runner's `shutdown_grace` for the jobs under way: an
# operation still running is then cancelled, killed after the operations' kill grace and its stack
# repaired (the runner's `INTERRUPTED_WAIT`); then the child gives up on a job still not ended and
# closes its workers and store, in this long at most. Only then is it killed.
CLOSING_TIME = 20.0
QUICK_EXIT = 10.0  # a child that ends sooner after its start failed to start
# Quick exits in a row in one slot before any child stayed up: the configuration is broken, and
# restarting cannot help. Once the service has run, a slot failing (its database away, say) is
# restarted for as long as it takes, its siblings untouched.
MAX_QUICK_EXITS = 5
FIRST_BACKOFF, MAX_BACKOFF = 0.5, 30.0  # seconds before a restart after quick exits in a row


def restart_delay(quick_exits: int) -> float:
    """Seconds before restarting a slot after `quick_exits` in a row: none after a child that ran,
    then doubling from FIRST_BACKOFF up to MAX_BACKOFF."""
    if quick_exits <= 0:
        return 0.0
    return min(FIRST_BACKOFF * 2.0 ** min(quick_exits - 1, 32), MAX_BACKOFF)


def supervise(settings: Settings, redactor: Redactor) -> int:
    """Run `settings.process_count` children until SIGTERM or SIGINT. 0 after a clean stop; 1 if
    children kept failing to start before any stayed up, or had to be killed. Raises ConfigError
    before any child starts."""
    prepare(settings, redactor)
    with (
        _reserved_port(settings.host, settings.port) as port,
        metrics.shared_metrics_dir(settings.data_dir.resolve()) as path,
    ):
        return asyncio.run(Supervisor(settings, port, metrics_dir=path).run())


def prepare(settings: Settings, redactor: Redactor) -> None:
    """Create once what every child would otherwise race to create: the data dir, the generated
    secret files and the Pulumi passphrase file. A problem with them stops start-up here."""
    umask = os.umask(0o077)  # as the daemon's own: files for our user only
    try:
        data_dir = settings.data_dir.resolve()
        prepare_data_dir(data_dir)
        redactor.add(*credentials_for(settings, data_dir).all())
        # As a child does: a line the supervisor logs (a crash's traceback) masks them too.
        redactor.add(*database_secrets(settings.database_url))
        redactor.add(*database_secrets(PulumiEnvironment.create(data_dir).backend_url))
    except FileNotFoundError as e:  # no pulumi CLI: no child could run an operation
        raise ConfigError(str(e)) from None
    finally:
        os.umask(umask)


@contextlib.contextmanager
def _reserved_port(host: str, port: int) -> Iterator[int]:
    """Bind the port with SO_REUSEPORT, without listening, for as long as the supervisor runs.

    Children join it (the kernel spreads connections over the listening sockets only); port 0
    becomes one port for all of them; and no other program takes the port while a child restarts.
    A port already taken stops start-up here, naming it, rather than as every child's crash."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise ConfigError(f"{PREFIX}HOST={host}: cannot listen there: {e}") from None
    with sock:
        # No SO_REUSEADDR: that would let a program without SO_REUSEPORT bind it beside us.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(address)
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        yield int(sock.getsockname()[1])


def follow_supervisor(pid: int) -> bool:
    """In a child: be sent SIGTERM (a graceful stop) when the supervisor dies, however it dies.
    False if it is already gone."""
    processes.signal_on_parent_death(signal.SIGTERM)
    # Checked after the request: had it died before, the signal would never come.
    return os.getppid() == pid


class Supervisor:
    """One slot per child; each slot restarts its child when it ends, until the stop."""

    def __init__(self, settings: Settings, port: int, *, metrics_dir: str | None = None) -> None:
        """`metrics_dir`: where the children keep their metrics, for any of them to sum up."""
        self.count = settings.process_count
        self.port = port
        self.grace = settings.shutdown_grace + INTERRUPTED_WAIT + CLOSING_TIME
        self.command = [sys.executable, "-m", "responder", "serve", f"{CHILD_OPTION}={os.getpid()}"]
        self.env = {**os.environ, f"{PREFIX}PROCESSES": "1", f"{PREFIX}PORT": str(port)}
        self.metrics_dir = metrics_dir
        if metrics_dir is not None:
            self.env[metrics.MULTIPROCESS_VARIABLE] = metrics_dir
        self.children: dict[int, asyncio.subprocess.Process] = {}  # by slot
        self.stopping = asyncio.Event()
        self.failed = False
        self.ran = False  # a child stayed up: the configuration works

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        # SIGHUP too: a closed terminal or `kill -HUP` (no reload here) stops as gracefully.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self.stop, signum)
        log.info("supervisor.started", pid=os.getpid(), processes=self.count, port=self.port)
        slots = [asyncio.create_task(self._keep(slot)) for slot in range(self.count)]
        await self.stopping.wait()
        # Waited for, not cancelled: a slot cancelled mid-wait would not see its child's end.
        _, pending = await asyncio.wait(slots, timeout=self.grace)
        killed = bool(pending)
        if killed:
            log.error(
                "supervisor.killing",
                pids=[p.pid for p in self.children.values()],
                after_seconds=self.grace,
            )
            for process in self.children.values():
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        await asyncio.gather(*slots)
        code = 1 if self.failed or killed else 0
        log.info("supervisor.stopped", exit_code=code)
        return code

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop every child. They get SIGTERM whatever the signal: aiohttp stops gracefully on
        either, and a SIGINT reaching a child still importing would end it with a traceback."""
        if self.stopping.is_set():
            return
        log.info(
            "supervisor.stopping",
            signal=signal.Signals(signum).name,
            pids=[p.pid for p in self.children.values()],
        )
        self.stopping.set()
        for process in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                process.terminate()

    async def _keep(self, slot: int) -> None:
        quick_exits = 0
        while not self.stopping.is_set():
            uptime = await self._run_child(slot)
            if self.stopping.is_set():
                return
            quick_exits = quick_exits + 1 if uptime < QUICK_EXIT else 0
            if quick_exits >= MAX_QUICK_EXITS and not self.ran:
                log.error("supervisor.giving_up", slot=slot, quick_exits=quick_exits)
                self.failed = True
                self.stop()
                return
            delay = restart_delay(quick_exits)
            log.warning(
                "supervisor.restarting", slot=slot, quick_exits=quick_exits, delay_seconds=delay
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    async def _run_child(self, slot: int) -> float:
        """Start the slot's child and wait for its end; how long it lived."""
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                # Its own process group: a terminal's Ctrl-C reaches the supervisor alone, which
                # stops the children once, in order.
                process_group=0,
            )
        except OSError as e:
            log.error("supervisor.spawn_failed", slot=slot, error=str(e))
            return 0.0
        self.children[slot] = process
        if self.stopping.is_set():  # the stop came while it was starting
            process.terminate()
        log.info("supervisor.child_started", slot=slot, pid=process.pid)
        ending = asyncio.ensure_future(process.wait())
        await asyncio.wait([ending], timeout=QUICK_EXIT)
        if not ending.done() and not self.ran:
            self.ran = True
            log.info("supervisor.service_up", slot=slot, pid=process.pid)
        code = await ending
        del self.children[slot]
        if self.metrics_dir is not None:
            metrics.process_ended(self.metrics_dir, process.pid)
        uptime = time.monotonic() - started
        ended = {"exit_code": code} if code >= 0 else {"signal": _signal_name(-code)}
        level = log.info if self.stopping.is_set() else log.warning
        level(
            "supervisor.child_exited",
            slot=slot,
            pid=process.pid,
            uptime_seconds=round(uptime, 3),
            **ended,
        )
        return uptime


def _signal_name(number: int) -> str:
    with contextlib.suppress(ValueError):
        return signal.Signals(number).name
    return str(number)
