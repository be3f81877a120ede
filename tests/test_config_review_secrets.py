"""Attacker review: configured secrets as long as generated ones; the data dir's mode kept."""

import os
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from responder.config import ConfigError, Settings
from responder.daemon import create_app
from responder.stacks import PulumiEnvironment
from tests.helpers import REPO, Client, LogCapture, settings_for

MakeClient = Callable[..., Awaitable[Client]]
SHORT = "Zq9-short-token"  # 15 characters: one short of the minimum
LONG_ENOUGH = "Zq9-token-16char"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RESPONDER_API_TOKEN", "a"),
        ("RESPONDER_API_TOKEN", SHORT),
        ("RESPONDER_ALERTMANAGER_TOKEN", "a"),
        ("RESPONDER_ALERTMANAGER_TOKEN", f"  {SHORT}  "),  # padding does not count
        ("RESPONDER_PAGERDUTY_SECRETS", "a"),
        ("RESPONDER_PAGERDUTY_SECRETS", f"{LONG_ENOUGH}-first, {SHORT}"),  # any one short
    ],
)
def test_a_short_configured_secret_is_an_error_naming_the_variable_only(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}: .*at least 16 characters") as error:
        Settings.load({variable: value})
    assert SHORT not in str(error.value) and "[secret]" in str(error.value)


def test_secrets_of_sixteen_characters_are_accepted() -> None:
    assert len(LONG_ENOUGH) == 16
    settings = Settings.load(
        {
            "RESPONDER_API_TOKEN": LONG_ENOUGH,
            "RESPONDER_ALERTMANAGER_TOKEN": LONG_ENOUGH,
            "RESPONDER_PAGERDUTY_SECRETS": f"{LONG_ENOUGH}, {LONG_ENOUGH}-b",
        }
    )
    assert settings.api_token == settings.alertmanager_token == LONG_ENOUGH
    assert settings.pagerduty_secrets == (LONG_ENOUGH, f"{LONG_ENOUGH}-b")


def test_a_short_secret_in_the_config_file_is_an_error_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "responder.toml"
    config.write_text(f'[responder]\npagerduty_secrets = ["{LONG_ENOUGH}", "{SHORT}"]\n')
    with pytest.raises(ConfigError, match=r"responder\.toml: pagerduty_secrets: ") as error:
        Settings.load({"RESPONDER_CONFIG": str(config)})
    assert SHORT not in str(error.value)


def test_check_refuses_a_short_token(tmp_path: Path) -> None:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("RESPONDER_")}
    done = subprocess.run(
        [sys.executable, "-m", "responder", "check"],
        cwd=REPO,
        env={**inherited, "RESPONDER_DATA_DIR": str(tmp_path), "RESPONDER_ALERTMANAGER_TOKEN": "a"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "RESPONDER_ALERTMANAGER_TOKEN: must be at least 16 characters" in done.stderr
    assert "Traceback" not in done.stderr


async def test_an_open_existing_data_dir_keeps_its_mode_with_a_warning(
    make_client: MakeClient, data_dir: Path, logs: LogCapture
) -> None:
    data_dir.chmod(0o1777)  # e.g. a shared, sticky directory the operator pointed us at
    await make_client()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o1777
    [warning] = logs.events("data_dir.permissions")
    assert warning["level"] == "warning" and warning["mode"] == "1777"
    assert warning["path"] == str(data_dir.resolve())
    # What the daemon writes into it is still its user's only.
    for name in ("responder.db", "alertmanager-token", "events-v2-routing-key"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name


async def test_a_private_existing_data_dir_is_not_warned_about(
    make_client: MakeClient, data_dir: Path, logs: LogCapture
) -> None:
    data_dir.chmod(0o700)
    await make_client()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert logs.events("data_dir.permissions") == []


async def test_a_data_dir_the_daemon_creates_is_private(
    aiohttp_client: Callable[[web.Application], Awaitable[object]],
    tmp_path: Path,
    logs: LogCapture,
    pulumi_env: PulumiEnvironment,
) -> None:
    fresh = tmp_path / "new" / "data"
    await aiohttp_client(create_app(settings_for(fresh), redactor=logs.redactor))
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    assert stat.S_IMODE(fresh.parent.stat().st_mode) & 0o077 == 0
    assert (fresh / "responder.db").exists()
    assert logs.events("data_dir.permissions") == []
