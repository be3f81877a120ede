"""Plaintext config written straight into a stack's settings file, as `pulumi config set` writes it."""

# `pulumi config set-all --plaintext` only rewrites `Pulumi.<stack>.yaml`; doing it here saves a CLI
# process per provisioning. Secrets still go through the CLI: it encrypts them with the stack's key.

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

# Keys written here: `name` (namespaced by the project, as the CLI does) or `namespace:name`. Any
# other spelling is left to the CLI, which checks it and refuses what it cannot parse.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?")


def write_plain_config(work_dir: Path, project: str, stack: str, values: Mapping[str, str]) -> bool:
    """Set `values` in the stack's settings file, keeping everything else in it (the encryption
    salt, secrets, other keys). False, with nothing written, when the CLI should do it instead: a
    key this does not write, or no settings file of the form written here (the CLI makes one)."""
    path = work_dir / f"Pulumi.{stack}.yaml"
    if "/" in stack or not all(_PLAIN_KEY.fullmatch(key) for key in values):
        return False
    try:
        settings: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    settings = {} if settings is None else settings
    config = settings.setdefault("config", {}) if isinstance(settings, dict) else None
    if not isinstance(config, dict):
        return False
    for key, value in values.items():
        config[key if ":" in key else f"{project}:{key}"] = value
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(
        yaml.safe_dump(settings, allow_unicode=True, sort_keys=False, width=1 << 20),
        encoding="utf-8",
    )
    os.replace(tmp, path)  # a CLI never reads it half-written
    return True
