"""The dynamic-provider plugin as the CLI starts it: it serves, and the CLI's SIGINT ends it at once."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2
from pulumi.runtime.proto import provider_pb2_grpc

from tests.helpers import signal_another_thread

LAUNCHER = Path(sys.executable).parent / "pulumi-resource-pulumi-python"  # scripts/ensure-pulumi


@pytest.fixture
def provider() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The launcher as the CLI starts it: its own process group, pipes, the engine's address."""
    proc = subprocess.Popen(
        [str(LAUNCHER), "127.0.0.1:1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        process_group=0,
    )
    try:
        assert proc.stdout is not None
        yield proc, int(proc.stdout.readline())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()


def serves(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = provider_pb2_grpc.ResourceProviderStub(channel)
        return stub.GetPluginInfo(empty_pb2.Empty(), timeout=10) is not None


def ended_within(proc: subprocess.Popen[bytes], seconds: float) -> float:
    started = time.monotonic()
    proc.wait(timeout=seconds)  # raises if it is still there
    return time.monotonic() - started


def test_the_cli_sigint_to_its_process_group_ends_it(
    provider: tuple[subprocess.Popen[bytes], int],
) -> None:
    """The usual way (Pulumi's own provider ended this way too): it must stay quick."""
    proc, port = provider
    assert serves(port)
    os.killpg(proc.pid, signal.SIGINT)  # what the CLI does when it closes a plugin
    assert ended_within(proc, 3) < 3


def test_a_sigint_that_lands_on_another_thread_still_ends_it(
    provider: tuple[subprocess.Popen[bytes], int],
) -> None:
    """`pulumi.dynamic` itself waits for a KeyboardInterrupt that only a signal given to its main
    thread raises: this one, given to a gRPC thread, left it waiting for the CLI's SIGKILL 5 s
    later."""
    proc, port = provider
    assert serves(port)
    signal_another_thread(proc.pid, signal.SIGINT)
    assert ended_within(proc, 3) < 3
