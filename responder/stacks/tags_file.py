"""A new stack's tags written straight into a local file backend, as `pulumi stack tag set` does."""

# The CLI sets one tag per process (≈ 0.12 s of CPU each, four per new stack); on a `file://`
# backend all it does is rewrite `.pulumi/stacks/<project>/<stack>.pulumi-tags`, a JSON file
# `{"version": 1, "tags": {...}}` beside the stack's checkpoint (pulumi v3.274; tests read the tags
# back with `pulumi stack tag ls`). Any other backend, layout or version is left to the CLI.

import json
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

TAGS_VERSION = 1


def write_tags(backend_url: str, project: str, stack: str, tags: Mapping[str, str]) -> bool:
    """Add `tags` to the stack's tags in one atomic write. False, with nothing written, when the CLI
    must do it: not a plain `file://` backend, no project-scoped checkpoint of the stack there, or a
    tags file of another version."""
    directory = _stacks_dir(backend_url, project)
    if directory is None or "/" in stack or not (directory / f"{stack}.json").is_file():
        return False
    path = directory / f"{stack}.pulumi-tags"
    try:
        existing = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        existing = {"version": TAGS_VERSION, "tags": {}}
    if (
        not isinstance(existing, dict)
        or existing.get("version") != TAGS_VERSION
        or not isinstance(existing.get("tags"), dict)
    ):
        return False
    existing["tags"].update(tags)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(existing), encoding="utf-8")
    os.replace(tmp, path)  # a CLI never reads it half-written
    return True


def _stacks_dir(backend_url: str, project: str) -> Path | None:
    url = urllib.parse.urlsplit(backend_url)
    if url.scheme != "file" or url.netloc or url.query or url.fragment or "/" in project:
        return None
    root = Path(urllib.parse.unquote(url.path))
    try:  # version 1: the project-scoped layout
        meta: Any = yaml.safe_load((root / ".pulumi" / "meta.yaml").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if not isinstance(meta, dict) or meta.get("version") != 1:
        return None
    return root / ".pulumi" / "stacks" / project
