"""WebSocket behaviour through a real uvicorn and a real client, on every uvicorn backend.

Each test builds a tiny app, serves it on a loopback port and drives it with the
`websockets` client, asserting the close codes and messages a user would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed as ClientConnectionClosed
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import cello
from cello import (
    App,
    ConnectionClosed,
    HTTPException,
    Request,
    WebSocket,
    WebSocketMessage,
    _bridge,
)
from servers import ThreadServer, busy_handlers, handler_budget, raw_upgrade

pytestmark = pytest.mark.usefixtures("websocket_runner")

WAIT = 10  # seconds any single expectation may take before the test fails


def echo_app(**options: int) -> App:
    app = App(**options)

    @app.websocket("/ws")
    def echo(ws: WebSocket) -> None:
        for msg in ws:
            if msg.is_text():
                ws.send_text(f"Echo: {msg.text}")
            else:
                ws.send_binary(msg.data or b"")

    return app


def closed_code(client: object) -> int | None:
    code: int | None = client.protocol.close_rcvd.code if client.protocol.close_rcvd else None  # type: ignore[attr-defined]
    return code


def test_echo_text_and_binary(ws_backend: str) -> None:
    with ThreadServer(echo_app(), ws=ws_backend) as server, connect(server.url("/ws")) as client:
        client.send("hello")
        assert client.recv(WAIT) == "Echo: hello"
        client.send(b"\x00\xff")
        assert client.recv(WAIT) == b"\x00\xff"
        client.send("snow \u2603 and \U0001f600")
        assert client.recv(WAIT) == "Echo: snow \u2603 and \U0001f600"


def test_handler_return_closes_1000(ws_backend: str) -> None:
    app = App()

    @app.websocket("/ws")
    def once(ws: WebSocket) -> None:
        ws.send_text("bye")

    with ThreadServer(app, ws=ws_backend) as server, connect(server.url("/ws")) as client:
        assert client.recv(WAIT) == "bye"
        with pytest.raises(ClientConnectionClosed) as closed:
            client.recv(WAIT)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1000


def test_handler_exception_closes_1011_and_logs_once(
    ws_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.websocket("/ws")
    def broken(ws: WebSocket) -> None:
        ws.recv()
        raise KeyError("secret-internal-detail")

    with ThreadServer(app, ws=ws_backend) as server:
        with caplog.at_level(logging.ERROR, logger="cello"), connect(server.url("/ws")) as client:
            client.send("boom")
            with pytest.raises(ClientConnectionClosed) as closed:
                client.recv(WAIT)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1011
        assert "secret-internal-detail" not in closed.value.rcvd.reason
        # The server goes on serving.
        with connect(server.url("/ws")) as client:
            client.send("again")
            with pytest.raises(ClientConnectionClosed):
                client.recv(WAIT)
    records = [r for r in caplog.records if r.name == "cello" and r.exc_info]
    assert len(records) == 2
    assert "broken" in records[0].getMessage()
    assert records[0].exc_info is not None
    assert records[0].exc_info[0] is KeyError


def test_unknown_path_is_refused_with_404(ws_backend: str) -> None:
    with ThreadServer(echo_app(), ws=ws_backend) as server:
        with pytest.raises(InvalidStatus) as refused:
            connect(server.url("/nope"))
        assert refused.value.response.status_code == 404
        assert b"No WebSocket route" in refused.value.response.body


def test_guard_refuses_with_status_before_accept(ws_backend: str) -> None:
    app = App()
    handled = queue.Queue[str]()

    def require_token(request: Request) -> None:
        if request.query.get("token") != "s3cret":
            raise HTTPException(401, "missing or bad token")

    @app.websocket("/private", guard=require_token)
    def private(ws: WebSocket, request: Request) -> None:
        handled.put(request.query["token"])
        ws.send_text("welcome")

    with ThreadServer(app, ws=ws_backend) as server:
        with pytest.raises(InvalidStatus) as refused:
            connect(server.url("/private?token=wrong"))
        assert refused.value.response.status_code == 401
        assert refused.value.response.body == b'{"detail": "missing or bad token"}'
        assert handled.empty()
        with connect(server.url("/private?token=s3cret")) as client:
            assert client.recv(WAIT) == "welcome"
        assert handled.get(timeout=WAIT) == "s3cret"


def test_guard_returning_false_gives_403(ws_backend: str) -> None:
    app = App()

    @app.websocket("/ws", guard=lambda request: request.headers.get("origin") == "https://ok")
    def handler(ws: WebSocket) -> None:
        ws.send_text("in")

    with ThreadServer(app, ws=ws_backend) as server:
        with pytest.raises(InvalidStatus) as refused:
            connect(server.url("/ws"), origin="https://evil")  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        with connect(server.url("/ws"), origin="https://ok") as client:  # type: ignore[arg-type]
            assert client.recv(WAIT) == "in"


def test_subprotocol_follows_client_preference(ws_backend: str) -> None:
    app = App()

    @app.websocket("/ws", subprotocols=["chat.v1", "chat.v2"])
    def handler(ws: WebSocket) -> None:
        ws.send_text(f"speaking {ws.subprotocol}")

    with ThreadServer(app, ws=ws_backend) as server:
        offered = ["chat.v2", "chat.v1"]
        with connect(server.url("/ws"), subprotocols=offered) as client:  # type: ignore[arg-type]
            assert client.subprotocol == "chat.v2"
            assert client.recv(WAIT) == "speaking chat.v2"


def test_typed_path_parameters(ws_backend: str) -> None:
    app = App()

    @app.websocket("/ws/items/{item_id:int}/{name}")
    def handler(ws: WebSocket, request: Request) -> None:
        item_id = request.params["item_id"]
        ws.send_json(
            {"id": item_id, "type": type(item_id).__name__, "name": request.params["name"]}
        )

    with ThreadServer(app, ws=ws_backend) as server:
        with connect(server.url("/ws/items/42/widget")) as client:
            assert client.recv(WAIT) == '{"id":42,"type":"int","name":"widget"}'
        with pytest.raises(InvalidStatus) as refused:
            connect(server.url("/ws/items/forty-two/widget"))
        assert refused.value.response.status_code == 404


def test_async_handler(ws_backend: str) -> None:
    app = App()

    @app.websocket("/ws")
    async def echo(ws: object) -> None:
        from cello import AsyncWebSocket

        assert isinstance(ws, AsyncWebSocket)
        await ws.send_text("ready")
        async for msg in ws:
            await ws.send_text(f"async: {msg.text}")

    with ThreadServer(app, ws=ws_backend) as server, connect(server.url("/ws")) as client:
        assert client.recv(WAIT) == "ready"
        client.send("x")
        assert client.recv(WAIT) == "async: x"


def test_client_close_frame_then_none(ws_backend: str) -> None:
    app = App()
    seen = queue.Queue[object]()

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        ws.send_text("hi")
        first = ws.recv()
        seen.put(first)
        seen.put(ws.recv())
        seen.put(ws.connected)

    with ThreadServer(app, ws=ws_backend) as server:
        with connect(server.url("/ws")) as client:
            assert client.recv(WAIT) == "hi"
            client.close(4001, "done here")
        first = seen.get(timeout=WAIT)
        assert isinstance(first, WebSocketMessage)
        assert first.is_close()
        assert (first.code, first.reason) == (4001, "done here")
        assert seen.get(timeout=WAIT) is None
        assert seen.get(timeout=WAIT) is False


def test_client_vanishing_unblocks_recv(ws_backend: str) -> None:
    app = App()
    seen = queue.Queue[object]()

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        ws.send_text("hi")
        msg = ws.recv()
        seen.put(None if msg is None else msg.msg_type)
        seen.put(ws.connected)

    with ThreadServer(app, ws=ws_backend) as server, connect(server.url("/ws")) as client:
        assert client.recv(WAIT) == "hi"
        client.socket.shutdown(socket.SHUT_RDWR)  # no close frame: the TCP connection just ends
        assert seen.get(timeout=WAIT) is None  # lost, not closed: no close message
        assert seen.get(timeout=WAIT) is False


def test_sending_handler_notices_disconnect(ws_backend: str) -> None:
    """The receive pump sees the client leave even when the handler only sends."""
    app = App()
    outcome = queue.Queue[object]()

    @app.websocket("/ticker")
    def ticker(ws: WebSocket) -> None:
        try:
            while True:
                ws.send_text("tick")
                cello.sleep(0.01)
        except ConnectionClosed as exc:
            outcome.put(exc)

    with ThreadServer(app, ws=ws_backend) as server:
        with connect(server.url("/ticker")) as client:
            assert client.recv(WAIT) == "tick"
        error = outcome.get(timeout=WAIT)
        assert isinstance(error, ConnectionClosed)
        assert isinstance(error, ConnectionError)
        assert error.code == 1000


def test_send_after_close_raises_promptly(ws_backend: str) -> None:
    app = App()
    outcome = queue.Queue[object]()

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        ws.close(4000, "app closed")
        started = time.monotonic()
        try:
            ws.send_text("too late")
        except ConnectionClosed as exc:
            outcome.put((exc.code, exc.reason, time.monotonic() - started))
        outcome.put(ws.recv())

    with ThreadServer(app, ws=ws_backend) as server, connect(server.url("/ws")) as client:
        with pytest.raises(ClientConnectionClosed) as closed:
            client.recv(WAIT)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4000
        code, reason, elapsed = outcome.get(timeout=WAIT)  # type: ignore[misc]
        assert (code, reason) == (4000, "app closed")
        assert elapsed < 1.0
        assert outcome.get(timeout=WAIT) is None


def test_send_from_plain_thread_keeps_order(ws_backend: str) -> None:
    """A dashboard: a thread the app started pushes to every connected client."""
    app = App()
    clients: list[WebSocket] = []
    ready = threading.Event()

    @app.websocket("/live")
    def live(ws: WebSocket) -> None:
        clients.append(ws)
        ready.set()
        ws.recv()  # until the client leaves
        clients.remove(ws)

    def push() -> None:
        ready.wait(WAIT)
        for n in range(500):
            for ws in list(clients):
                ws.send_text(str(n))

    with ThreadServer(app, ws=ws_backend) as server, connect(server.url("/live")) as client:
        pusher = threading.Thread(target=push)
        pusher.start()
        received = [client.recv(WAIT) for _ in range(500)]
        pusher.join(WAIT)
        assert received == [str(n) for n in range(500)]


def test_broadcast_from_other_handlers(ws_backend: str) -> None:
    """The page's chat pattern: one handler's thread sends on other connections."""
    app = App()
    members: list[WebSocket] = []
    lock = threading.Lock()

    @app.websocket("/chat")
    def chat(ws: WebSocket) -> None:
        with lock:
            members.append(ws)
        ws.send_text("joined")
        for msg in ws:
            with lock:
                targets = list(members)
            for member in targets:
                with contextlib.suppress(ConnectionClosed):
                    member.send_text(msg.text or "")
        with lock:
            members.remove(ws)

    with ThreadServer(app, ws=ws_backend) as server, contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(server.url("/chat"))) for _ in range(3)]
        for client in clients:
            assert client.recv(WAIT) == "joined"
        for n in range(50):
            clients[n % 3].send(f"m{n}")
        for client in clients:
            got = [client.recv(WAIT) for _ in range(50)]
            assert sorted(got, key=lambda s: int(s[1:])) == [f"m{n}" for n in range(50)]


def test_ping_message_sends_no_frame(ws_backend: str) -> None:
    app = App()
    outcome = queue.Queue[object]()

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        ws.send(WebSocketMessage.ping())
        ws.send(WebSocketMessage.text("after ping"))
        ws.recv()
        try:
            ws.send(WebSocketMessage.ping())
        except ConnectionClosed as exc:
            outcome.put(exc.code)

    with ThreadServer(app, ws=ws_backend) as server:
        with connect(server.url("/ws")) as client:
            assert client.recv(WAIT) == "after ping"
        assert outcome.get(timeout=WAIT) == 1000


def test_handler_budget_refuses_with_1013_then_frees(
    ws_backend: str, websocket_runner: str
) -> None:
    """`websocket_threads` (or `websocket_greenlets`) handlers at once, then 1013."""
    app = echo_app(**handler_budget(websocket_runner, 2))
    with ThreadServer(app, ws=ws_backend) as server, contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(server.url("/ws"))) for _ in range(2)]
        for client in held:
            client.send("hold")
            assert client.recv(WAIT) == "Echo: hold"
        started = time.monotonic()
        with connect(server.url("/ws")) as refused, pytest.raises(ClientConnectionClosed) as closed:
            refused.recv(WAIT)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1013
        assert time.monotonic() - started < 2
        held.pop().close()
        deadline = time.monotonic() + WAIT
        while busy_handlers(app) >= 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        with connect(server.url("/ws")) as client:
            client.send("now")
            assert client.recv(WAIT) == "Echo: now"
        held.pop().close()


def test_oversized_message_closes_1009(ws_backend: str) -> None:
    with ThreadServer(echo_app(), ws=ws_backend, ws_max_size=1024) as server:
        with connect(server.url("/ws"), max_size=None) as client:
            client.send("x" * 2048)
            with pytest.raises(ClientConnectionClosed) as closed:
                client.recv(WAIT)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009


def test_slow_client_makes_sends_wait(ws_backend: str) -> None:
    """A client that never reads: the handler's sends block instead of queueing forever."""
    app = App()
    progress = [0]
    outcome = queue.Queue[object]()

    @app.websocket("/flood")
    def flood(ws: WebSocket) -> None:
        chunk = b"x" * 65536
        try:
            while True:
                ws.send_binary(chunk)
                progress[0] += 1
        except ConnectionClosed as exc:
            outcome.put(exc.code)

    with ThreadServer(app, ws=ws_backend) as server:
        client = raw_upgrade(server.port, "/flood", rcvbuf=65536)
        deadline = time.monotonic() + WAIT
        last, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if progress[0] == last and time.monotonic() - stable_since > 1.0:
                break
            if progress[0] != last:
                last, stable_since = progress[0], time.monotonic()
        # Stalled: bounded by the outbox (64) plus what the kernel buffers hold.
        assert progress[0] == last
        assert progress[0] < 2000, f"{progress[0]} chunks of 64 KiB were accepted"
        # The client vanishing releases the blocked sender.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()
        assert isinstance(outcome.get(timeout=WAIT), int)


def test_500_concurrent_sync_connections(ws_backend: str) -> None:
    app = echo_app()

    async def one(url: str, n: int) -> list[str]:
        async with aconnect(url, open_timeout=30) as client:
            replies = []
            for i in range(5):
                await client.send(f"{n}:{i}")
                replies.append(await asyncio.wait_for(client.recv(), 30))
            return replies  # type: ignore[return-value]

    async def many(url: str) -> list[list[str]]:
        return await asyncio.gather(*(one(url, n) for n in range(500)))

    with ThreadServer(app, ws=ws_backend, backlog=1024) as server:
        results = asyncio.run(many(server.url("/ws")))
    assert results == [[f"Echo: {n}:{i}" for i in range(5)] for n in range(500)]


def test_no_thread_left_after_connections_close(ws_backend: str) -> None:
    app = echo_app()
    app.handler_threads.idle_timeout = 0.2
    baseline = set(threading.enumerate())
    with ThreadServer(app, ws=ws_backend) as server:
        running = set(threading.enumerate())
        for _ in range(3):
            with contextlib.ExitStack() as stack:
                clients = [stack.enter_context(connect(server.url("/ws"))) for _ in range(20)]
                for client in clients:
                    client.send("x")
                    assert client.recv(WAIT) == "Echo: x"
        deadline = time.monotonic() + WAIT
        while set(threading.enumerate()) - running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(threading.enumerate()) - running == set()
    deadline = time.monotonic() + WAIT
    while set(threading.enumerate()) - baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(threading.enumerate()) - baseline == set()


def test_async_route_with_sync_guard(ws_backend: str) -> None:
    app = App()

    def only_admins(request: Request) -> bool:
        return request.headers.get("x-role") == "admin"

    @app.websocket("/admin", guard=only_admins)
    async def admin(ws: object) -> None:
        await ws.send_text("hello admin")  # type: ignore[attr-defined]

    with ThreadServer(app, ws=ws_backend) as server:
        with pytest.raises(InvalidStatus) as refused:
            connect(server.url("/admin"))
        assert refused.value.response.status_code == 403
        with connect(server.url("/admin"), additional_headers={"X-Role": "admin"}) as client:
            assert client.recv(WAIT) == "hello admin"


def test_a_closed_connection_stops_waiting_for_a_client_that_never_reads(
    ws_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler has returned but its last messages cannot go out: the client keeps the
    socket open and reads nothing. Once nothing has gone out for the stall timeout the
    connection ends on cello's side (task, queues) instead of living as long as the client."""
    monkeypatch.setattr(_bridge, "FLUSH_STALL_TIMEOUT", 0.5)
    app = App()

    @app.websocket("/flood")
    def flood(ws: WebSocket) -> None:
        # 15 MiB, far more than the socket takes unread, in fewer events than the outbox
        # holds, so the handler never waits: it returns with most of it still queued.
        for _ in range(60):
            ws.send_binary(b"x" * 262144)

    def finished() -> bool:
        return not app.live_channels and busy_handlers(app) == 0

    with ThreadServer(app, ws=ws_backend) as server:
        sock = raw_upgrade(server.port, "/flood", rcvbuf=65536)
        try:
            assert _wait(finished), "the connection still waits for the client"
        finally:
            sock.close()


def _wait(condition: object, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def read_frames(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    """Unmasked server frames (opcode, payload) from a raw socket, until the close frame."""
    buffer = b""

    def take(n: int) -> bytes:
        nonlocal buffer
        while len(buffer) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the socket mid-frame")
            buffer += chunk
        out, buffer = buffer[:n], buffer[n:]
        return out

    while True:
        first, second = take(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(take(2), "big")
        elif length == 127:
            length = int.from_bytes(take(8), "big")
        opcode = first & 0x0F
        yield opcode, take(length)
        if opcode == 0x8:
            return


def test_a_send_waiting_when_the_app_closes_still_goes_out_first(ws_backend: str) -> None:
    """A sender blocked on a full outbox when the app closes the connection: its message is
    already queued ahead of the close frame, so the send returns and the message arrives;
    only the sends after the close raise."""
    app = App()
    returned: list[int] = []
    outcome: queue.Queue[tuple[int, int]] = queue.Queue()
    connections: list[WebSocket] = []

    @app.websocket("/flood")
    def flood(ws: WebSocket) -> None:
        connections.append(ws)
        try:
            for i in range(100_000):
                ws.send_text(f"{i} " + "x" * 4096)
                returned.append(i)
        except ConnectionClosed as exc:
            outcome.put((exc.code, len(returned)))

    with ThreadServer(app, ws=ws_backend) as server:
        sock = raw_upgrade(server.port, "/flood", rcvbuf=65536)  # reads nothing for now
        try:
            last = -1
            while len(returned) != last:  # until the sender waits for room
                last = len(returned)
                time.sleep(0.3)
            assert last < 100_000, "the sender never had to wait"
            connections[0].close(1000, "enough")
            code, sends_that_returned = outcome.get(timeout=WAIT)
            assert code == 1000
            frames = list(read_frames(sock))
        finally:
            sock.close()
    texts = [int(payload.split()[0]) for opcode, payload in frames if opcode == 0x1]
    assert texts == list(range(sends_that_returned))
    assert frames[-1][0] == 0x8
