"""Discover playbooks: import every `*.py` in the playbooks directory and collect its playbooks."""

import importlib.util
import sys
import traceback
from pathlib import Path

from responder.playbook import Playbook, PlaybookError


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
        raise PlaybookLoadError(f"{path}: {_where(e, path)}{type(e).__name__}: {e}") from None
    found = [value for value in vars(module).values() if isinstance(value, Playbook)]
    for playbook in found:
        playbook.file = path
    return found


def _where(e: BaseException, path: Path) -> str:
    """`line N: ` of the innermost frame inside the playbook file, when there is one."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == str(path)]
    return f"line {frames[-1].lineno}: " if frames else ""


def _validate(playbook: Playbook, path: Path) -> None:
    prefix = f"{path}: playbook {playbook.name!r}"
    if not playbook.triggers:
        raise PlaybookLoadError(f"{prefix}: has no triggers")
    module, _, attr = playbook.program.partition(":")
    if not module or not attr:
        raise PlaybookLoadError(f"{prefix}: program {playbook.program!r} must be 'module:function'")
    if importlib.util.find_spec(module) is None:
        raise PlaybookLoadError(f"{prefix}: program module {module!r} cannot be imported")
