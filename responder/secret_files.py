"""Secrets generated once into the data dir (mode 0600) when the operator configured none."""

import contextlib
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from responder.config import MIN_SECRET_LENGTH, ConfigError

MIN_LENGTH = MIN_SECRET_LENGTH


class SecretFileError(ConfigError):
    """A secret file exists but cannot be used; the message names the file, never its content."""


def ensure_secret_file(
    path: Path, make: Callable[[], str] = lambda: secrets.token_urlsafe(32)
) -> str:
    """Return the secret stored at `path`, creating it with `make()` if it is missing.

    A new secret is written to a temporary file, fsynced, then linked into place and the directory
    fsynced: a crash leaves either no file or the whole secret, never an empty or partial one. So an
    existing file that is unreadable, empty or shorter than MIN_LENGTH characters was not written by
    us, and would weaken or disable authentication: it stops start-up.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        return _read(path)
    value = make()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # unlike a rename, never replaces a secret another process wrote
        except FileExistsError:
            return _read(path)
    finally:
        os.unlink(tmp)
    _fsync_dir(path.parent)
    return value


def _read(path: Path) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise SecretFileError(
            f"{path}: cannot read this secret file ({reason}); fix it, or remove it to have a new "
            "secret generated"
        ) from None
    if len(value) < MIN_LENGTH:
        problem = "empty" if not value else f"shorter than {MIN_LENGTH} characters"
        raise SecretFileError(
            f"{path}: this secret file is {problem}; write a longer secret into it, or remove it "
            "to have a new one generated"
        )
    return value


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
