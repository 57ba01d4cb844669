"""uvicorn's `websockets-sansio` WebSocket backend with an upstream defect corrected.

`WebSocketProtocol` is uvicorn's `WebSocketsSansIOProtocol` (written against uvicorn 0.55
and websockets 17) and differs from it in one place: **a close frame between the fragments
of a message** (Autobahn|Testsuite case 7.1.5: a text frame without FIN, a close frame,
then the continuation) gets a normal closing handshake that echoes the client's code.
RFC 6455 allows control frames between fragments (5.4) and asks for a close frame in
reply, typically echoing the code (5.5.1); the suite expects the echo. websockets'
sans-I/O `Protocol.recv_frame` (`websockets/protocol.py`) instead raises
`ProtocolError("incomplete fragmented message")` when a close frame arrives while
`current_size` says a message is incomplete, so the connection fails with 1002.
websockets documents this as its choice (its `compliance/README.rst`), and uvicorn builds
its `ServerProtocol` with no way to change it. The connection's `ServerProtocol` here
forgets the incomplete message when a close frame arrives; websockets then handles the
close frame as any other: it echoes it and discards whatever follows, the rest of the
message included. Drop this module when websockets accepts a close frame mid-message or
uvicorn works around it: `test_close_between_fragments_is_answered_with_its_code
[websockets-sansio]` in `tests/test_faults.py` is a strict xfail and starts failing then.

(A request line or header line over 8 KiB, which uvicorn before 0.55 never answered on
this backend, is refused with websockets' 414 or 431 by uvicorn 0.55 itself: cello
requires it.)

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
