"""The burner program's scratch directories stay strictly inside their root, and so do its deletes."""

import os
from pathlib import Path

import pytest

from burner_program.providers import (
    SCRATCH_ROOT_VARIABLE,
    UnsafeScratchPathError,
    _ScratchDirectoryProvider,
    check_inside,
    scratch_path,
)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The trusted scratch root beside a sentinel, both in a data dir with its own sentinel."""
    (tmp_path / "sentinel").write_text("keep")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "sentinel").write_text("keep")
    monkeypatch.setenv(SCRATCH_ROOT_VARIABLE, str(scratch))
    return scratch


def sentinels_intact(root: Path) -> bool:
    return (root / "sentinel").exists() and (root.parent / "sentinel").exists()


def test_a_stack_gets_its_own_directory_under_its_project(root: Path) -> None:
    assert scratch_path(str(root), "burner", "incident-Q1") == str(root / "burner" / "incident-Q1")
    assert scratch_path(str(root), "burner", "incident-a-b.0123abcd") != scratch_path(
        str(root), "other", "incident-a-b.0123abcd"
    )


@pytest.mark.parametrize(
    ("project", "stack"),
    [("burner", ".."), ("burner", "."), ("..", "x"), (".", "x"), ("burner", "a/b"), ("burner", "")],
)
def test_names_that_are_not_one_plain_directory_are_refused(
    root: Path, project: str, stack: str
) -> None:
    with pytest.raises(UnsafeScratchPathError):
        scratch_path(str(root), project, stack)


def test_a_symlink_inside_the_root_cannot_lead_outside(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "burner").symlink_to(outside)
    with pytest.raises(UnsafeScratchPathError, match="not strictly inside"):
        scratch_path(str(root), "burner", "incident-Q1")


def test_check_inside_refuses_the_root_itself_its_parent_and_a_leaf_symlink(root: Path) -> None:
    check_inside(str(root / "burner" / "x"), str(root))  # not yet existing is fine
    for path in (root, root / ".", root / "burner" / ".." / "..", root.parent / "elsewhere"):
        with pytest.raises(UnsafeScratchPathError):
            check_inside(str(path), str(root))
    (root / "burner").mkdir()
    (root / "burner" / "link").symlink_to(root / "burner")  # inside, but rmtree would follow it
    with pytest.raises(UnsafeScratchPathError):
        check_inside(str(root / "burner" / "link"), str(root))


def test_create_then_delete_removes_only_the_stack_directory(root: Path) -> None:
    provider = _ScratchDirectoryProvider()
    path = scratch_path(str(root), "burner", "incident-Q1")
    created = provider.create({"path": path, "context": {"title": "t"}})
    assert (Path(path) / "context.json").exists()
    assert os.stat(path).st_mode & 0o777 == 0o700
    assert os.stat(Path(path) / "context.json").st_mode & 0o777 == 0o600
    assert created.outs is not None
    provider.delete(created.id, created.outs)
    assert not Path(path).exists() and sentinels_intact(root)


def test_create_refuses_a_path_outside_its_root(root: Path) -> None:
    with pytest.raises(UnsafeScratchPathError):
        _ScratchDirectoryProvider().create({"path": str(root / ".."), "context": {}})
    assert not (root.parent / "context.json").exists()


@pytest.mark.parametrize("path", ["..", ".", "../..", "burner/../.."])
def test_delete_refuses_a_recorded_path_outside_the_root(root: Path, path: str) -> None:
    with pytest.raises(UnsafeScratchPathError):
        _ScratchDirectoryProvider().delete(
            os.path.join(root, path), {"path": os.path.join(root, path), "root": str(root)}
        )
    assert sentinels_intact(root)


def test_delete_refuses_a_directory_swapped_for_a_symlink_after_create(
    root: Path, tmp_path: Path
) -> None:
    provider = _ScratchDirectoryProvider()
    path = scratch_path(str(root), "burner", "incident-Q1")
    created = provider.create({"path": path, "context": {}})
    (root / "burner").rename(root / "moved")
    (root / "burner").symlink_to(tmp_path)  # the project directory now leads to the data dir
    assert created.outs is not None
    with pytest.raises(UnsafeScratchPathError):
        provider.delete(created.id, created.outs)
    assert sentinels_intact(root)


def test_state_from_before_the_recorded_root_still_destroys_inside_its_root(root: Path) -> None:
    """Old state named `<scratch_root>/<incident id>` and recorded no root."""
    legacy = root / "Q1X7KD4R9PVM2T"
    legacy.mkdir()
    (legacy / "context.json").write_text("{}")
    _ScratchDirectoryProvider().delete(str(legacy), {"path": str(legacy), "context": {}})
    assert not legacy.exists() and sentinels_intact(root)


@pytest.mark.parametrize("name", ["..", "."])
def test_old_state_of_an_odd_incident_id_is_refused_not_removed(root: Path, name: str) -> None:
    """Before this fix, incident id `..` recorded `<scratch_root>/..`: the data dir itself."""
    legacy = os.path.join(root, name)
    with pytest.raises(UnsafeScratchPathError):
        _ScratchDirectoryProvider().delete(legacy, {"path": legacy, "context": {}})
    assert sentinels_intact(root)
