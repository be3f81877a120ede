"""The generated Pulumi passphrase file: created whole and private; an unusable one stops start-up
naming the file, and an empty one is replaced only while no stack's secrets depend on it."""

import stat
from pathlib import Path

import pytest

from responder.secret_files import SecretFileError
from responder.stacks import PulumiEnvironment
from tests.helpers import LogCapture


@pytest.fixture(autouse=True)
def own_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"):
        monkeypatch.delenv(var, raising=False)


def passphrase_file(data_dir: Path) -> Path:
    return data_dir / "pulumi-passphrase"


def add_stack(data_dir: Path) -> None:
    """A stack in the file backend, as `pulumi stack init` leaves it."""
    stacks = data_dir / "pulumi-state" / ".pulumi" / "stacks" / "burner"
    stacks.mkdir(parents=True)
    (stacks / "incident-Q1.json").write_text("{}")


def test_created_once_private_and_long(data_dir: Path) -> None:
    env = PulumiEnvironment.create(data_dir)
    path = passphrase_file(data_dir)
    assert env.passphrase_env == {"PULUMI_CONFIG_PASSPHRASE_FILE": str(path)}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = env.passphrase()
    assert first and len(first) >= 16
    assert PulumiEnvironment.create(data_dir).passphrase() == first


@pytest.mark.parametrize("content", ["", "\n", "  \n"])
def test_empty_is_regenerated_while_there_are_no_stacks(
    data_dir: Path, logs: LogCapture, content: str
) -> None:
    path = passphrase_file(data_dir)
    path.write_text(content)
    path.chmod(0o644)
    env = PulumiEnvironment.create(data_dir)
    passphrase = env.passphrase()
    assert passphrase and len(passphrase) >= 16
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [line["path"] for line in logs.events("pulumi.passphrase_regenerated")] == [str(path)]


def test_empty_with_stacks_stops_start_up(data_dir: Path) -> None:
    add_stack(data_dir)
    path = passphrase_file(data_dir)
    path.write_text("")
    with pytest.raises(SecretFileError, match="put that passphrase back") as raised:
        PulumiEnvironment.create(data_dir)
    assert str(path) in str(raised.value) and "empty" in str(raised.value)
    assert path.read_text() == ""  # left for the operator to restore


def test_empty_with_another_backend_stops_start_up(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stacks elsewhere cannot be checked, so they are assumed to exist."""
    monkeypatch.setenv("PULUMI_BACKEND_URL", (tmp_path / "elsewhere").as_uri())
    passphrase_file(data_dir).write_text("")
    with pytest.raises(SecretFileError, match="empty"):
        PulumiEnvironment.create(data_dir)


def test_short_stops_start_up(data_dir: Path) -> None:
    path = passphrase_file(data_dir)
    path.write_text("hunter2\n")
    with pytest.raises(SecretFileError, match="shorter than 16 characters") as raised:
        PulumiEnvironment.create(data_dir)
    assert str(path) in str(raised.value)
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize("make", ["directory", "not utf-8"])
def test_unreadable_stops_start_up(data_dir: Path, make: str) -> None:
    path = passphrase_file(data_dir)
    if make == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"\xff\xfe" * 20)
    with pytest.raises(SecretFileError, match="cannot read") as raised:
        PulumiEnvironment.create(data_dir)
    assert str(path) in str(raised.value)
