"""Our `pulumi-language-python` host: by-hand `pulumi up` in a project folder, and folder programs."""

import importlib.metadata
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2
from pulumi.automation._server import LanguageServer
from pulumi.runtime._grpc_settings import _GRPC_CHANNEL_OPTIONS
from pulumi.runtime.proto import language_pb2, language_pb2_grpc

from responder.language_host import CHECKED_SDK_VERSION, HOST_NAME
from responder.playbook_loader import PlaybookLoadError, load_playbooks
from responder.stacks.steps import load_program
from responder.store import JobStatus
from tests.helpers import REPO, Client, marked_processes, pd_event, signal_another_thread

BIN = Path(sys.executable).parent
HOST = BIN / "pulumi-language-python"  # installed by scripts/ensure-pulumi
MARK = "LANGUAGE_HOST_TEST"  # in the environment of everything a test starts, to find leftovers
PASSPHRASE = "language-host-test-passphrase"
SECRET = "by-hand-secret-0123"


def test_the_private_sdk_names_are_the_ones_checked() -> None:
    """The host subclasses the SDK's private LanguageServer: a new SDK must be checked again."""
    assert importlib.metadata.version("pulumi") == CHECKED_SDK_VERSION, (
        "check LanguageServer (Run, About, its `program`) and _GRPC_CHANNEL_OPTIONS against the"
        " new SDK, then update CHECKED_SDK_VERSION in responder/language_host.py"
    )
    assert list(inspect.signature(LanguageServer.__init__).parameters) == ["self", "program"]
    assert "request.args[0]" in inspect.getsource(LanguageServer.Run)  # where it reads the engine
    assert _GRPC_CHANNEL_OPTIONS


@pytest.fixture
def host() -> Iterator[tuple[subprocess.Popen[bytes], language_pb2_grpc.LanguageRuntimeStub]]:
    """The host as the CLI starts it: a pipe for stdin, the engine's address last."""
    proc = subprocess.Popen(
        [str(HOST), "-root=/nowhere", "127.0.0.1:1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield proc, language_pb2_grpc.LanguageRuntimeStub(channel)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()


Host = tuple[subprocess.Popen[bytes], language_pb2_grpc.LanguageRuntimeStub]


def test_the_host_answers_what_the_cli_asks_and_refuses_the_rest_at_once(host: Host) -> None:
    _, stub = host
    handshake = language_pb2.LanguageHandshakeRequest(engine_address="127.0.0.1:2")
    stub.Handshake(handshake, timeout=10)  # newer CLIs' first call
    info = stub.GetPluginInfo(empty_pb2.Empty(), timeout=10)
    assert info.version == CHECKED_SDK_VERSION
    about = stub.About(language_pb2.AboutRequest(), timeout=10)
    assert about.executable == sys.executable and about.metadata["host"] == HOST_NAME
    packages = stub.GetRequiredPackages(language_pb2.GetRequiredPackagesRequest(), timeout=10)
    assert list(packages.packages) == []
    deps = stub.GetProgramDependencies(language_pb2.GetProgramDependenciesRequest(), timeout=10)
    assert {d.name: d.version for d in deps.dependencies}["pulumi"] == CHECKED_SDK_VERSION
    stub.Cancel(empty_pb2.Empty(), timeout=10)

    unary = lambda: stub.GeneratePackage(language_pb2.GeneratePackageRequest(), timeout=10)  # noqa: E731
    streamed = lambda: list(  # noqa: E731
        stub.InstallDependencies(language_pb2.InstallDependenciesRequest(), timeout=10)
    )
    for call in (unary, streamed):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "not supported by this host" in str(refused.value.details())


@pytest.mark.parametrize("how", ["sigint", "stdin"])
def test_the_host_ends_quietly_when_the_cli_lets_it_go(host: Host, how: str) -> None:
    proc, stub = host
    stub.GetPluginInfo(empty_pb2.Empty(), timeout=10)
    if how == "sigint":
        proc.send_signal(signal.SIGINT)
    else:
        assert proc.stdin is not None
        proc.stdin.close()
    assert proc.wait(timeout=10) == 0
    assert proc.stderr is not None
    assert proc.stderr.read() == b""  # no KeyboardInterrupt traceback, nothing at all


def test_a_signal_given_to_another_thread_still_ends_the_host(host: Host) -> None:
    """Python runs the handler in the main thread, and only a signal given to the main thread
    interrupts its wait: one given to a gRPC thread left the host waiting for the CLI's SIGKILL.
    No thread blocks the signals instead (whatever the program starts would inherit the mask)."""
    proc, stub = host
    stub.GetPluginInfo(empty_pb2.Empty(), timeout=10)  # gRPC's threads are up and serving
    wanted = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
    threads = {}
    for task in Path(f"/proc/{proc.pid}/task").iterdir():
        status = (task / "status").read_text()
        (mask,) = (line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:"))
        threads[int(task.name)] = int(mask, 16) & wanted
    assert set(threads.values()) == {0}, threads
    signal_another_thread(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=5) == 0
    assert proc.stderr is not None
    assert proc.stderr.read() == b""


# By hand, with the real CLI.


def cli_env(tmp_path: Path) -> dict[str, str]:
    """Our CLI first on PATH, with a home, a file backend, a passphrase and a scratch root of the
    test's own, whatever the shell has set."""
    (tmp_path / "state").mkdir()
    return {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "BURNER_"))} | {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PULUMI_HOME": str(tmp_path / "pulumi-home"),
        "PULUMI_BACKEND_URL": (tmp_path / "state").as_uri(),
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "BURNER_SCRATCH_ROOT": str(tmp_path / "scratch"),
        MARK: str(tmp_path),
    }


def project_folder(tmp_path: Path, name: str, main: str) -> Path:
    project = tmp_path / name
    project.mkdir()
    (project / "Pulumi.yaml").write_text(f"name: {name}\nruntime: python\n")
    (project / "__main__.py").write_text(main)
    return project


@pytest.fixture
def by_hand(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `pulumi ARGS` in a copy of burner_program/, on a backend of the test's own."""
    project = tmp_path / "burner_program"
    shutil.copytree(REPO / "burner_program", project, ignore=shutil.ignore_patterns("__pycache__"))
    env = cli_env(tmp_path)

    def pulumi(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["pulumi", *args],
            cwd=project,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"pulumi {' '.join(args)}: {done.stdout}\n{done.stderr}"
        for stream in (done.stdout, done.stderr):
            assert "Traceback" not in stream and "KeyboardInterrupt" not in stream, stream
        return done

    return pulumi


def no_process_left(tag: str) -> dict[int, list[str]]:
    deadline = time.monotonic() + 10
    while (left := marked_processes(MARK, tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.pulumi
def test_the_burner_program_runs_by_hand(
    tmp_path: Path, by_hand: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    scratch = tmp_path / "scratch" / "burner" / "incident-demo"
    by_hand("stack", "init", "incident-demo")
    by_hand("config", "set", "request", "timezone")
    by_hand("config", "set", "--secret", "access_token", stdin=SECRET)

    up = by_hand("up", "--yes")
    assert "+ 3 created" in up.stdout
    assert json.loads((scratch / "context.json").read_text()) == {"incident_id": "incident-demo"}
    assert SECRET not in up.stdout + up.stderr

    by_hand("preview", "--expect-no-changes")  # fails on any change
    by_hand("refresh", "--yes")
    outputs = json.loads(by_hand("stack", "output", "--json").stdout)
    assert outputs["scratch_dir"] == str(scratch)
    assert outputs["access_token"] == "[secret]" and "utc_offset_seconds" in outputs["timezone"]
    shown = json.loads(by_hand("stack", "output", "--json", "--show-secrets").stdout)
    assert shown["access_token"] == SECRET  # the secret config reached the program
    assert HOST_NAME in by_hand("about").stdout  # the CLI used our host
    by_hand("plugin", "ls")

    by_hand("destroy", "--yes")
    assert not scratch.exists()
    assert no_process_left(str(tmp_path)) == {}


def readme_flow() -> str:
    """The README's by-hand commands, from `cd burner_program` to `pulumi destroy --yes`."""
    readme = (REPO / "README.md").read_text()
    block = readme[
        readme.index("    cd burner_program\n") : readme.index("    pulumi destroy --yes\n")
    ]
    return "\n".join(line.removeprefix("    ") for line in block.splitlines()) + (
        "\npulumi destroy --yes\n"
    )


@pytest.mark.pulumi
def test_the_readme_by_hand_flow_runs_as_written(tmp_path: Path) -> None:
    """In a copy of the repository's layout (burner_program/ beside .venv/), with nothing set."""
    shutil.copytree(
        REPO / "burner_program",
        tmp_path / "burner_program",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (tmp_path / ".venv").symlink_to(BIN.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "BURNER_"))} | {
        "PULUMI_HOME": str(tmp_path / "pulumi-home"),  # `pulumi login` writes here
        "PULUMI_SKIP_UPDATE_CHECK": "true",  # no network here
        "TMPDIR": str(tmp_path),  # the program's scratch root by hand
        MARK: str(tmp_path),
    }
    done = subprocess.run(
        ["bash", "-euc", readme_flow()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "utc_offset_seconds" in done.stdout  # `pulumi stack output` showed the host's clock
    scratch = tmp_path / "responder-scratch" / "burner" / "incident-demo"
    assert str(scratch) in done.stdout  # made by `up` ...
    assert (tmp_path / "data" / "by-hand-state" / ".pulumi").is_dir()
    assert not scratch.exists()  # ... and removed by `destroy`
    assert no_process_left(str(tmp_path)) == {}
    assert "host, which cannot be built" not in (REPO / "README.md").read_text()


@pytest.mark.pulumi
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_up_leaves_no_host_and_no_traceback(
    tmp_path: Path, how: signal.Signals
) -> None:
    """Ctrl-C in the middle of the program: the CLI cancels, then lets the host go. A killed CLI
    cannot: the host ends when its stdin, the CLI's pipe, closes."""
    started = tmp_path / "started"
    project = project_folder(
        tmp_path,
        "sleepy",
        f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(120)\n",
    )
    env = cli_env(tmp_path)
    subprocess.run(["pulumi", "stack", "init", "s"], cwd=project, env=env, check=True)
    cli = subprocess.Popen(
        ["pulumi", "up", "--yes", "--skip-preview"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline and cli.poll() is None, "the program never started"
            time.sleep(0.1)
        cli.send_signal(how)
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
    assert cli.returncode != 0
    if how == signal.SIGINT:
        assert "update canceled" in out + err
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    assert no_process_left(str(tmp_path)) == {}


@pytest.mark.pulumi
def test_a_failing_program_is_reported_once_from_its_own_frames(tmp_path: Path) -> None:
    project = project_folder(
        tmp_path,
        "failing",
        "import pulumi\n\n\ndef fail():\n    raise ValueError('boom')\n\n\nfail()\n",
    )
    env = cli_env(tmp_path)
    subprocess.run(["pulumi", "stack", "init", "s"], cwd=project, env=env, check=True)
    done = subprocess.run(
        ["pulumi", "up", "--yes", "--skip-preview"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    diagnostics = done.stdout[done.stdout.index("Diagnostics:") :]
    assert done.returncode != 0
    assert diagnostics.count("ValueError: boom") == 1, diagnostics
    traceback = diagnostics[diagnostics.index("Traceback") :]
    assert f'File "{project / "__main__.py"}", line 8, in <module>' in traceback
    assert "line 5, in fail" in traceback
    assert "responder" not in traceback and "pulumi/" not in traceback  # no frames of ours
    assert "inline source" not in done.stdout + done.stderr
    assert no_process_left(str(tmp_path)) == {}


# A playbook's program= naming a project folder.

FOLDER_PROGRAM = '''\
"""A project folder's program: a file in the scratch root, made by a provider of its own."""
import os

import pulumi
from notes import Note

config = pulumi.Config()
note = Note("note", text=config.require("text"))
pulumi.export("path", note.path)
pulumi.export("project", pulumi.get_project())
pulumi.export("cwd", os.getcwd())
pulumi.export("token", config.require_secret("token"))
'''

FOLDER_PROVIDER = '''\
"""The folder's own dynamic provider: the provider process must import it from the folder."""
import os
import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider


class _NoteProvider(ResourceProvider):
    def create(self, props):
        root = os.path.join(os.environ["BURNER_SCRATCH_ROOT"], "notes")
        os.makedirs(root, exist_ok=True)
        path = os.path.join(root, "note.txt")
        with open(path, "w") as f:
            f.write(props["text"])
        return CreateResult(id_=path, outs={"path": path, "text": props["text"]})

    def delete(self, id_, props):
        os.remove(id_)


class Note(Resource):
    path: pulumi.Output[str]

    def __init__(self, name, text):
        super().__init__(_NoteProvider(), name, {"text": text, "path": None})
'''

FOLDER_PLAYBOOKS = """\
from responder.playbook import Context, Secret, on, playbook


@playbook(program="../programs/notes")
@on("incident.triggered")
async def write_note(ctx: Context) -> None:
    await ctx.stack.set_config({"text": "hello from a folder", "token": Secret("tok-0123456789")})
    await ctx.stack.up()


@playbook(program="../programs/notes", allow_destroy=True)
@on("incident.resolved")
async def remove_note(ctx: Context) -> None:
    await ctx.stack.destroy()
"""


def notes_folder(root: Path) -> Path:
    folder = root / "programs" / "notes"
    folder.mkdir(parents=True)
    (folder / "Pulumi.yaml").write_text("name: notes\nruntime:\n  name: python\n")
    (folder / "__main__.py").write_text(FOLDER_PROGRAM)
    (folder / "notes.py").write_text(FOLDER_PROVIDER)
    (root / "playbooks").mkdir()
    (root / "playbooks" / "notes.py").write_text(FOLDER_PLAYBOOKS)
    return folder


@pytest.mark.pulumi
async def test_a_playbook_program_may_name_a_project_folder(
    tmp_path: Path, make_client: Callable[..., Awaitable[Client]]
) -> None:
    folder = notes_folder(tmp_path)
    playbooks = load_playbooks(tmp_path / "playbooks")
    assert {(p.project, p.program) for p in playbooks} == {("notes", str(folder))}
    client = await make_client(playbooks=playbooks)

    assert (await client.deliver(pd_event("incident.triggered", "QFOLDER"))).status == 202
    [job] = await client.wait_for_jobs()
    assert job.status == JobStatus.SUCCEEDED, job.error
    record = await (await client.http.get(f"/jobs/{job.id}")).json()
    note = Path(record["outputs"]["path"])
    assert note.read_text() == "hello from a folder"
    assert record["outputs"]["project"] == "notes" and record["outputs"]["token"] == "[secret]"
    assert record["outputs"]["cwd"] == str(folder)  # as by hand: from its own directory

    assert (await client.deliver(pd_event("incident.resolved", "QFOLDER"))).status == 202
    jobs = await client.wait_for_jobs()
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 2, [j.error for j in jobs]
    assert not note.exists()


@pytest.mark.parametrize(
    ("layout", "problem"),
    [
        ({}, "does not exist or is not a directory"),
        ({"__main__.py": "pass\n"}, "has no Pulumi.yaml"),
        ({"Pulumi.yaml": "name: x\nruntime: python\n"}, "has no __main__.py"),
        ({"Pulumi.yaml": "name: x\nruntime: nodejs\n", "__main__.py": ""}, "runtime is 'nodejs'"),
        ({"Pulumi.yaml": "runtime: python\n", "__main__.py": ""}, "needs a `name:`"),
        ({"Pulumi.yaml": "name: x\nruntime: python\nmain: app.py\n"}, "`main: app.py` is not"),
    ],
)
def test_a_folder_that_is_not_a_python_project_is_a_load_error(
    tmp_path: Path, layout: dict[str, str], problem: str
) -> None:
    folder = tmp_path / "prog"
    if layout:
        folder.mkdir()
    for name, text in layout.items():
        (folder / name).write_text(text)
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "p.py").write_text(
        "from responder.playbook import manual, playbook\n"
        "@playbook(program='../prog')\n@manual\nasync def p(ctx): pass\n"
    )
    with pytest.raises(PlaybookLoadError) as refused:
        load_playbooks(tmp_path / "playbooks")
    message = str(refused.value)
    assert "p.py: playbook 'p': program '../prog' is neither 'module:function' nor" in message
    assert problem in message


def test_a_folder_program_runs_its_main_with_the_folder_importable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the program changes directory: restored after the test
    folder = tmp_path / "prog"
    folder.mkdir()
    (folder / "Pulumi.yaml").write_text("name: prog\nruntime: python\nmain: src\n")
    (folder / "src").mkdir()
    (folder / "src" / "helper.py").write_text("VALUE = 42\n")
    marker = tmp_path / f"ran-{uuid.uuid4().hex}"
    (folder / "src" / "__main__.py").write_text(
        "import helper, os, pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text(f'{{helper.VALUE}} {{os.getcwd()}}')\n"
    )
    try:
        load_program(str(folder))()
    finally:  # the program ran in this process: leave its path and module behind it
        sys.path.remove(str(folder / "src"))
        sys.modules.pop("helper", None)
    assert marker.read_text() == f"42 {folder / 'src'}"
