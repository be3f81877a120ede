"""Secrets generated once into the data dir (mode 0600) when the operator configured none."""

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def ensure_secret_file(
    path: Path, make: Callable[[], str] = lambda: secrets.token_urlsafe(32)
) -> str:
    """Return the secret stored at `path`, creating it with `make()` if it is missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    value = make()
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value
