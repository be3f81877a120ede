"""The store process: the SQLite store run apart from the daemon, so that its SQL and the daemon's
requests use two cores instead of sharing one interpreter lock (bench/RESULTS.md, "Store process").

Started by `SQLiteProcessStore` as `python -m responder.store.sqlite.server FD PARENT`, it answers
calls received on the socket `FD` and ends when the daemon closes it; it is killed when the daemon
dies. It ignores SIGINT and SIGTERM: a signal to the daemon's whole group (a service manager's
stop) must not cut the store off while the daemon drains. It does nothing else, so its SQL runs
inline on its event loop: the calls that arrive together run as tasks of one turn, and their
deliveries share one group commit.
"""

import asyncio
import faulthandler
import os
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

import uvloop

from responder.stacks import processes
from responder.store import LeaseLost, RecordRejected, StoreUnavailable
from responder.store.sqlite import SQLiteStore
from responder.store.wire import Channel

# What the store raises on purpose; anything else gets the child's traceback as a note.
EXPECTED = (StoreUnavailable, RecordRejected, LeaseLost)

OPEN = "open"  # (path, node, lease): the store opened; answers nothing
CLOSE = "close"  # the store closed; the process then ends


class Server:
    """Runs each call on the store and sends its answer: `(call id, True, result)`, or
    `(call id, False, exception)`."""

    def __init__(self) -> None:
        self.store: SQLiteStore | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.channel: Channel | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def receive(self, message: tuple[int, str, tuple[Any, ...], dict[str, Any]]) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(*message))
        self._tasks.add(task)  # referenced until done, or it may be collected before
        task.add_done_callback(self._tasks.discard)

    async def _answer(
        self, call_id: int, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        try:
            result = await self._run(name, args, kwargs)
        except Exception as e:  # handed to the caller, whatever it is
            if not isinstance(e, EXPECTED):  # where it came from, for the daemon's log
                e.add_note(f"in the store process:\n{traceback.format_exc()}")
            self._send((call_id, False, e))
        else:
            self._send((call_id, True, result))

    async def _run(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if name == OPEN:
            path, node, lease = args
            self.store = SQLiteStore(Path(path), node=node, lease=lease, inline=True)
            await self.store.open()
            return None
        if self.store is None:
            raise StoreUnavailable("job store unavailable: not open in its process")
        if name == CLOSE:
            await self._others()  # the calls sent before it are answered first
            await self.store.close()
            self.store = None
            if not self.closed.done():
                self.closed.set_result(None)
            return None
        if name.startswith("_"):
            raise AttributeError(f"not a store call: {name}")
        return await getattr(self.store, name)(*args, **kwargs)

    def _send(self, answer: tuple[int, bool, Any]) -> None:
        assert self.channel is not None
        try:
            self.channel.send(answer)
        except Exception as e:  # an answer pickle refuses: the caller still hears why
            call_id, _, _ = answer
            self.channel.send((call_id, False, RuntimeError(f"store answer not sendable: {e!r}")))

    async def _others(self) -> None:
        """Wait for every call under way but the current one."""
        while others := self._tasks - {asyncio.current_task()}:
            await asyncio.wait(others)

    async def finish(self) -> None:
        """After the daemon is gone: let calls under way end, then close the store."""
        await self._others()
        if self.store is not None:
            await self.store.close()


async def serve(sock: socket.socket) -> None:
    server = Server()
    _, server.channel = await asyncio.get_running_loop().create_unix_connection(
        lambda: Channel(server.receive), sock=sock
    )
    await asyncio.wait([server.closed, server.channel.closed], return_when=asyncio.FIRST_COMPLETED)
    await server.finish()
    server.channel.close()


def main(argv: list[str]) -> None:
    fd, parent = argv
    faulthandler.enable()  # a crash in SQLite's C code still says where: into the daemon's log
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    processes.signal_on_parent_death(signal.SIGKILL)
    if os.getppid() != int(parent):
        return  # the daemon died before the line above: nobody to answer
    uvloop.run(serve(socket.socket(fileno=int(fd))))


if __name__ == "__main__":
    main(sys.argv[1:])
