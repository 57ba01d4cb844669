"""The server link (`cello._server_link`) of cello's uvicorn backend, end to end.

Served by `cello.serving.WebSocketProtocol`, a cello connection takes the client's events
from the server as they are parsed and writes through it while it can; on any other
backend, or behind a middleware that wraps `receive` or `send`, it speaks plain ASGI.
These tests run a real uvicorn and a real client; the link's every transition is in
test_bridge.py (its `link` path).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.protocol import State as WebSocketState
from websockets.server import ServerProtocol
from websockets.sync.client import connect

import cello
from cello import App, WebSocket
from cello._server_link import EXTENSION, find_link
from cello._uvicorn_ws import DirectLink
from cello.serving import WS_PROTOCOL
from servers import ThreadServer, wait_until

pytestmark = pytest.mark.usefixtures("websocket_runner")

WAIT = 10


def echo_app() -> tuple[App, list[bool]]:
    """An echo route that also reports whether its connection uses a server link."""
    app = App()
    linked: list[bool] = []

    @app.websocket("/echo")
    def echo(ws: WebSocket) -> None:
        linked.append(ws._channel._link is not None)
        for msg in ws:
            ws.send_text(f"echo {msg.text}")

    return app, linked


class EventCounter:
    """An ASGI middleware that counts the WebSocket events passing through it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted_receive() -> Message:
            event = await receive()
            self.seen[event["type"]] += 1
            return event

        async def counted_send(event: Message) -> None:
            self.seen[event["type"]] += 1
            await send(event)

        await self.app(scope, counted_receive, counted_send)


def echo_five(port: int) -> list[str]:
    with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=WAIT) as client:
        replies = []
        for i in range(5):
            client.send(str(i))
            replies.append(str(client.recv(WAIT)))
    return replies


@pytest.mark.parametrize("ws", [WS_PROTOCOL, "websockets-sansio", "wsproto"])
def test_the_link_is_used_on_cellos_backend_only(ws: str) -> None:
    app, linked = echo_app()
    with ThreadServer(app, ws=ws) as server:
        assert echo_five(server.port) == [f"echo {i}" for i in range(5)]
    assert linked == [ws == WS_PROTOCOL]


def test_a_middleware_that_wraps_receive_and_send_sees_every_event() -> None:
    """The link would take the messages past the middleware: with the server's `receive`
    and `send` wrapped, the connection speaks plain ASGI."""
    app, linked = echo_app()
    counter = EventCounter(app)
    with ThreadServer(counter, ws=WS_PROTOCOL) as server:  # type: ignore[arg-type]
        assert echo_five(server.port) == [f"echo {i}" for i in range(5)]
    assert linked == [False]
    assert counter.seen["websocket.receive"] == 5
    assert counter.seen["websocket.send"] == 5


def test_a_plain_asgi_app_on_cellos_backend_is_served_by_asgi() -> None:
    """Apps that are not cello ignore the extension: uvicorn's queue and send as ever."""
    scopes: list[dict[str, Any]] = []

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return
        scopes.append(dict(scope))
        await receive()
        await send({"type": "websocket.accept"})
        while (event := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": f"echo {event['text']}"})

    with ThreadServer(raw, ws=WS_PROTOCOL) as server:  # type: ignore[arg-type]
        assert echo_five(server.port) == [f"echo {i}" for i in range(5)]
    assert EXTENSION in scopes[0]["extensions"]


def test_find_link_needs_the_extension_and_the_servers_own_callables() -> None:
    class Link:
        def __init__(self, receive: Any, send: Any) -> None:
            self.own = (receive, send)

        def serves(self, receive: Any, send: Any) -> bool:
            return (receive, send) == self.own

    async def receive() -> Message:
        raise AssertionError

    async def send(event: Message) -> None:
        raise AssertionError

    async def wrapped(event: Message) -> None:
        raise AssertionError

    link = Link(receive, send)
    offered = {"extensions": {EXTENSION: {"link": link}}}
    assert find_link(offered, receive, send) is link
    assert find_link(offered, receive, wrapped) is None
    assert find_link({"extensions": None}, receive, send) is None
    assert find_link({}, receive, send) is None
    assert find_link({"extensions": {EXTENSION: {}}}, receive, send) is None


class Transport:
    """What `DirectLink` uses of the server's transport: its writes are kept."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        self.written.append(data)


def ready_protocol() -> SimpleNamespace:
    """The fields of uvicorn's protocol the link reads, for an open connection, around a
    real websockets server connection in its OPEN state."""
    conn = ServerProtocol()
    conn.state = WebSocketState.OPEN
    writable = asyncio.Event()
    writable.set()
    return SimpleNamespace(
        close_sent=False,
        disconnected=False,
        handshake_complete=True,
        initial_response=None,
        writable=writable,
        transport=Transport(),
        conn=conn,
    )


@pytest.mark.parametrize(
    "unready",
    [
        {"close_sent": True},
        {"disconnected": True},
        {"handshake_complete": False},
        {"initial_response": (403, [], b"")},
        "not writable",
        "transport closing",
        "connection closing",
    ],
)
def test_send_if_ready_writes_only_what_can_be_sent_at_once(unready: Any) -> None:
    """`send_if_ready` (a send's hot path) writes a message's frame when the server could
    send it at once; else writes nothing and says so, as `can_send` would have."""
    protocol = ready_protocol()
    link = DirectLink(protocol)  # type: ignore[arg-type]
    assert link.can_send()
    assert link.send_if_ready({"type": "websocket.send", "text": "hi"})
    assert link.send_if_ready({"type": "websocket.send", "bytes": b"\x01"})
    assert protocol.transport.written == [b"\x81\x02hi", b"\x82\x01\x01"]
    if isinstance(unready, dict):
        vars(protocol).update(unready)
    elif unready == "not writable":
        protocol.writable.clear()
    elif unready == "transport closing":
        protocol.transport.closing = True
    else:
        protocol.conn.state = WebSocketState.CLOSING
    assert not link.can_send()
    assert not link.send_if_ready({"type": "websocket.send", "text": "late"})
    assert len(protocol.transport.written) == 2


def reading_paused(server: ThreadServer) -> bool:
    return any(getattr(p, "read_paused", False) for p in server.server.server_state.connections)


def test_a_flood_at_a_handler_that_does_not_read_pauses_the_socket() -> None:
    """With the link the connection, not uvicorn, decides when reading pauses: at the
    inbox's bounds (1 MiB here). A client sending 8 MiB to a handler that reads nothing
    yet finds the socket unread past that, and the handler then gets every message."""
    app = App()
    go = threading.Event()
    received: list[int] = []

    @app.websocket("/slow")
    def slow(ws: WebSocket) -> None:
        ws.send_text("ready")
        cello.blocking(go.wait, WAIT)  # on the greenlet runner too, without blocking the loop
        for msg in ws:
            received.append(len(msg.data or b""))
            if len(received) == 128:
                ws.send_text("all")

    chunk = b"x" * 65536
    with ThreadServer(app, ws=WS_PROTOCOL) as server:
        url = f"ws://127.0.0.1:{server.port}/slow"
        with connect(url, open_timeout=WAIT, max_size=None) as client:
            assert client.recv(WAIT) == "ready"
            sender = threading.Thread(target=lambda: [client.send(chunk) for _ in range(128)])
            sender.start()
            assert wait_until(lambda: reading_paused(server))
            (channel,) = app.live_channels
            # 1 MiB (16 messages), and what the server's last reads of the socket held
            # besides: a bound, far below the 128 sent.
            assert channel.queued() < 32
            go.set()
            sender.join(WAIT)
            assert not sender.is_alive()
            assert client.recv(WAIT) == "all"
    assert received == [65536] * 128
