"""RESPONDER_PROCESSES: several `responder serve` processes on one port under one supervisor."""

import asyncio
import contextlib
import functools
import inspect
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest

from responder import runner as runner_module
from responder.config import Settings
from responder.stacks import PulumiOperations
from responder.supervisor import MAX_BACKOFF, MAX_QUICK_EXITS, QUICK_EXIT, Supervisor, restart_delay
from tests.alertmanager_server import free_port
from tests.helpers import API_TOKEN, REPO, SECRET_A

# Each child runs `pulumi version` and pre-starts its stack workers.
pytestmark = pytest.mark.pulumi

GRACE = 5.0  # the children's RESPONDER_SHUTDOWN_GRACE
T = TypeVar("T")
STARTUP = 120.0  # seconds for a set of children to answer, on 2 busy cores


def _environment(data_dir: Path, **settings: str) -> dict[str, str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RESPONDER_", "PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE"))
    }
    ours = {
        "DATA_DIR": str(data_dir),
        "HOST": "127.0.0.1",
        "PORT": "0",
        "PAGERDUTY_SECRETS": SECRET_A,
        "API_TOKEN": API_TOKEN,
        "WORKERS": "1",
        "SHUTDOWN_GRACE": str(GRACE),
        **settings,
    }
    return {**inherited, **{f"RESPONDER_{k}": v for k, v in ours.items()}}


def _gone(pid: int) -> bool:
    """Whether the process ended: a zombie has (whoever inherited it may never reap it), unless
    only its main thread did and others still run."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except (FileNotFoundError, ProcessLookupError):  # reaped before the open, or during it
        return True
    return stat.rpartition(")")[2].split()[0] == "Z" and threads <= 1


class Supervised:
    """`responder serve` with several processes; every process's log lines in one file."""

    def __init__(self, tmp_path: Path, **settings: str) -> None:
        self.log_path = tmp_path / "serve.log"
        self.env = _environment(tmp_path / "data", **settings)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "responder", "serve"],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def events(self) -> list[dict[str, object]]:
        """Every complete JSON line logged, in order (a traceback's lines are not JSON)."""
        found = []
        for line in self.log_path.read_text().rpartition("\n")[0].splitlines():
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    found.append(parsed)
        return found

    def lines(self, event: str) -> list[dict[str, object]]:
        return [line for line in self.events() if line.get("event") == event]

    def pids(self, event: str) -> list[int]:
        return [int(str(line["pid"])) for line in self.lines(event)]

    def children(self) -> set[int]:
        """The children started and not seen to exit."""
        return set(self.pids("supervisor.child_started")) - set(
            self.pids("supervisor.child_exited")
        )

    def _failed(self, what: str) -> AssertionError:
        return AssertionError(f"{what}; log:\n{self.log_path.read_text()[-4000:]}")

    def _check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise self._failed(f"the supervisor exited with {self.proc.returncode}")

    async def wait_for(
        self, condition: Callable[[], T], timeout: float = STARTUP, *, running: bool = True
    ) -> T:
        """Poll until the condition holds; fail at the deadline, or at once if the supervisor
        ended while it should be `running`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not (result := condition()):
            if running:
                self._check_running()
            if asyncio.get_running_loop().time() > deadline:
                raise self._failed("timed out")
            await asyncio.sleep(0.1)
        return result

    async def port(self) -> int:
        started = await self.wait_for(lambda: self.lines("supervisor.started"))
        return int(str(started[0]["port"]))

    async def ready_nodes(
        self, want: int, avoid: frozenset[str] = frozenset(), *, refused_ok: bool = False
    ) -> set[str]:
        """Ask /readyz over new connections (each one the kernel hands to any listening child)
        until `want` nodes not in `avoid` answered ready. Every request must get an answer, but
        for `refused_ok` (no child listening yet)."""
        url = f"http://127.0.0.1:{await self.port()}/readyz"
        seen: set[str] = set()
        connector = aiohttp.TCPConnector(force_close=True)  # one connection per request
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            deadline = asyncio.get_running_loop().time() + STARTUP
            while len(seen - avoid) < want:
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            seen.add((await response.json())["node"])
                except aiohttp.ClientConnectorError:
                    if not refused_ok or seen:
                        raise
                self._check_running()
                if asyncio.get_running_loop().time() > deadline:
                    raise self._failed(f"saw only {seen}")
                await asyncio.sleep(0.05)
        return seen - avoid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(GRACE + 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.children():  # left by a test that failed half-way
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def supervised(tmp_path: Path, postgres_url: str) -> Iterator[Supervised]:
    process = Supervised(tmp_path, DATABASE_URL=postgres_url, PROCESSES="2")
    yield process
    process.stop()


async def test_two_processes_answer_on_one_port(supervised: Supervised) -> None:
    supervised.start()
    nodes = await supervised.ready_nodes(2, refused_ok=True)
    assert len(nodes) == 2
    children = supervised.children()
    assert len(children) == 2 and supervised.pid not in children
    for pid in children:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert f"--supervised-by={supervised.pid}".encode() in command
    # The supervisor generated the missing secrets once, before any child started; the children
    # only read them.
    order = [str(line["event"]) for line in supervised.events()]
    assert "secret.generated" in order
    first_child = order.index("supervisor.child_started")
    assert "secret.generated" not in order[first_child:]
    assert order[first_child:].count("secret.loaded") == 2 * order.count("secret.generated")


async def test_a_killed_child_is_replaced_and_the_port_keeps_answering(
    supervised: Supervised,
) -> None:
    supervised.start()
    first = await supervised.ready_nodes(2, refused_ok=True)
    victim = sorted(supervised.children())[0]
    os.kill(victim, signal.SIGKILL)
    exited = await supervised.wait_for(
        lambda: [
            line for line in supervised.lines("supervisor.child_exited") if line["pid"] == victim
        ]
    )
    assert exited[0]["signal"] == "SIGKILL"
    # The survivor answers every request until the replacement, a new node, answers too.
    assert len(await supervised.ready_nodes(1, avoid=frozenset(first))) == 1
    assert len(supervised.children()) == 2 and victim not in supervised.children()


# SIGHUP as SIGTERM: a closed terminal or `kill -HUP` ended the supervisor on the spot, silently.
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
async def test_a_stop_signal_stops_every_child_and_exits_zero(
    supervised: Supervised, signum: signal.Signals
) -> None:
    supervised.start()
    await supervised.ready_nodes(2, refused_ok=True)
    children = supervised.children()
    assert supervised.proc is not None
    supervised.proc.send_signal(signum)
    assert await asyncio.to_thread(supervised.proc.wait, GRACE + 30) == 0
    assert all(_gone(pid) for pid in children)
    [stopping] = supervised.lines("supervisor.stopping")
    assert stopping["signal"] == signum.name
    exits = [line for line in supervised.lines("supervisor.child_exited")]
    assert sorted(int(str(line["pid"])) for line in exits) == sorted(children)
    assert all(line.get("exit_code") == 0 for line in exits), exits  # each stopped gracefully
    assert len(supervised.lines("daemon.stopped")) == 2


async def test_a_child_that_does_not_stop_is_killed_and_the_supervisor_ends_in_order(
    supervised: Supervised,
) -> None:
    """It crashed on its own kill path: a traceback, no `supervisor.stopped`, exit 1 by chance."""
    supervised.start()
    await supervised.ready_nodes(2, refused_ok=True)
    stuck, *_ = sorted(supervised.children())
    os.kill(stuck, signal.SIGSTOP)  # it will never stop by itself
    assert supervised.proc is not None
    supervised.proc.send_signal(signal.SIGTERM)
    grace = Supervisor(Settings.load(supervised.env), 0).grace
    assert await asyncio.to_thread(supervised.proc.wait, grace + 30) == 1
    [killing] = supervised.lines("supervisor.killing")
    assert stuck in killing["pids"]  # type: ignore[operator]
    [stopped] = supervised.lines("supervisor.stopped")
    assert stopped["exit_code"] == 1
    assert _gone(stuck) and "Traceback" not in supervised.log_path.read_text()


async def test_children_do_not_outlive_a_killed_supervisor(supervised: Supervised) -> None:
    supervised.start()
    await supervised.ready_nodes(2, refused_ok=True)
    children = supervised.children()
    assert supervised.proc is not None
    supervised.proc.kill()
    supervised.proc.wait()
    await supervised.wait_for(
        lambda: all(_gone(pid) for pid in children), GRACE + 30, running=False
    )


async def test_children_that_keep_failing_to_start_make_it_give_up(tmp_path: Path) -> None:
    """A child that cannot start (here: no database listening) and never could: the configuration
    is broken. It is restarted with a growing delay, then the supervisor gives up with exit code 1
    instead of spinning."""
    unreachable = f"postgresql://nobody:x@127.0.0.1:{free_port()}/none"
    supervising = Supervised(tmp_path, DATABASE_URL=unreachable, PROCESSES="2")
    supervising.start()
    try:
        assert supervising.proc is not None
        assert await asyncio.to_thread(supervising.proc.wait, STARTUP) == 1
    finally:
        supervising.stop()
    log = supervising.log_path.read_text()
    # Every line JSON, the children's failures too: a raw traceback, written piece by piece,
    # once took in the supervisor's line and hid it.
    assert all(line.startswith("{") for line in log.splitlines()), log[-4000:]
    assert supervising.lines("supervisor.giving_up"), log[-4000:]
    assert len(supervising.lines("daemon.start_failed")) >= MAX_QUICK_EXITS
    assert not supervising.lines("supervisor.service_up")
    delays = [
        float(str(line["delay_seconds"])) for line in supervising.lines("supervisor.restarting")
    ]
    assert delays and max(delays) > min(delays), delays
    assert not supervising.children()


async def test_a_slot_failing_after_the_service_ran_is_restarted_and_spares_its_sibling(
    supervised: Supervised,
) -> None:
    """Once the service has run, a child failing again and again at start (as at store open during
    a database outage) is restarted with a growing delay, as long as it takes: the supervisor does
    not give up and take its healthy sibling down with it."""
    supervised.start()
    first = await supervised.ready_nodes(2, refused_ok=True)
    await supervised.wait_for(lambda: supervised.lines("supervisor.service_up"), QUICK_EXIT * 3)
    [sibling, victim] = sorted(supervised.children())
    [slot] = [
        line["slot"]
        for line in supervised.lines("supervisor.child_started")
        if line["pid"] == victim
    ]

    def restarts() -> list[dict[str, object]]:
        return [line for line in supervised.lines("supervisor.restarting") if line["slot"] == slot]

    def started_after(pid: int) -> int:
        """The slot's child started after `pid`; 0 until there is one."""
        started = supervised.lines("supervisor.child_started")
        newest = int(str([line["pid"] for line in started if line["slot"] == slot][-1]))
        return newest if newest != pid else 0

    # Killed at once after each start, well within QUICK_EXIT (the first had run: not quick).
    while not restarts() or restarts()[-1]["quick_exits"] != MAX_QUICK_EXITS:
        os.kill(victim, signal.SIGKILL)
        victim = await supervised.wait_for(functools.partial(started_after, victim))
        assert sibling in supervised.children() and not _gone(sibling)
        assert len(await supervised.ready_nodes(1)) == 1  # the sibling answers meanwhile
    quick = [line for line in restarts() if line["quick_exits"]]
    assert [line["quick_exits"] for line in quick] == list(range(1, MAX_QUICK_EXITS + 1))
    assert [line["delay_seconds"] for line in quick] == [
        restart_delay(n) for n in range(1, MAX_QUICK_EXITS + 1)
    ]
    assert not supervised.lines("supervisor.giving_up")
    # The slot's last child is left alone: it starts, and answers beside its sibling.
    assert len(await supervised.ready_nodes(1, avoid=frozenset(first))) == 1
    assert sibling in supervised.children()


def test_a_failing_slot_waits_longer_each_time_up_to_a_cap() -> None:
    assert [restart_delay(n) for n in range(8)] == [0, 0.5, 1, 2, 4, 8, 16, 30]
    assert restart_delay(10_000) == MAX_BACKOFF == 30  # an outage of hours: every 30 s


def test_children_have_their_whole_graceful_stop_before_being_killed() -> None:
    """Their runner's grace for running jobs, then what the runner gives the jobs it interrupts
    (an operation's kill grace, then a repair), then the child's giving up and closing."""
    kill_grace = inspect.signature(PulumiOperations).parameters["kill_grace"].default
    assert kill_grace + 15.0 == runner_module.INTERRUPTED_WAIT
    settings = Settings(database_url="postgresql://u@h/db", processes=2, shutdown_grace=7.0)
    assert Supervisor(settings, 8080).grace == 7.0 + runner_module.INTERRUPTED_WAIT + 20.0


def test_several_processes_on_sqlite_are_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "responder", "serve"],
        env=_environment(tmp_path / "data", PROCESSES="2"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("responder: RESPONDER_PROCESSES=2 needs RESPONDER_DATABASE_URL")
    assert "Traceback" not in done.stderr and not (tmp_path / "data").exists()


def test_default_process_count_follows_the_store() -> None:
    assert Settings().process_count == 1
    assert Settings(database_url="postgresql://u@h/db").process_count == (os.cpu_count() or 1)
    assert Settings(database_url="postgresql://u@h/db", processes=3).process_count == 3
    assert Settings(processes=1).process_count == 1
