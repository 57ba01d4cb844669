"""The WebSocket objects handlers receive: `WebSocket` (sync) and `AsyncWebSocket`.

Both are thin facades over the connection's `Channel` (see `_bridge.py`, where a
message's whole path between the handler and the ASGI server is). They check arguments and
turn them into ASGI events; they hold no state of their own beyond the connection's request
and chosen subprotocol.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ._bridge import Channel
from ._events import binary_event, check_close, json_event, text_event
from .errors import ConnectionClosed
from .messages import WebSocketMessage
from .request import Request

__all__ = ["AsyncWebSocket", "WebSocket"]


def parse_json(message: WebSocketMessage | None, channel: Channel) -> Any:
    """A received message's JSON value; `ValueError` for anything that is not JSON.

    A client's JSON may be nested deeper than the parser's recursion allows: that is
    malformed input like any other, not a server error.
    """
    if message is None or message.msg_type == "close":
        raise ConnectionClosed(channel.close_code or 1005, channel.close_reason)
    raw = message.text if message.msg_type == "text" else message.data
    try:
        return json.loads(raw or b"")
    except ValueError as exc:
        raise ValueError(f"the message is not valid JSON: {exc}") from exc
    except RecursionError:
        raise ValueError("the message is JSON nested too deeply to parse") from None


class WebSocket:
    """A WebSocket connection for a plain `def` handler.

    Every method may be called from any thread: the handler's own, another connection's
    handler (to broadcast) or a thread the app started. Messages sent from one thread
    arrive in the order sent. Sends wait while the client is far behind (a bounded
    queue), and raise `ConnectionClosed` once the connection is closed.

    Sends take an optional `timeout`: how long to wait for room while the client is far
    behind (default: the app's `send_timeout`, itself `None`, no limit). When it expires
    the client is taken to have stopped reading: what is queued for it is dropped, the
    connection is closed with 1008 and the send raises `ConnectionClosed`.

    Attributes:
        request: The upgrade request: `params`, `query`, `headers`, `cookies`, `client`.
        subprotocol: The subprotocol agreed with the client, or `None`.
    """

    __slots__ = ("_channel", "request", "subprotocol")

    def __init__(self, channel: Channel, request: Request, subprotocol: str | None) -> None:
        self._channel = channel
        self.request = request
        self.subprotocol = subprotocol

    @property
    def connected(self) -> bool:
        """Whether the connection is open: neither side has closed it, the client is there."""
        return self._channel.open

    @property
    def close_code(self) -> int | None:
        """The close code once closed (by either side), else `None`."""
        return self._channel.close_code

    def send_text(self, text: str, timeout: float | None = None) -> None:
        """Send a text message.

        Raises:
            ValueError: the text is not valid Unicode (a lone surrogate): nothing is sent.
            ConnectionClosed: the connection is closed (or was closed waiting `timeout`).
        """
        if type(text) is str and text.isascii():  # the usual case, without a call
            self._channel.send({"type": "websocket.send", "text": text}, timeout)
        else:
            self._channel.send(text_event(text), timeout)  # checks, or raises

    def send_binary(
        self, data: bytes | bytearray | memoryview, timeout: float | None = None
    ) -> None:
        """Send a binary message."""
        self._channel.send(binary_event(data), timeout)

    def send_json(self, value: Any, timeout: float | None = None) -> None:
        """Send `value` as JSON in a text message."""
        self._channel.send(json_event(value), timeout)

    def send(self, message: WebSocketMessage, timeout: float | None = None) -> None:
        """Send a `WebSocketMessage`.

        Text and binary messages are sent; a close message closes the connection with its
        code and reason. Ping and pong messages send nothing: ASGI servers answer and send
        protocol pings themselves (uvicorn pings every 20 s by default), so sending one only
        checks that the connection is open, raising `ConnectionClosed` if it is not.
        """
        kind = message.msg_type
        if kind == "text":
            self._channel.send(text_event(message.text or ""), timeout)
        elif kind == "binary":
            self._channel.send(binary_event(message.data or b""), timeout)
        elif kind == "close":
            self.close(message.code or 1000, message.reason)
        else:
            self._channel.check_open()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection after the messages already sent; closing twice does nothing."""
        check_close(code, reason)
        self._channel.close(code, reason)

    def recv(self, timeout: float | None = None) -> WebSocketMessage | None:
        """Wait for the next message from the client.

        Returns a text or binary message; when the client closes, one close message
        (with `code` and `reason`) and then `None`; `None` when the connection was lost
        or the app closed it.

        Raises:
            TimeoutError: nothing arrived within `timeout` seconds.
            ConcurrencyError: another thread is already waiting in `recv()` on this
                connection (read a connection from one thread at a time).
        """
        return self._channel.recv(timeout)

    def recv_json(self, timeout: float | None = None) -> Any:
        """Wait for the next message and parse it as JSON.

        Raises:
            ValueError: the message is not valid JSON, or nested too deeply to parse (the
                connection stays open).
            ConnectionClosed: the connection closed instead.
            TimeoutError: nothing arrived within `timeout` seconds.
        """
        return parse_json(self._channel.recv(timeout), self._channel)

    def __iter__(self) -> Iterator[WebSocketMessage]:
        """Iterate over text and binary messages until the connection closes."""
        while True:
            message = self._channel.recv()
            if message is None or message.msg_type == "close":
                return
            yield message

    def __repr__(self) -> str:
        state = "open" if self.connected else f"closed {self.close_code}"
        return f"<WebSocket {self.request.path!r} {state}>"


class AsyncWebSocket:
    """A WebSocket connection for an `async def` handler: the same methods, awaitable.

    `send_*` and `close` may also be called from other threads through
    `WebSocket`-style plain calls on `.sync`, which a broadcasting sync handler can hold.
    Receiving is the handler's own: `.sync.recv()` raises `RuntimeError`.
    """

    __slots__ = ("_channel", "request", "subprotocol", "sync")

    def __init__(self, channel: Channel, request: Request, subprotocol: str | None) -> None:
        self._channel = channel
        self.request = request
        self.subprotocol = subprotocol
        #: The same connection as a sync `WebSocket`, for sending from threads.
        self.sync = WebSocket(channel, request, subprotocol)

    @property
    def connected(self) -> bool:
        """Whether the connection is open."""
        return self._channel.open

    @property
    def close_code(self) -> int | None:
        """The close code once closed (by either side), else `None`."""
        return self._channel.close_code

    async def send_text(self, text: str, timeout: float | None = None) -> None:
        """Send a text message; as `WebSocket.send_text`."""
        if type(text) is str and text.isascii():  # the usual case, without a call
            await self._channel.asend({"type": "websocket.send", "text": text}, timeout)
        else:
            await self._channel.asend(text_event(text), timeout)  # checks, or raises

    async def send_binary(
        self, data: bytes | bytearray | memoryview, timeout: float | None = None
    ) -> None:
        """Send a binary message."""
        await self._channel.asend(binary_event(data), timeout)

    async def send_json(self, value: Any, timeout: float | None = None) -> None:
        """Send `value` as JSON in a text message."""
        await self._channel.asend(json_event(value), timeout)

    async def send(self, message: WebSocketMessage, timeout: float | None = None) -> None:
        """Send a `WebSocketMessage`; ping and pong as for `WebSocket.send`."""
        kind = message.msg_type
        if kind == "text":
            await self._channel.asend(text_event(message.text or ""), timeout)
        elif kind == "binary":
            await self._channel.asend(binary_event(message.data or b""), timeout)
        elif kind == "close":
            await self.close(message.code or 1000, message.reason)
        else:
            self._channel.check_open()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection after the messages already sent."""
        check_close(code, reason)
        self._channel.close(code, reason)

    async def recv(self, timeout: float | None = None) -> WebSocketMessage | None:
        """Wait for the next message; as `WebSocket.recv`."""
        return await self._channel.arecv(timeout)

    async def recv_json(self, timeout: float | None = None) -> Any:
        """Wait for the next message and parse it as JSON; as `WebSocket.recv_json`."""
        return parse_json(await self._channel.arecv(timeout), self._channel)

    async def __aiter__(self) -> AsyncIterator[WebSocketMessage]:
        """Iterate over text and binary messages until the connection closes."""
        while True:
            message = await self._channel.arecv()
            if message is None or message.msg_type == "close":
                return
            yield message

    def __repr__(self) -> str:
        state = "open" if self.connected else f"closed {self.close_code}"
        return f"<AsyncWebSocket {self.request.path!r} {state}>"
