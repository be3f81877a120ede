"""`pulumi-language-python`: Pulumi's LanguageRuntime service for a project folder's Python program."""

# Why our own: the Go host's module cannot be fetched here (see scripts/ensure-pulumi), and the SDK
# already ships the Python side of the service for inline programs (`LanguageServer`, private). The
# CLI finds this host beside itself (`.venv/bin/pulumi-language-python`, a launcher running
# `python -m responder.language_host`), starts it in the project folder as
# `pulumi-language-python ENGINE_ADDRESS` (older CLIs put `-OPTION=VALUE` flags first) with a pipe
# for stdin, reads the gRPC port from the first line of stdout, and at the end calls Cancel, then
# sends SIGINT (Ctrl-C-like, which is why the SDK's bare server printed a KeyboardInterrupt). Seen
# with CLI 3.274.1: `up`, `preview`, `refresh` and `destroy` call GetPluginInfo,
# GetRequiredPackages, Run (not `refresh` and `destroy`) and Cancel; `about` also calls About and
# GetProgramDependencies; `stack output` and `plugin ls` start no host. The program runs inside
# this process, the virtualenv's interpreter, so it imports what the daemon imports.

import functools
import importlib.metadata
import os
import signal
import stat
import sys
import threading
import traceback
from concurrent import futures
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import grpc
from google.protobuf import empty_pb2
from pulumi.automation._server import LanguageServer  # private: pinned with the SDK (see below)
from pulumi.errors import RunError
from pulumi.runtime._grpc_settings import _GRPC_CHANNEL_OPTIONS  # private: the SDK's own limits
from pulumi.runtime.proto import language_pb2, language_pb2_grpc, plugin_pb2
from pulumi.runtime.proto.language_pb2 import RunRequest

from responder.project_program import program_directory, run_program

# The SDK these private names were checked against; tests/test_language_host.py fails on another.
CHECKED_SDK_VERSION = "3.272.0"
HOST_NAME = "responder's pulumi-language-python"
# Everything else the service defines: code generation, packaging, dependency installation and
# plugins written in Python. Each answers UNIMPLEMENTED at once, never a hang.
UNSUPPORTED = (
    "InstallDependencies",
    "RuntimeOptionsPrompts",
    "Template",
    "RunPlugin",
    "GenerateProgram",
    "GenerateProject",
    "GeneratePackage",
    "Pack",
    "Link",
)


class LanguageHost(LanguageServer):
    """The SDK's inline-program service, run on the folder the CLI names, with what the CLI also
    asks of a spawned host: the handshake, plugin info, program dependencies, cancellation."""

    def __init__(self, engine_address: str) -> None:
        super().__init__(program=lambda: None)
        self.engine_address = engine_address

    def Handshake(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.engine_address = request.engine_address or self.engine_address
        return language_pb2.LanguageHandshakeResponse()

    def GetPluginInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        """The SDK's version: the host is the SDK's server (`pulumi about` lists it)."""
        return plugin_pb2.PluginInfo(version=importlib.metadata.version("pulumi"))

    def About(self, request: Any, context: grpc.ServicerContext) -> Any:
        about = super().About(request, context)  # type: ignore[no-untyped-call]
        about.metadata["host"] = HOST_NAME
        return about

    def GetProgramDependencies(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Every distribution installed in this interpreter (the program can import any of them)."""
        found = {
            d.metadata["Name"]: d.version
            for d in importlib.metadata.distributions()
            if d.metadata["Name"]
        }
        return language_pb2.GetProgramDependenciesResponse(
            dependencies=[
                language_pb2.DependencyInfo(name=name, version=version)
                for name, version in sorted(found.items(), key=lambda item: item[0].lower())
            ]
        )

    def Run(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Run the folder's program. The SDK's Run takes the engine's address from the first
        argument (where the CLI puts it for inline programs); a spawned host got it at start."""
        info = request.info
        directory = Path(info.program_directory or request.pwd or os.getcwd())
        entry = info.entry_point or request.program or "."
        self.program = functools.partial(_run_reporting, (directory / entry).resolve())
        run = RunRequest()
        run.CopyFrom(request)
        del run.args[:]
        run.args.append(self.engine_address)
        response = super().Run(run, context)  # type: ignore[no-untyped-call]
        if response.error:
            # The SDK has logged the error to the engine already; returned too, it shows twice.
            return language_pb2.RunResponse(bail=True)
        return response

    def Cancel(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Nothing to stop here: the engine's cancellation ends its resource monitor, which ends
        the program's registrations; the process ends when the CLI signals it."""
        return empty_pb2.Empty()


def _run_reporting(main: Path) -> None:
    """Run the program; its error is reported as Python would, from the program's frames on (the
    SDK would add its own and this host's, and the words "inline source")."""
    try:
        run_program(main)
    except RunError:
        raise  # the SDK's own errors (missing config, ...) are reported by their message alone
    except Exception as e:
        report = traceback.TracebackException.from_exception(e)
        directory = os.path.join(program_directory(main), "")
        frames = list(report.stack)
        ours = [i for i, frame in enumerate(frames) if frame.filename.startswith(directory)]
        report.stack = traceback.StackSummary.from_list(frames[ours[0] :] if ours else frames)
        raise RunError("".join(report.format()).rstrip()) from None


def _unsupported(name: str) -> Any:
    def answer(self: LanguageHost, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{name} is not supported by this host ({HOST_NAME}: it runs Python programs only)",
        )

    answer.__name__ = name
    return answer


for _name in UNSUPPORTED:
    setattr(LanguageHost, _name, _unsupported(_name))


def engine_address(argv: list[str]) -> str:
    """The engine's address: the last argument that is not an `-OPTION=VALUE` flag."""
    positional = [arg for arg in argv if not arg.startswith("-")]
    if not positional:
        raise SystemExit("usage: pulumi-language-python [-OPTION=VALUE ...] ENGINE_ADDRESS")
    return positional[-1]


def _wait_for_stdin_end(stop: threading.Event) -> None:
    """The CLI holds our stdin open while it needs us: its end means stop, even when the CLI was
    killed and could not signal. (Not a parent-death signal: the kernel sends that when the thread
    that started us ends, and the Go runtime may end its threads while the CLI lives on.)"""
    try:
        if not stat.S_ISFIFO(os.fstat(0).st_mode):
            return  # not started by the CLI (a terminal, /dev/null): signals only
        while os.read(0, 4096):
            pass
    except OSError:
        return
    stop.set()


SIGNAL_LATENCY = 0.2  # seconds at most between a signal and its handler (see main)


def main(argv: list[str]) -> NoReturn:
    """Serve until the CLI signals (SIGINT or SIGTERM) or goes away; exit 0, quietly, either way."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    threading.Thread(target=_wait_for_stdin_end, args=(stop,), daemon=True).start()
    address = engine_address(argv)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=_GRPC_CHANNEL_OPTIONS)
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(LanguageHost(address), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    # Python runs a handler in the main thread, between bytecodes, and only a signal the kernel
    # gives the main thread interrupts its wait: one given to another thread (gRPC's) would wait
    # for the CLI's SIGKILL. Waking now and then runs it. (Not a signal mask steering them to the
    # main thread: the program's threads would pass it on to every process the program starts.)
    while not stop.wait(SIGNAL_LATENCY):
        pass
    server.stop(grace=None)
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: a program still running in a server thread (the CLI gave up on it) would
    # hold the interpreter's exit until the CLI's SIGKILL.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
