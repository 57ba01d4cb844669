"""Faults that must stay with the connection that caused them, through real parts.

A client's hostile message, a handler that raises `SystemExit`, a thread the system will
not start, a client that stops reading, an async handler that returns mid-send: each has
an outcome that a user can rely on, and none of them touches another connection. Served
by a real uvicorn (`app.run`'s default backend) and driven by the `websockets` client,
or in-process through `cello.testing.TestClient` where no transport is involved.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed as ClientConnectionClosed
from websockets.sync.client import connect

from cello import App, AsyncWebSocket, ConnectionClosed, WebSocket
from cello.serving import DEFAULTS
from cello.testing import TestClient, WebSocketDisconnect
from servers import (
    BINARY,
    TEXT,
    ThreadServer,
    busy_handlers,
    frame,
    raw_upgrade,
    read_frame,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("websocket_runner")

WAIT = 10  # seconds any single expectation may take before the test fails
BACKEND = DEFAULTS["ws"]


def receive_until_closed(ws: Any) -> tuple[list[str], int]:
    """Every text message an in-process client gets, and the close code that ends them."""
    received: list[str] = []
    while True:
        try:
            received.append(ws.receive_text())
        except WebSocketDisconnect as closed:
            return received, closed.code


def close_code(client: Any) -> int | None:
    received = client.protocol.close_rcvd
    return None if received is None else int(received.code)


# ----------------------------------------------------------------- hostile input


def room_app() -> App:
    """The chat pattern: every member's message, decoded from JSON, broadcast to the room."""
    app = App()

    @app.websocket("/room")
    def room(ws: WebSocket) -> None:
        app.hub.join("room", ws)
        ws.send_text("joined")
        while True:
            data = ws.recv_json()
            app.hub.broadcast("room", data["t"])

    return app


def test_a_lone_surrogate_fails_only_its_sender() -> None:
    """`{"t": "\\ud800"}` decodes to text UTF-8 cannot encode. Broadcasting it is refused at
    the call (the sender's handler raises: 1011), and the room's other member is untouched;
    it used to fail later in every member's writer, dropping the whole room."""
    with (
        ThreadServer(room_app(), ws=BACKEND) as server,
        connect(server.url("/room")) as bystander,
        connect(server.url("/room")) as hostile,
    ):
        assert bystander.recv(WAIT) == "joined"
        assert hostile.recv(WAIT) == "joined"
        hostile.send('{"t": "\\ud800"}')
        with pytest.raises(ClientConnectionClosed):
            hostile.recv(WAIT)
        assert close_code(hostile) == 1011
        bystander.send(json.dumps({"t": "still here"}))
        assert bystander.recv(WAIT) == "still here"


def test_send_text_refuses_a_lone_surrogate_at_the_call() -> None:
    app = App()
    outcome: list[str] = []

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        try:
            ws.send_text("\ud800")
        except ValueError as exc:
            outcome.append(str(exc))
        ws.send_text("after")

    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "after"
    assert "not valid Unicode" in outcome[0]


def test_deeply_nested_json_is_malformed_input() -> None:
    """JSON nested deeper than the parser recurses: `recv_json` raises the documented
    ValueError (it used to be a RecursionError, closing with 1011), and an HTTP body
    gets 400 (it used to be a 500)."""
    app = App()

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        while True:
            try:
                ws.send_json(ws.recv_json())
            except ValueError as exc:
                ws.send_text(f"refused: {exc}")

    @app.post("/json")
    def body(request: Any) -> Any:
        return request.json()

    deep = "[" * 100_000 + "]" * 100_000
    with TestClient(app) as client:
        with client.websocket_connect("/ws") as ws:
            ws.send_text(deep)
            assert ws.receive_text().startswith("refused: ")
            ws.send_text("[1]")
            assert ws.receive_json() == [1]
        response = client.post("/json", content=deep, headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert "nested too deeply" in response.json()["detail"]


# ----------------------------------------------------------------- handler faults


def test_system_exit_in_a_handler_closes_1011_and_the_thread_serves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler that raises SystemExit: its client gets 1011, it is logged, and the next
    connection is served (a dead thread used to stay counted as idle and take the next
    connection's job, whose handshake then never completed)."""
    app = App()

    @app.websocket("/exit")
    def leaves(ws: WebSocket) -> None:
        sys.exit(3)

    @app.websocket("/echo")
    def echo(ws: WebSocket) -> None:
        for msg in ws:
            ws.send_text(msg.text or "")

    with caplog.at_level(logging.ERROR, logger="cello"), ThreadServer(app, ws=BACKEND) as server:
        with connect(server.url("/exit")) as client:
            with pytest.raises(ClientConnectionClosed):
                client.recv(WAIT)
            assert close_code(client) == 1011
        with connect(server.url("/echo"), open_timeout=WAIT) as client:
            client.send("alive")
            assert client.recv(WAIT) == "alive"
    assert any(r.exc_info and r.exc_info[0] is SystemExit for r in caplog.records)


def test_a_thread_the_system_refuses_is_a_1013(monkeypatch: pytest.MonkeyPatch) -> None:
    """`Thread.start` fails as it does at RLIMIT_NPROC: the connection is refused with 1013,
    the budget is not leaked, and shutdown still works (it used to raise "cannot join
    thread before it is started")."""
    start = threading.Thread.start

    def refuse_handler_threads(thread: threading.Thread) -> None:
        if thread.name.startswith("cello-ws"):
            raise RuntimeError("can't start new thread")
        start(thread)

    app = App(websocket_runner="thread")  # the runner with threads to refuse

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        ws.send_text("hello")

    with TestClient(app) as client:
        monkeypatch.setattr(threading.Thread, "start", refuse_handler_threads)
        with client.websocket_connect("/ws") as ws, pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1013
        assert app.handler_threads.busy == 0
        monkeypatch.undo()
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_text() == "hello"


def test_an_async_handler_returning_while_its_task_sends(caplog: pytest.LogCaptureFixture) -> None:
    """The handler returns while a task it started is in the middle of a send: the task's
    messages go out, then the close (1000); nothing is logged (flush used to fail an
    assertion here)."""
    app = App()
    tasks: set[asyncio.Task[None]] = set()

    @app.websocket("/ws")
    async def handler(ws: AsyncWebSocket) -> None:
        async def spam() -> None:
            for i in range(200):
                try:
                    await ws.send_text(str(i))
                except ConnectionClosed:
                    return

        task = asyncio.create_task(spam())
        tasks.add(task)
        await asyncio.sleep(0)  # the task is now inside its first send

    with caplog.at_level(logging.ERROR), TestClient(app) as client:
        for _ in range(20):
            with client.websocket_connect("/ws") as ws:
                received, code = receive_until_closed(ws)
                assert code == 1000
                assert received == [str(i) for i in range(len(received))]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_sync_recv_on_an_async_route_raises_at_once() -> None:
    """`ws.sync.recv()` from a thread on an async route has no pump feeding it: it raises a
    RuntimeError saying so (it used to block forever)."""
    app = App()

    @app.websocket("/ws")
    async def handler(ws: AsyncWebSocket) -> None:
        try:
            await asyncio.to_thread(ws.sync.recv, 2.0)
        except RuntimeError as exc:
            await ws.send_text(f"RuntimeError: {exc}")
        except TimeoutError:
            await ws.send_text("TimeoutError")

    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_text().startswith("RuntimeError: recv() from a thread")


# ----------------------------------------------------------------- slow clients


def test_a_client_closing_first_logs_nothing_in_process(caplog: pytest.LogCaptureFixture) -> None:
    """The in-process client closes while the handler still sends: the connection ends
    quietly, as under uvicorn (httpx-ws's closed stream used to be logged as a failed send)."""
    app = App()

    @app.websocket("/ws")
    def talker(ws: WebSocket) -> None:
        ws.send_text("hello")
        try:
            while True:
                ws.send_text("more")
        except ConnectionClosed:
            pass

    with caplog.at_level(logging.INFO), TestClient(app) as client:
        for _ in range(5):
            with client.websocket_connect("/ws") as ws:
                assert ws.receive_text() == "hello"
        assert wait_until(lambda: not app.live_channels and busy_handlers(app) == 0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_an_async_sender_behind_broadcasts_is_woken_when_the_client_reads() -> None:
    """Broadcasts pile up for a client that pauses reading; its async handler's own send
    waits for room, and is woken once the client reads again (it used to wait forever:
    only threads were woken)."""
    app = App()
    count, size = 200, 256 * 1024

    @app.websocket("/ws")
    async def handler(ws: AsyncWebSocket) -> None:
        app.hub.join("all", ws)
        await ws.send_text("joined")
        await ws.recv()  # the client says "go" once the broadcasts are queued
        await ws.send_text("mine")  # queued behind the broadcasts: waits for room
        await ws.send_text("returned")  # only once the send above has returned
        await ws.recv()

    with ThreadServer(app, ws=BACKEND) as server:
        sock = raw_upgrade(server.port, "/ws", rcvbuf=65536)  # reads nothing until below
        try:
            assert read_frame(sock) == (TEXT, b"joined")
            for _ in range(count):
                app.hub.broadcast("all", b"x" * size)
            sock.sendall(frame(TEXT, b"go"))
            for _ in range(count):
                assert read_frame(sock) == (BINARY, b"x" * size)
            assert read_frame(sock) == (TEXT, b"mine")
            assert read_frame(sock) == (TEXT, b"returned")
        finally:
            sock.close()


def test_a_send_timeout_closes_a_client_that_stopped_reading() -> None:
    """`App(send_timeout=...)`: a handler flooding a client that reads nothing gets
    ConnectionClosed(1008) once a send has waited that long, and the connection ends
    (without it the handler would wait as long as the client keeps the socket)."""
    app = App(send_timeout=0.5)
    outcome: list[ConnectionClosed] = []

    @app.websocket("/flood")
    def flood(ws: WebSocket) -> None:
        try:
            while True:
                ws.send_binary(b"x" * 65536)
        except ConnectionClosed as exc:
            outcome.append(exc)

    with ThreadServer(app, ws=BACKEND) as server:
        sock = raw_upgrade(server.port, "/flood", rcvbuf=65536)
        try:
            assert wait_until(lambda: bool(outcome)), "the sender still waits"
            assert (outcome[0].code, outcome[0].reason) == (1008, "send timed out")
        finally:
            sock.close()
        assert wait_until(lambda: not app.live_channels and busy_handlers(app) == 0)
