"""Tags written straight into a local file backend: merged with those there, in the CLI's format,
and anything else left to the CLI."""

import json
from pathlib import Path

from responder.stacks.tags_file import write_tags


def backend(tmp_path: Path, meta: str = "version: 1\n") -> tuple[str, Path]:
    stacks = tmp_path / ".pulumi" / "stacks" / "burner"
    stacks.mkdir(parents=True)
    (tmp_path / ".pulumi" / "meta.yaml").write_text(meta)
    (stacks / "s1.json").write_text("{}")
    return tmp_path.as_uri(), stacks / "s1.pulumi-tags"


def test_tags_are_merged_into_the_stacks_tags_file(tmp_path: Path) -> None:
    url, path = backend(tmp_path)
    assert write_tags(url, "burner", "s1", {"responder:incident": "Q1", "a": "1"})
    path.write_text(json.dumps({"version": 1, "tags": {"a": "0", "other": "kept"}}))
    assert write_tags(url, "burner", "s1", {"responder:incident": "Q1", "a": "1"})
    written = json.loads(path.read_text())
    assert written == {
        "version": 1,
        "tags": {"a": "1", "other": "kept", "responder:incident": "Q1"},
    }
    assert sorted(p.name for p in path.parent.iterdir()) == ["s1.json", "s1.pulumi-tags"]


def test_anything_else_is_left_to_the_cli(tmp_path: Path) -> None:
    url, path = backend(tmp_path)
    tags = {"k": "v"}
    assert not write_tags("postgres://u@h/db", "burner", "s1", tags)
    assert not write_tags(url + "?no_tmp_dir=true", "burner", "s1", tags)
    assert not write_tags(url, "burner", "s2", tags)  # no checkpoint: not a stack of this backend
    assert not write_tags(url, "other", "s1", tags)
    path.write_text(json.dumps({"version": 2, "tags": {}}))
    assert not write_tags(url, "burner", "s1", tags)
    assert json.loads(path.read_text()) == {"version": 2, "tags": {}}
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    url, _ = backend(legacy, meta="version: 0\n")
    assert not write_tags(url, "burner", "s1", tags)
