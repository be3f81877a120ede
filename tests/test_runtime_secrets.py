"""Secret files: an unusable one stops start-up naming the file; new ones are complete, durable, 0600;
a configured secret that is empty means "not configured"."""

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from responder.config import ConfigError, Settings
from responder.secret_files import ensure_secret_file
from tests.helpers import REPO, Client

MakeClient = Callable[..., Awaitable[Client]]
MIN_LENGTH = 16  # the shortest secret a file may hold


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty"),
        (b" \n\n", "is empty"),
        (b"short-secret\n", f"shorter than {MIN_LENGTH} characters"),
        (b"\xff\xfe not utf-8 at all, long enough though", "cannot read"),
    ],
)
def test_an_unusable_secret_file_is_an_error_naming_it(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "api-token"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=problem) as error:
        ensure_secret_file(path)
    assert str(path) in str(error.value)
    assert path.read_bytes() == content  # an operator's file is never overwritten


def test_an_unreadable_secret_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "alertmanager-token"
    path.mkdir()  # unreadable as a file whatever our privileges (chmod 000 does not stop root)
    with pytest.raises(ConfigError, match="cannot read") as error:
        ensure_secret_file(path)
    assert str(path) in str(error.value)


def test_an_error_never_shows_the_secret(tmp_path: Path) -> None:
    path = tmp_path / "api-token"
    path.write_text("tooShort1\n")
    with pytest.raises(ConfigError) as error:
        ensure_secret_file(path)
    assert "tooShort1" not in str(error.value)


def test_a_usable_file_is_read_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "api-token"
    path.write_text("  an-operator-chosen-token-0123\n")
    assert ensure_secret_file(path) == "an-operator-chosen-token-0123"


def test_a_new_secret_is_written_whole_fsynced_and_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append("dir" if stat.S_ISDIR(mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "secrets" / "pagerduty-webhook-secret"
    value = ensure_secret_file(path)
    assert len(value) >= MIN_LENGTH and path.read_text() == value + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert synced == ["file", "dir"]  # the content, then its name in the directory
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left
    assert ensure_secret_file(path) == value  # generated once


def test_empty_configured_secrets_mean_not_configured() -> None:
    settings = Settings.load(
        {
            "RESPONDER_API_TOKEN": "",
            "RESPONDER_ALERTMANAGER_TOKEN": "  ",
            "RESPONDER_PAGERDUTY_SECRETS": " , ",
            "RESPONDER_EVENTS_V2_ROUTING_KEYS": "",
        }
    )
    assert settings.api_token == "" and settings.alertmanager_token == ""
    assert settings.pagerduty_secrets == () and settings.events_v2_routing_keys == ()


async def test_the_daemon_generates_what_is_configured_empty(
    make_client: MakeClient, data_dir: Path
) -> None:
    client = await make_client(api_token="", pagerduty_secrets=())
    token = (data_dir / "api-token").read_text().strip()
    assert len(token) >= MIN_LENGTH and client.daemon.credentials.api_token == token
    empty = await client.http.post("/jobs/1/cancel", headers={"Authorization": "Bearer "})
    assert empty.status == 401
    ok = await client.http.post("/jobs/1/cancel", headers={"Authorization": f"Bearer {token}"})
    assert ok.status == 404
    assert client.daemon.credentials.pagerduty_secrets == (
        (data_dir / "pagerduty-webhook-secret").read_text().strip(),
    )


async def test_an_empty_secret_file_stops_the_daemon_starting(
    make_client: MakeClient, data_dir: Path
) -> None:
    (data_dir / "api-token").touch()
    with pytest.raises(ConfigError, match=r"api-token.*empty"):
        await make_client(api_token="")


def test_serve_exits_with_the_file_named(data_dir: Path) -> None:
    (data_dir / "pagerduty-webhook-secret").write_text("x\n")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")}
    env = {
        **inherited,
        "RESPONDER_DATA_DIR": str(data_dir),
        "RESPONDER_PORT": "0",
        "RESPONDER_API_TOKEN": "a-configured-api-token-01",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "responder", "serve"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon started with an unusable secret file")
    assert done.returncode == 2
    assert str(data_dir / "pagerduty-webhook-secret") in done.stderr
    assert "shorter than" in done.stderr and "Traceback" not in done.stderr


async def test_two_starts_at_once_agree_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "api-token"
    values = await asyncio.gather(*(asyncio.to_thread(ensure_secret_file, path) for _ in range(8)))
    assert len(set(values)) == 1 and path.read_text().strip() == values[0]
