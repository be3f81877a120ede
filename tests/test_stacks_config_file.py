"""Plaintext config written straight into a stack's settings file: namespaced as the CLI does, the
rest of the file kept, and anything unusual left to the CLI."""

from pathlib import Path

import yaml

from responder.stacks.config_file import write_plain_config

SETTINGS = (
    "secretsprovider: passphrase\n"
    "encryptionsalt: v1:abc:def\n"
    "config:\n"
    "  burner:token:\n"
    "    secure: v1:cipher\n"
    "  burner:old: kept\n"
)


def test_values_are_namespaced_and_the_rest_of_the_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.s1.yaml"
    path.write_text(SETTINGS)
    values = {"incident": '{"title": "x: y"}', "count": "123", "aws:region": "eu-west-1"}
    assert write_plain_config(tmp_path, "burner", "s1", {**values, "old": "kept"})
    written = yaml.safe_load(path.read_text())
    assert written["encryptionsalt"] == "v1:abc:def"
    assert written["secretsprovider"] == "passphrase"
    assert written["config"] == {
        "burner:token": {"secure": "v1:cipher"},
        "burner:old": "kept",
        "burner:incident": '{"title": "x: y"}',
        "burner:count": "123",  # still a string, not a YAML number
        "aws:region": "eu-west-1",
    }
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_unusual_keys_and_a_missing_file_are_left_to_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.s1.yaml"
    assert not write_plain_config(tmp_path, "burner", "s1", {"a": "b"})  # the CLI makes the file
    path.write_text(SETTINGS)
    for key in ("a:b:c", "with space", "", "x.y[0]"):
        assert not write_plain_config(tmp_path, "burner", "s1", {key: "v"}), key
    assert not write_plain_config(tmp_path, "burner", "org/s1", {"a": "b"})
    assert path.read_text() == SETTINGS
