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

It also offers each connection a `cello._server_link.ServerLink` (`DirectLink`): a cello
connection served here takes the client's messages as they are parsed and writes its own
without the ASGI queue's hops, while apps that are not cello (and cello behind a
middleware that wraps `receive` or `send`) see plain ASGI. This adapter relies on
`WebSocketsSansIOProtocol`'s attributes (`queue`, `read_paused`, `writable`, `conn`,
`close_sent`...), which cello's uvicorn pin keeps stable; the transport tests run on it.

Pass it to uvicorn by import path: `uvicorn app:app --ws cello.serving:WebSocketProtocol`,
or `ws="cello.serving:WebSocketProtocol"` in `uvicorn.Config`, `app.run()` or a gunicorn
`UvicornWorker`'s `CONFIG_KWARGS`. `app.run()` uses it by default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.types import Message, Receive, Send
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from ._server_link import EXTENSION

__all__ = ["DirectLink", "WebSocketProtocol"]

_CLOSE = Opcode.CLOSE
_WS_OPEN = State.OPEN


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
        # Only the frame handling changes: the connection is made again, as uvicorn made
        # it (its extensions, sizes and logger), of the subclass. Not by assigning
        # `__class__`: CPython's attribute caches then miss on every access to the
        # connection's fields, which cost 10,000 instructions per echo (12 % of a raw
        # ASGI app's), measured with bench/instructions.py.
        made = self.conn
        self.conn = _ServerProtocol(
            extensions=made.available_extensions,
            max_size=(made.max_message_size, made.max_fragment_size),
            logger=made.logger,
        )

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if not self.close_sent:  # upgraded (not refused by websockets): the scope exists
            self.scope["extensions"][EXTENSION] = {"link": DirectLink(self)}


class _Handover:
    """Stands in for uvicorn's event queue while a consumer is attached: what uvicorn
    puts (a disconnect) goes to the consumer, and each message too (`hand_over_message`,
    in place of uvicorn's `send_receive_event_to_app`). Nobody awaits `receive` meanwhile.
    """

    __slots__ = ("_protocol", "put_nowait")

    def __init__(self, protocol: WebSocketProtocol, consumer: Callable[[Message], None]) -> None:
        self._protocol = protocol
        self.put_nowait = consumer

    def hand_over_message(self) -> None:
        """The message uvicorn has gathered goes to the consumer, and reading is not
        paused after it (the consumer pauses it when it holds enough)."""
        protocol = self._protocol
        frames = protocol.frames
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        protocol.frames = []
        if protocol.close_sent:
            return  # past the app's close: discarded, as uvicorn does
        if protocol.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError:  # websockets checks UTF-8 as it parses: not expected
                protocol.logger.exception("Invalid UTF-8 sequence received from client.")
                protocol.conn.send_close(1007)
                protocol.handle_parser_exception()
                return
            self.put_nowait({"type": "websocket.receive", "text": text})
        else:
            self.put_nowait({"type": "websocket.receive", "bytes": data})


class DirectLink:
    """A connection's `ServerLink` into `WebSocketProtocol` (see `cello._server_link`).

    Every method runs on the loop's thread, as the protocol's own callbacks do, so the
    protocol's state cannot change between `can_send` and the `send_now` after it.
    """

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WebSocketProtocol) -> None:
        self._protocol = protocol

    def serves(self, receive: Receive, send: Send) -> bool:
        protocol = self._protocol
        # Bound methods compare equal when they bind the same function to the same object.
        return bool(receive == protocol.receive and send == protocol.send)

    def attach(self, consumer: Callable[[Message], None]) -> None:
        protocol = self._protocol
        queue = protocol.queue
        waiting: list[Any] = []
        while not queue.empty():
            waiting.append(queue.get_nowait())
        # Instance attributes over the protocol's own, for this connection only: other
        # apps' connections keep uvicorn's code unchanged, at its cost.
        handover = _Handover(protocol, consumer)
        protocol.queue = handover  # type: ignore[assignment]
        protocol.send_receive_event_to_app = handover.hand_over_message  # type: ignore[method-assign]
        # uvicorn pauses reading after each message until `receive` empties its queue:
        # emptied here, so reading goes on; the consumer pauses it when it must.
        self.resume_reading()
        for event in waiting:
            consumer(event)

    def detach(self) -> None:
        protocol = self._protocol
        if isinstance(protocol.queue, _Handover):
            protocol.queue = asyncio.Queue()
            del protocol.send_receive_event_to_app

    def pause_reading(self) -> None:
        protocol = self._protocol
        if not protocol.read_paused:
            protocol.read_paused = True
            protocol.transport.pause_reading()

    def resume_reading(self) -> None:
        protocol = self._protocol
        if protocol.read_paused:
            protocol.read_paused = False
            protocol.transport.resume_reading()

    def can_send(self) -> bool:
        protocol = self._protocol
        return not (
            protocol.close_sent
            or protocol.disconnected
            or not protocol.handshake_complete
            or protocol.initial_response is not None
            or protocol.conn.state is not _WS_OPEN
            or not protocol.writable.is_set()
            or protocol.transport.is_closing()
        )

    def send_now(self, event: Message) -> None:
        # As uvicorn's `send` does for `websocket.send`.
        conn = self._protocol.conn
        data = event.get("bytes")
        if data is not None:
            conn.send_binary(data)
        else:
            conn.send_text(event["text"].encode())
        self._protocol.transport.write(b"".join(conn.data_to_send()))

    def send_if_ready(self, event: Message) -> bool:
        # `can_send` and `send_now` written out in one function: this runs for every
        # message a greenlet or async handler sends, and two calls fewer per message are
        # measurable (bench/instructions.py); keep the three in step.
        protocol = self._protocol
        conn = protocol.conn
        transport = protocol.transport
        if (
            protocol.close_sent
            or protocol.disconnected
            or not protocol.handshake_complete
            or protocol.initial_response is not None
            or not protocol.writable.is_set()
            or transport.is_closing()
        ):
            return False
        data = event.get("bytes")
        try:
            if data is not None:
                conn.send_binary(data)
            else:
                conn.send_text(event["text"].encode())
        except InvalidState:  # checked first, before anything is done (`can_send`'s state)
            return False
        transport.write(b"".join(conn.data_to_send()))
        return True
