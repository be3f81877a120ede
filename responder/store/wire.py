"""Messages between the daemon and its store process: pickles, each after its length, on a socket
pair that only those two processes hold (so pickle trusts its input as the daemon trusts itself)."""

import asyncio
import pickle
import struct
from collections.abc import Callable
from typing import Any, cast

HEADER = struct.Struct("!I")


class Channel(asyncio.Protocol):
    """One end of the pair. Each message received goes to `on_message`; `send` queues a message,
    and what was queued in one turn of the event loop leaves in one write (the answers of a group
    commit, the calls made while it ran)."""

    def __init__(self, on_message: Callable[[Any], None]) -> None:
        self._on_message = on_message
        self._received = bytearray()
        self._outgoing: list[bytes] = []
        self._transport: asyncio.WriteTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)  # uvloop's: not a subclass

    def data_received(self, data: bytes) -> None:
        received = self._received
        received += data
        start = 0
        while len(received) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(received, start)
            end = start + HEADER.size + size
            if end > len(received):
                break
            with memoryview(received) as view:  # released before the buffer is cut below
                message = pickle.loads(view[start + HEADER.size : end])
            start = end
            self._on_message(message)
        del received[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, message: object) -> None:
        """Queue `message`; it is written at the end of this turn of the loop. A message that
        cannot be pickled raises here, and nothing of it is queued."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing += (HEADER.pack(len(data)), data)

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(outgoing))

    def close(self) -> None:
        """Close after writing what is queued (the answer to a close, say)."""
        self._flush()
        if self._transport is not None:
            self._transport.close()
