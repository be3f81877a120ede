"""Discover playbooks: import every `*.py` in the playbooks directory and collect its playbooks."""

import importlib.util
import inspect
import re
import sys
import traceback
from pathlib import Path

from responder.playbook import Playbook, PlaybookError
from responder.playbook import playbook as options_decorator
from responder.project_program import ProjectFolderError, is_module_function, read_project


class PlaybookLoadError(Exception):
    """Start-up stops on this: the message names the file, the playbook and the problem."""


def load_playbooks(directory: Path) -> list[Playbook]:
    if not directory.is_dir():
        raise PlaybookLoadError(f"{directory}: playbooks directory does not exist")
    playbooks: list[Playbook] = []
    seen: dict[str, Path] = {}
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        for playbook in _load_file(path):
            if playbook.name in seen:
                raise PlaybookLoadError(
                    f"{path}: playbook {playbook.name!r}: name already used in {seen[playbook.name]}"
                )
            seen[playbook.name] = path
            _validate(playbook, path)
            playbooks.append(playbook)
    return playbooks


def _load_file(path: Path) -> list[Playbook]:
    module_name = f"responder_playbooks.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PlaybookLoadError(f"{path}: cannot be imported as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except PlaybookError as e:
        raise PlaybookLoadError(f"{path}: {_where(e, path)}{e}") from None
    except Exception as e:
        hint = _moved_option(e)
        raise PlaybookLoadError(f"{path}: {_where(e, path)}{type(e).__name__}: {e}{hint}") from None
    found = [value for value in vars(module).values() if isinstance(value, Playbook)]
    for playbook in found:
        playbook.file = path
    return found


def _moved_option(e: Exception) -> str:
    """A hint for a playbook written for the earlier API, where @on also took the options."""
    found = re.fullmatch(r"on\(\) got an unexpected keyword argument '(\w+)'", str(e))
    if (
        isinstance(e, TypeError)
        and found
        and found[1] in inspect.signature(options_decorator).parameters
    ):
        return f" ({found[1]}= is a playbook option: give it with @playbook({found[1]}=...))"
    return ""


def _where(e: BaseException, path: Path) -> str:
    """`line N: ` of the innermost frame inside the playbook file, when there is one."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == str(path)]
    return f"line {frames[-1].lineno}: " if frames else ""


def _validate(playbook: Playbook, path: Path) -> None:
    prefix = f"{path}: playbook {playbook.name!r}"
    if not playbook.triggers and not playbook.manual:
        raise PlaybookLoadError(
            f"{prefix}: has no triggers (add @on(...), or @manual for a playbook run only by hand)"
        )
    if not is_module_function(playbook.program):
        _resolve_folder(playbook, path, prefix)
        return
    module = playbook.program.partition(":")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package missing (`nosuchpkg.mod`): find_spec imports it
        found = False
    if not found:
        raise PlaybookLoadError(f"{prefix}: program module {module!r} cannot be imported")


def _resolve_folder(playbook: Playbook, path: Path, prefix: str) -> None:
    """A `program=` that is not `module:function` names a Pulumi project folder, relative to the
    playbook's file: made absolute (workers run elsewhere), and its project's name is the
    playbook's project unless the playbook gives one, so its stacks are the ones `pulumi up`
    in the folder makes."""
    try:
        project = read_project(path.parent / playbook.program)
    except ProjectFolderError as e:
        raise PlaybookLoadError(
            f"{prefix}: program {playbook.program!r} is neither 'module:function' nor a Pulumi"
            f" project folder: {e}"
        ) from None
    playbook.program = str(project.root)
    if "project" not in playbook.declared:
        playbook.project = project.name
