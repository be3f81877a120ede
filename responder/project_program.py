"""A Pulumi Python project folder as a program: its `Pulumi.yaml`, its entry point, and running it.

One folder serves both ways a program runs: by hand (`pulumi up` in the folder, through our
`pulumi-language-python` host) and inside the daemon (a playbook's `program=` naming the folder),
so a team develops a program with the CLI and hands it to the daemon unchanged.
"""

import os
import re
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

PROJECT_FILE = "Pulumi.yaml"
ENTRY_FILE = "__main__.py"
# `package.module:function`; any other program spec names a project folder.
_MODULE_FUNCTION = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class ProjectFolderError(ValueError):
    """The folder is not a runnable Pulumi Python project; the message says what is missing."""


@dataclass(frozen=True)
class ProjectFolder:
    """A project folder: where its `Pulumi.yaml` is, the project's name, and what runs."""

    root: Path
    name: str
    main: Path  # a directory holding __main__.py, or a .py file

    @property
    def directory(self) -> Path:
        """The program's directory: first on its `sys.path`, and where dynamic providers start."""
        return program_directory(self.main)


def is_module_function(spec: str) -> bool:
    """Whether a playbook's `program=` is `module:function` (otherwise it names a project folder)."""
    return _MODULE_FUNCTION.fullmatch(spec) is not None


def read_project(folder: Path) -> ProjectFolder:
    """The project in `folder`, checked: a Python runtime and an entry point that exists."""
    if not folder.is_dir():
        raise ProjectFolderError(f"program folder {folder} does not exist or is not a directory")
    settings_file = folder / PROJECT_FILE
    if not settings_file.is_file():
        raise ProjectFolderError(f"program folder {folder} has no {PROJECT_FILE}")
    try:
        settings = yaml.safe_load(settings_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ProjectFolderError(f"{settings_file}: cannot be read: {e}") from None
    if not isinstance(settings, dict) or not isinstance(settings.get("name"), str):
        raise ProjectFolderError(f"{settings_file}: needs a `name:` (the project's name)")
    runtime = settings.get("runtime")
    runtime_name = runtime.get("name") if isinstance(runtime, dict) else runtime
    if runtime_name != "python":
        raise ProjectFolderError(
            f"{settings_file}: runtime is {runtime_name!r}; only Python programs can run here"
        )
    main = settings.get("main") or "."
    if not isinstance(main, str):
        raise ProjectFolderError(f"{settings_file}: `main:` must be a path, not {main!r}")
    entry = (folder / main).resolve()
    if entry.is_dir():
        if not (entry / ENTRY_FILE).is_file():
            raise ProjectFolderError(f"program folder {entry} has no {ENTRY_FILE}")
    elif not (entry.is_file() and entry.suffix == ".py"):
        raise ProjectFolderError(f"{settings_file}: `main: {main}` is not a .py file or a folder")
    return ProjectFolder(root=folder.resolve(), name=settings["name"], main=entry)


def run_program(main: Path) -> None:
    """Run a program as `pulumi up` runs it: as `__main__`, from its directory (so relative paths
    mean the same by hand and in the daemon's worker), that directory first on `sys.path`.

    The directory stays on the path: the program's modules are imported again later in the same
    process (a second run) and by reference when dynamic providers are pickled."""
    directory = str(program_directory(main))
    os.chdir(directory)  # the process runs only this program (the host, or a one-request worker)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    runpy.run_path(str(main), run_name="__main__")


def program_directory(main: Path) -> Path:
    return main if main.is_dir() else main.parent
