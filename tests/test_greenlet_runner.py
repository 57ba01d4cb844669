"""The greenlet runner end to end: plain `def` handlers on uvicorn's event loop thread."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed as ClientConnectionClosed
from websockets.sync.client import connect

import cello
from cello import App, WebSocket
from servers import ThreadServer

WAIT = 10


def test_a_greenlet_handler_echoes_on_the_loop_thread(ws_backend: str) -> None:
    app = App(websocket_runner="greenlet")
    threads: set[str] = set()

    @app.websocket("/ws/{room}")
    def echo(ws: WebSocket) -> None:
        threads.add(threading.current_thread().name)
        ws.send_text(f"joined {ws.request.params['room']}")
        for msg in ws:
            ws.send_text(f"Echo: {msg.text}")

    with (
        ThreadServer(app, ws=ws_backend) as server,
        connect(server.url("/ws/a")) as one,
        connect(server.url("/ws/b")) as two,
    ):
        assert one.recv(WAIT) == "joined a"
        assert two.recv(WAIT) == "joined b"
        for n in range(20):
            one.send(str(n))
            two.send(str(-n))
            assert one.recv(WAIT) == f"Echo: {n}"
            assert two.recv(WAIT) == f"Echo: {-n}"
    assert threads == {"test-uvicorn"}  # the loop's thread: no thread per connection
    assert app.handler_threads.busy == 0
    assert app.handler_greenlets.busy == 0


def test_one_route_on_threads_and_one_on_greenlets() -> None:
    app = App()
    ran_on: dict[str, str] = {}

    @app.websocket("/threaded")
    def threaded(ws: WebSocket) -> None:
        ran_on["threaded"] = threading.current_thread().name
        ws.send_text("ok")

    @app.websocket("/green", runner="greenlet")
    def green(ws: WebSocket) -> None:
        ran_on["green"] = threading.current_thread().name
        ws.send_text("ok")

    with ThreadServer(app) as server:
        for path in ("/threaded", "/green"):
            with connect(server.url(path)) as client:
                assert client.recv(WAIT) == "ok"
    assert ran_on["green"] == "test-uvicorn"
    assert ran_on["threaded"].startswith("cello-ws")


def test_a_blocking_handler_is_reported_with_its_stack_and_the_fix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App(websocket_runner="greenlet", loop_stall_threshold=0.05)

    @app.websocket("/slow")
    def slow(ws: WebSocket) -> None:
        for msg in ws:
            time.sleep(0.5)  # blocks the loop: what the watch reports
            ws.send_text(msg.text or "")

    with (
        caplog.at_level(logging.WARNING, logger="cello"),
        ThreadServer(app) as server,
        connect(server.url("/slow")) as client,
    ):
        for _ in range(2):
            client.send("x")
            assert client.recv(WAIT) == "x"
    reports = [r.getMessage() for r in caplog.records if "held the event loop" in r.getMessage()]
    assert len(reports) == 1  # once per route
    assert "slow" in reports[0]
    if "It was here" in reports[0]:  # sampled while blocking (the watch thread ran)
        assert "time.sleep(0.5)" in reports[0]
    else:  # seen when the stretch ended: where the handler waits next
        assert "It is now waiting here" in reports[0]
    assert 'runner="thread"' in reports[0]
    assert "cello.blocking" in reports[0]


def test_blocking_keeps_the_loop_serving_other_connections() -> None:
    app = App(websocket_runner="greenlet", loop_stall_threshold=0.05)
    gate = threading.Event()

    @app.websocket("/wait")
    def wait(ws: WebSocket) -> None:
        ws.send_text("waiting")
        ws.send_text(str(cello.blocking(gate.wait, WAIT)))

    @app.websocket("/echo")
    def echo(ws: WebSocket) -> None:
        for msg in ws:
            ws.send_text(msg.text or "")

    with (
        ThreadServer(app) as server,
        connect(server.url("/wait")) as waiter,
        connect(server.url("/echo")) as other,
    ):
        assert waiter.recv(WAIT) == "waiting"
        other.send("still served")
        assert other.recv(WAIT) == "still served"
        gate.set()
        assert waiter.recv(WAIT) == "True"


def test_the_greenlet_budget_refuses_with_1013_then_frees() -> None:
    app = App(websocket_runner="greenlet", websocket_greenlets=1)

    @app.websocket("/ws")
    def hold(ws: WebSocket) -> None:
        ws.send_text("in")
        ws.recv()

    with ThreadServer(app) as server:
        with connect(server.url("/ws")) as first:
            assert first.recv(WAIT) == "in"
            with connect(server.url("/ws")) as second, pytest.raises(ClientConnectionClosed):
                second.recv(WAIT)
            assert second.close_code == 1013
        with connect(server.url("/ws")) as third:
            assert third.recv(WAIT) == "in"


def test_a_close_from_another_thread_wakes_a_waiting_recv() -> None:
    app = App(websocket_runner="greenlet")
    connections: list[WebSocket] = []
    returned: list[object] = []
    done = threading.Event()

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        connections.append(ws)
        ws.send_text("ready")
        returned.append(ws.recv())
        done.set()

    with ThreadServer(app) as server, connect(server.url("/ws")) as client:
        assert client.recv(WAIT) == "ready"
        threading.Thread(target=connections[0].close, args=(4001, "bye")).start()
        assert done.wait(WAIT)
        assert returned == [None]


def test_runner_mistakes_are_refused_at_declaration() -> None:
    app = App()
    with pytest.raises(ValueError, match="'thread', 'greenlet'"):
        app.websocket("/ws", runner="gevent")
    with pytest.raises(TypeError, match="async def"):

        @app.websocket("/ws", runner="greenlet")
        async def handler(ws: object) -> None: ...

    with pytest.raises(ValueError, match="websocket_runner"):
        App(websocket_runner="fiber")  # type: ignore[arg-type]
