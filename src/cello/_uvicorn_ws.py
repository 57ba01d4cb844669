"""uvicorn's `websockets-sansio` WebSocket backend with two upstream defects corrected.

`WebSocketProtocol` is uvicorn's `WebSocketsSansIOProtocol` (written against uvicorn 0.55
and websockets 17) and differs from it in exactly two places:

1. **A close frame between the fragments of a message** (Autobahn|Testsuite case 7.1.5:
   a text frame without FIN, a close frame, then the continuation) gets a normal closing
   handshake that echoes the client's code. RFC 6455 allows control frames between
   fragments (5.4) and asks for a close frame in reply, typically echoing the code (5.5.1);
   the suite expects the echo. websockets' sans-I/O `Protocol.recv_frame`
   (`websockets/protocol.py`) instead raises `ProtocolError("incomplete fragmented
   message")` when a close frame arrives while `current_size` says a message is
   incomplete, so the connection fails with 1002. websockets documents this as its choice
   (its `compliance/README.rst`), and uvicorn builds its `ServerProtocol` with no way to
   change it. The connection's `ServerProtocol` here forgets the incomplete message when a
   close frame arrives; websockets then handles the close frame as any other: it echoes
   it and discards whatever follows, the rest of the message included. websockets 13 to
   15 name the counter `cur_size`, and there this part has no effect. Drop it when
   websockets accepts a close frame mid-message or uvicorn works around it:
   `test_close_between_fragments_is_answered_with_its_code[websockets-sansio]` in
   `tests/test_faults.py` is a strict xfail and starts failing then.

2. **A request websockets' HTTP parser refuses** (a request line or a header line over
   8 KiB, more than 128 headers) is answered and the connection closed. uvicorn up to 0.54
   checks `conn.parser_exc` but not `conn.handshake_exc` after feeding the request to
   websockets, so nothing is sent and the connection stays open until the client gives
   up. uvicorn 0.55 answers such a request itself (its `handle_handshake_exception`:
   websockets' own 414 or 431 with websockets 17, else 400); there this override finds the
   transport already closing and does nothing. Drop `data_received` below when cello
   requires uvicorn 0.55 or later.

Pass it to uvicorn by import path: `uvicorn app:app --ws cello.serving:WebSocketProtocol`,
or `ws="cello.serving:WebSocketProtocol"` in `uvicorn.Config`, `app.run()` or a gunicorn
`UvicornWorker`'s `CONFIG_KWARGS`. `app.run()` uses it by default.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

__all__ = ["WebSocketProtocol"]

_CLOSE = Opcode.CLOSE


class _ServerProtocol(ServerProtocol):
    """websockets' server protocol, accepting a close frame between a message's fragments."""

    def recv_frame(self, frame: Frame) -> None:
        # This runs for every frame received: a module constant and a direct call, not
        # `super()`, keep its cost to about 0.1 µs a frame.
        if frame.opcode is _CLOSE:
            # The close frame ends the connection: the incomplete message (if any) is
            # dropped, instead of failing the connection with 1002.
            self.current_size = None
        ServerProtocol.recv_frame(self, frame)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's `websockets-sansio` backend, corrected as the module says."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # Only the frame handling changes: the connection keeps every setting uvicorn gave
        # it (extensions, max_size, logger), and its parser, which calls `self.recv_frame`,
        # picks the override up. `_ServerProtocol` adds no state, so the swap is safe.
        self.conn.__class__ = _ServerProtocol

    def data_received(self, data: bytes) -> None:
        WebSocketsSansIOProtocol.data_received(self, data)  # per read: no `super()` either
        if (
            self.conn.handshake_exc is not None
            and not self.handshake_initiated
            and not self.transport.is_closing()
        ):
            # uvicorn < 0.55: websockets refused the request and uvicorn did not answer.
            # websockets 17 has queued a 414 or 431 (and the end of the stream); earlier
            # releases only the end of the stream, so answer 400 as uvicorn 0.55 does.
            self.handshake_complete = True
            self.close_sent = True
            output = b"".join(self.conn.data_to_send())
            if not output:
                message = "Failed to open a WebSocket connection: invalid request.\n"
                output = self.conn.reject(400, message).serialize()
            self.transport.write(output)
            self.transport.close()
