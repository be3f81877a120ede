"""The `responder` command's offline subcommands: check and playbooks (replay runs the CLI: marked)."""

import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web

from responder import supervisor
from responder.cli import main
from responder.daemon import hold_data_dir
from responder.store import StoreUnavailable
from tests.alertmanager_server import free_port
from tests.helpers import FIXTURES, REPO

GOOD = '''
from responder.playbook import Context, manual, on


@on("incident.triggered", service="checkout-*")
async def page(ctx: Context) -> None:
    """Bring up the stack."""


@manual
async def by_hand(ctx: Context) -> None:
    """Only when someone asks."""
'''


@pytest.fixture
def playbooks_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "playbooks"
    directory.mkdir()
    monkeypatch.setenv("RESPONDER_PLAYBOOKS_DIR", str(directory))
    monkeypatch.setenv("RESPONDER_DATA_DIR", str(tmp_path / "data"))
    return directory


def test_playbooks_lists_triggers_manual_runs_and_docs(
    playbooks_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (playbooks_dir / "mine.py").write_text(GOOD)
    assert main(["playbooks"]) == 0
    out = capsys.readouterr().out
    page, by_hand = out.split("by_hand")
    assert "on incident.triggered service=checkout-*" in page and "Bring up the stack." in page
    assert "manual (run by hand only)" in by_hand and "manual" not in page
    assert "Only when someone asks." in by_hand


def test_check_accepts_good_playbooks_and_names_the_file_of_a_bad_one(
    playbooks_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (playbooks_dir / "mine.py").write_text(GOOD)
    assert main(["check"]) == 0
    assert "2 playbooks loaded" in capsys.readouterr().out

    (playbooks_dir / "broken.py").write_text(
        "from responder.playbook import Context, playbook, manual\n"
        "@playbook(delay=1)\n@playbook(delay=2)\n@manual\n"
        "async def twice(ctx: Context) -> None: ...\n"
    )
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert "broken.py" in err and "delay" in err


def test_check_refuses_an_unknown_setting(
    playbooks_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RESPONDER_WORKRES", "4")  # a typo of RESPONDER_WORKERS
    assert main(["check"]) == 2
    assert "RESPONDER_WORKRES" in capsys.readouterr().err


@pytest.mark.pulumi
def test_replay_previews_the_built_in_playbooks_on_a_saved_payload(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RESPONDER_PLAYBOOKS_DIR", str(REPO / "playbooks"))
    monkeypatch.setenv("RESPONDER_DATA_DIR", str(tmp_path / "data"))
    body = json.loads((FIXTURES / "pd_v3_incident_triggered.json").read_text())
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(body))
    assert main(["replay", str(payload)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["playbook"] for r in results] == ["provision_diagnostics"]
    assert results[0]["outcome"] == "previewed"
    assert results[0]["plans"][0]["instead_of"] == "up"
    assert results[0]["plans"][0]["changes"].get("create", 0) >= 1
    assert not (tmp_path / "data").exists()  # replay never touches the daemon's data dir


def test_serve_refuses_several_processes_on_sqlite(
    playbooks_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RESPONDER_PROCESSES", "2")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("responder: RESPONDER_PROCESSES=2 needs RESPONDER_DATABASE_URL")
    assert "one process" in err


def test_serve_with_several_processes_names_a_port_already_taken(
    playbooks_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The supervisor binds the port before it starts any child: a taken port is one clear
    error, not every child crashing in turn."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("RESPONDER_PORT", str(port))
        monkeypatch.setenv("RESPONDER_PROCESSES", "2")
        # Never connected to: the supervisor itself needs no database.
        monkeypatch.setenv("RESPONDER_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
        assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"responder: cannot listen on 127.0.0.1:{port}: ")
    assert "Address already in use" in err


def test_serve_freezes_what_it_loaded_out_of_the_collector(
    playbooks_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full collection walked everything loaded (modules, playbooks, the app): 30-42 ms in which
    no request was answered. `serve` freezes it before it starts serving."""
    started: list[int] = []
    monkeypatch.setattr(web, "run_app", lambda app, **_: started.append(gc.get_freeze_count()))
    gc.unfreeze()
    try:
        assert main(["serve"]) == 0
        assert started and started[0] > 10_000
    finally:
        gc.unfreeze()  # this test process builds many apps: their cycles must stay collectable


def test_serve_imports_each_playbook_once(
    playbooks_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A playbook module's own code (a client made, a file read) runs once per process: `serve`
    hands the app the playbooks it loaded, rather than the app importing them again."""
    imports = playbooks_dir.parent / "imports.txt"
    (playbooks_dir / "mine.py").write_text(
        f"with open({str(imports)!r}, 'a') as out:\n    out.write('imported\\n')\n{GOOD}"
    )
    served: list[web.Application] = []
    monkeypatch.setattr(web, "run_app", lambda app, **_: served.append(app))
    try:
        assert main(["serve"]) == 0
    finally:
        gc.unfreeze()
    assert len(served) == 1
    assert imports.read_text() == "imported\n"


def test_serve_that_cannot_open_its_store_says_so_in_one_log_line(tmp_path: Path) -> None:
    """No database listening: exit 1 with one JSON line naming the cause (its password masked),
    not a raw traceback, whose pieces a supervisor's or another child's lines would split."""
    password = "hunter2-correct-horse-battery"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")},
        "RESPONDER_DATA_DIR": str(tmp_path / "data"),
        "RESPONDER_PORT": "0",
        "RESPONDER_PROCESSES": "1",
        "RESPONDER_DATABASE_URL": f"postgresql://nobody:{password}@127.0.0.1:{free_port()}/none",
    }
    done = subprocess.run(
        [sys.executable, "-m", "responder", "serve"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == ""
    lines = [json.loads(line) for line in done.stdout.splitlines()]  # every line is JSON
    failed = [line for line in lines if line["event"] == "daemon.start_failed"]
    assert len(failed) == 1 and failed[0]["level"] == "error"
    assert "Connection refused" in str(failed[0]["error"])
    assert password not in done.stdout


def test_serve_refuses_a_data_dir_another_daemon_runs_on_with_sqlite(tmp_path: Path) -> None:
    """A second daemon on the same SQLite data dir (a restart policy starting one too many) would
    take the first one's running jobs over as an earlier life's, then fail to bind the port."""
    data = tmp_path / "data"
    data.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")},
        "RESPONDER_DATA_DIR": str(data),
        "RESPONDER_PORT": str(free_port()),
    }
    with hold_data_dir(data):  # as the running daemon holds it
        done = subprocess.run(
            [sys.executable, "-m", "responder", "serve"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"responder: another responder is running on the data dir {data}")
    assert not (data / "responder.db").exists()  # refused before the store was opened


def test_serve_stops_on_sighup_as_on_sigterm(tmp_path: Path) -> None:
    """A closed terminal or `kill -HUP` (nothing to reload): it ended the daemon on the spot, with
    no line in its log and its jobs left running."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")},
        "RESPONDER_DATA_DIR": str(tmp_path / "data"),
        "RESPONDER_PORT": str(port),
    }
    with subprocess.Popen(
        [sys.executable, "-m", "responder", "serve"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as daemon:  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            url = f"http://127.0.0.1:{port}/readyz"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5):
                break
            assert daemon.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        daemon.send_signal(signal.SIGHUP)
        out, err = daemon.communicate(timeout=120)
    assert daemon.returncode == 0, out + err
    events = [json.loads(line) for line in out.splitlines()]
    stopping = [e for e in events if e["event"] == "daemon.stopping"]
    assert [e["signal"] for e in stopping] == ["SIGHUP"]
    assert events[-1]["event"] == "daemon.stopped"


@pytest.mark.parametrize("processes", [1, 2])
def test_serve_logs_an_unexpected_crash_as_one_line_with_its_traceback(
    processes: int,
    playbooks_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The daemon's crash, or with several processes the supervisor's."""

    def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the event loop broke")

    monkeypatch.setattr(web, "run_app", crash)
    monkeypatch.setattr(supervisor, "supervise", crash)
    if processes > 1:
        monkeypatch.setenv("RESPONDER_PROCESSES", str(processes))
        monkeypatch.setenv("RESPONDER_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    try:
        assert main(["serve"]) == 1
    finally:
        gc.unfreeze()
    out = capsys.readouterr().out
    event = "daemon.crashed" if processes == 1 else "supervisor.crashed"
    crashed = [json.loads(line) for line in out.splitlines() if f'"{event}"' in line]
    assert len(crashed) == 1
    assert "RuntimeError: the event loop broke" in str(crashed[0]["exception"])
    assert "in _serve" in str(crashed[0]["exception"])


def test_serve_refuses_a_playbook_named_as_a_system_one_in_one_line(
    playbooks_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (playbooks_dir / "mine.py").write_text(
        'from responder.playbook import Context, manual\n\n\n@manual\nasync def reap_stack(ctx: Context) -> None:\n    """Mine."""\n'
    )
    try:
        assert main(["serve"]) == 2
    finally:
        gc.unfreeze()
    captured = capsys.readouterr()
    assert captured.err == "responder: playbook names reserved for responder itself: reap_stack\n"
    assert "Traceback" not in captured.out


def test_check_refuses_a_playbook_named_as_a_system_one(
    playbooks_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `serve` would refuse, `check` refuses: a clean check is a promise that serve starts."""
    (playbooks_dir / "mine.py").write_text(
        'from responder.playbook import Context, manual\n\n\n@manual\nasync def reap_stack(ctx: Context) -> None:\n    """Mine."""\n'
    )
    assert main(["check"]) == 2
    assert capsys.readouterr().err == (
        "responder: playbook names reserved for responder itself: reap_stack\n"
    )


def test_serve_calls_a_store_lost_after_start_up_a_crash_not_a_failed_start(
    playbooks_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def started_then_lost(app: web.Application, **_kwargs: object) -> None:
        async def last_start_up_step() -> None:  # start-up's last step: everything is up
            await app.on_startup[-1](app)

        asyncio.run(last_start_up_step())
        raise StoreUnavailable("job store unavailable: the database went away")

    monkeypatch.setattr(web, "run_app", started_then_lost)
    try:
        assert main(["serve"]) == 1
    finally:
        gc.unfreeze()
    events = [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()]
    assert "daemon.crashed" in events and "daemon.start_failed" not in events


def test_a_supervisor_crash_masks_the_database_password(
    playbooks_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    password = "s3cret-supervisor-db-pw"
    url = f"postgresql://nobody:{password}@127.0.0.1:1/none"

    async def crash(self: supervisor.Supervisor) -> int:
        raise RuntimeError(f"lost {url}")

    monkeypatch.setattr(supervisor.Supervisor, "run", crash)
    monkeypatch.setenv("RESPONDER_PROCESSES", "2")
    monkeypatch.setenv("RESPONDER_PORT", "0")
    monkeypatch.setenv("RESPONDER_DATABASE_URL", url)
    assert main(["serve"]) == 1
    out = capsys.readouterr().out
    [crashed] = [json.loads(line) for line in out.splitlines() if '"supervisor.crashed"' in line]
    assert "RuntimeError: lost postgresql://nobody:" in str(crashed["exception"])
    assert password not in out
