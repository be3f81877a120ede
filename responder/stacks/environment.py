"""The environment of every Pulumi call: local backend, passphrase secrets, scratch root, no network."""

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from responder.logs import get_logger
from responder.secret_files import MIN_LENGTH, SecretFileError, ensure_secret_file

log = get_logger("responder.stacks")

# The burner program's scratch root (burner_program.providers reads it): never stack config or state,
# which outlive whoever wrote them. Not RESPONDER_*: those are settings, and an unknown one stops
# a daemon started from an environment that has this one.
SCRATCH_ROOT_VARIABLE = "BURNER_SCRATCH_ROOT"

# Losing the passphrase loses every stack's secrets, so its file is never replaced behind them.
_KEEP_IT = (
    "the stacks' secrets are encrypted with the passphrase it held: put that passphrase back into "
    "it, or point PULUMI_CONFIG_PASSPHRASE_FILE at a file that holds it"
)


@dataclass(frozen=True)
class PulumiEnvironment:
    """Where Pulumi keeps its state for this daemon, and the variables that point the CLI at it."""

    data_dir: Path
    pulumi_command: Path
    backend_url: str
    passphrase_env: dict[str, str]

    @classmethod
    def create(cls, data_dir: Path, pulumi_command: Path | None = None) -> "PulumiEnvironment":
        """Prepare the data dir; the user's PULUMI_* settings win over our defaults."""
        data_dir = data_dir.resolve()
        backend_dir = data_dir / "pulumi-state"
        backend_dir.mkdir(parents=True, exist_ok=True)
        backend_url = os.environ.get("PULUMI_BACKEND_URL") or backend_dir.as_uri()
        if (
            "PULUMI_CONFIG_PASSPHRASE" in os.environ
            or "PULUMI_CONFIG_PASSPHRASE_FILE" in os.environ
        ):
            passphrase_env: dict[str, str] = {}  # inherited from our own environment
        else:
            passphrase_file = data_dir / "pulumi-passphrase"
            local = backend_url == backend_dir.as_uri()
            _ensure_passphrase_file(passphrase_file, lambda: not local or _has_stacks(backend_dir))
            if not local:
                log.warning(
                    "pulumi.passphrase_not_shared",
                    path=str(passphrase_file),
                    message="a shared state backend with this node's own passphrase: other nodes "
                    "cannot decrypt its stacks' secrets; give every node the same "
                    "PULUMI_CONFIG_PASSPHRASE_FILE (or another secrets provider)",
                )
            passphrase_env = {"PULUMI_CONFIG_PASSPHRASE_FILE": str(passphrase_file)}
        return cls(data_dir, pulumi_command or find_pulumi(), backend_url, passphrase_env)

    @property
    def pulumi_home(self) -> Path:
        return self.data_dir / "pulumi-home"

    @property
    def scratch_root(self) -> Path:
        return self.data_dir / "scratch"

    def workspace_dir(self, project: str) -> Path:
        """Persistent per-project workspace: stack config and the passphrase salt live here."""
        return self.data_dir / "workspaces" / project

    def variables(self) -> dict[str, str]:
        """Variables added to the daemon's own environment for every CLI and worker process."""
        bin_dir = str(self.pulumi_command.parent)
        path = os.environ.get("PATH", "")
        return {
            "PULUMI_BACKEND_URL": self.backend_url,
            "PULUMI_HOME": str(self.pulumi_home),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            # Dynamic providers and the language host must run our interpreter, which has our packages.
            "PULUMI_PYTHON_CMD": sys.executable,
            "PATH": f"{bin_dir}{os.pathsep}{path}" if path else bin_dir,
            # Reaches the inline program in the worker and the dynamic provider the CLI starts.
            SCRATCH_ROOT_VARIABLE: str(self.scratch_root),
            **self.passphrase_env,
        }

    def passphrase(self) -> str | None:
        """The passphrase in use, so the log redactor can mask it."""
        if "PULUMI_CONFIG_PASSPHRASE" in os.environ:
            return os.environ["PULUMI_CONFIG_PASSPHRASE"]
        file = self.passphrase_env.get("PULUMI_CONFIG_PASSPHRASE_FILE") or os.environ.get(
            "PULUMI_CONFIG_PASSPHRASE_FILE"
        )
        return Path(file).read_text().strip() if file else None


def _ensure_passphrase_file(path: Path, stacks_may_exist: Callable[[], bool]) -> None:
    """Create the generated passphrase file if it is missing (complete, fsynced, mode 0600).

    An empty one is replaced only while no stack exists: a stack's secrets cannot be decrypted with
    another passphrase. Otherwise an empty, short or unreadable file stops start-up, naming it.
    """
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        ensure_secret_file(path)
        return
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise SecretFileError(
            f"{path}: cannot read the Pulumi passphrase file ({reason}); {_KEEP_IT}"
        ) from None
    if not value and not stacks_may_exist():
        log.warning("pulumi.passphrase_regenerated", path=str(path), reason="empty, and no stacks")
        path.unlink()
        ensure_secret_file(path)
        return
    if len(value) < MIN_LENGTH:
        problem = "empty" if not value else f"shorter than {MIN_LENGTH} characters"
        raise SecretFileError(f"{path}: the Pulumi passphrase file is {problem}; {_KEEP_IT}")


def _has_stacks(backend_dir: Path) -> bool:
    """Whether the file backend holds a stack (each is bound to the passphrase by its salt)."""
    stacks = backend_dir / ".pulumi" / "stacks"
    return any(p.name.endswith((".json", ".json.gz")) for p in stacks.rglob("*"))


def find_pulumi() -> Path:
    """The CLI beside our interpreter (the virtualenv's bin), else the first on PATH."""
    beside = Path(sys.executable).parent / "pulumi"
    if beside.exists():
        return beside.absolute()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(directory) / "pulumi"
        if candidate.exists():
            return candidate.absolute()
    raise FileNotFoundError(
        "no pulumi CLI found beside the interpreter or on PATH; run scripts/setup first"
    )
