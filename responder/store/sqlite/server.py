"""The store process: the SQLite store run apart from the daemon, so that its SQL and the daemon's
requests use two cores instead of sharing one interpreter lock (bench/RESULTS.md, "Store process").

Started by `SQLiteProcessStore` as `python -m responder.store.sqlite.server FD`, it answers calls
received on the socket `FD` and ends when the daemon closes it or dies. It does nothing else, so
its SQL runs inline on its event loop: the calls that arrive together run as tasks of one turn, and
their deliveries share one group commit.
"""

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import uvloop

from responder.store.sqlite import SQLiteStore
from responder.store.wire import Channel

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
            raise RuntimeError("the store process got a call before its store was opened")
        if name == CLOSE:
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

    async def finish(self) -> None:
        """After the daemon is gone: let calls under way end, then close the store."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
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
    (fd,) = argv
    uvloop.run(serve(socket.socket(fileno=int(fd))))


if __name__ == "__main__":
    main(sys.argv[1:])
