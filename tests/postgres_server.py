"""A throw-away PostgreSQL cluster (Debian's package) in a temp dir on a free loopback port."""

# `initdb` and `pg_ctl` run as the `postgres` user when we are root (PostgreSQL refuses to run as
# root, and CI runs as root), in a directory that user owns. Every server process carries a marker in
# its environment, so `stop` can prove that none outlived the cluster.

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from tests.alertmanager_server import free_port
from tests.helpers import marked_processes

MARKER = "PYTEST_POSTGRES_CLUSTER"  # not RESPONDER_*: settings refuse unknown ones
USER = "postgres"  # the superuser, and the system user Debian's package creates
# Settings for speed: the cluster dies with the session, so crash safety buys nothing.
FAST = ("fsync=off", "full_page_writes=off", "synchronous_commit=off", "max_connections=200")


def binaries() -> Path:
    """The newest installed server's bin dir (Debian keeps them out of PATH)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    assert found, "PostgreSQL is not installed: run scripts/install-test-services"
    return found[-1].parent


class PostgresServer:
    """`start()`, use `url(database)`, `stop()`; `pause()` and `resume()` make an outage. The superuser has a password (SCRAM over TCP), so
    the URLs carry one, as production ones do."""

    def __init__(self) -> None:
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.tag = uuid.uuid4().hex
        self.root = Path(tempfile.mkdtemp(prefix="responder-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _as_postgres(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", USER, "--", *command]
        env = {**os.environ, MARKER: self.tag}
        subprocess.run(command, check=True, env=env, capture_output=True, timeout=120)

    def start(self) -> None:
        """Create the cluster and start its server."""
        if os.geteuid() == 0:
            user = pwd.getpwnam(USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.root.chmod(0o700)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, pwd.getpwnam(USER).pw_uid, -1)
        try:
            self._as_postgres(
                str(binaries() / "initdb"), "-D", str(self.data), "-U", USER, "-E", "UTF8",
                "--locale=C", "--no-sync", "--auth-local=trust", "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
            )  # fmt: skip
        except subprocess.CalledProcessError as e:
            self.stop()
            raise AssertionError(f"initdb failed: {e.stderr.decode()}") from e
        finally:
            pwfile.unlink(missing_ok=True)
        self.resume()

    def resume(self) -> None:
        """Start the server (again) on its port, and wait until it takes connections."""
        options = [f"-c listen_addresses=127.0.0.1 -p {self.port}"]
        options += [f"-c unix_socket_directories={self.root}"]
        options += [f"-c {setting}" for setting in FAST]
        try:
            self._as_postgres(
                str(binaries() / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                "-t", "60", "-o", " ".join(options), "start",
            )  # fmt: skip
        except subprocess.CalledProcessError as e:
            log = self.log.read_text() if self.log.exists() else ""
            self.stop()
            raise AssertionError(f"postgres did not start: {e.stderr.decode()}\n{log}") from e

    def pause(self) -> None:
        """Stop the server, keeping the cluster (fast shutdown: sessions are ended)."""
        if (self.data / "postmaster.pid").exists():
            self._as_postgres(
                str(binaries() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
            )

    def stop(self) -> None:
        """Stop the server, check that none of its processes remains, and delete the cluster."""
        with contextlib.suppress(subprocess.SubprocessError):
            self.pause()
        deadline = time.monotonic() + 10
        while (left := marked_processes(MARKER, self.tag)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
        assert not left, f"postgres processes outlived the cluster: {left}"


@contextlib.asynccontextmanager
async def fresh_database(server: PostgresServer) -> AsyncIterator[str]:
    """A new, empty database on `server` for one test: its URL; dropped afterwards (any session
    still connected to it is ended). Each statement on its own connection: a test may restart the
    server in between."""
    name = f"test_{uuid.uuid4().hex}"
    await _admin(server, f'CREATE DATABASE "{name}"')
    try:
        yield server.url(name)
    finally:
        await _admin(server, f'DROP DATABASE "{name}" WITH (FORCE)')


async def _admin(server: PostgresServer, statement: str) -> None:
    admin = await asyncpg.connect(server.url())
    try:
        await admin.execute(statement)
    finally:
        await admin.close()
