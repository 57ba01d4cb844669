"""Fast logic tests through the in-process `TestClient` (no server, no sockets).

They double as the tests of `TestClient` itself: each behaviour here is also checked
against uvicorn in test_transport.py, so the two must agree.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import pytest

import cello
from cello import (
    App,
    AsyncWebSocket,
    ConnectionClosed,
    HTTPException,
    Request,
    WebSocket,
    WebSocketMessage,
)
from cello.testing import TestClient, WebSocketDisconnect, WebSocketUpgradeError
from servers import busy_handlers, handler_budget

pytestmark = pytest.mark.usefixtures("websocket_runner")

WAIT = 10


def quickstart() -> App:
    app = App()

    @app.websocket("/ws")
    def echo(ws: WebSocket) -> None:
        ws.send_text("Connected!")
        while True:
            msg = ws.recv()
            if msg is None or msg.is_close():
                break
            ws.send_text(f"Echo: {msg.text}")

    return app


def test_the_page_quick_start() -> None:
    with TestClient(quickstart()) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "Connected!"
        ws.send_text("Hello!")
        assert ws.receive_text() == "Echo: Hello!"


def test_text_bytes_and_json_round_trips() -> None:
    app = App()

    @app.websocket("/echo")
    def echo(ws: WebSocket) -> None:
        for msg in ws:
            if msg.is_binary():
                ws.send_binary(msg.data or b"")
            elif msg.text and msg.text.startswith("{"):
                ws.send_json({"got": ws_json(msg)})
            else:
                ws.send_text(msg.text or "")

    def ws_json(msg: WebSocketMessage) -> object:
        import json

        return json.loads(msg.text or "")

    with TestClient(app) as client, client.websocket_connect("/echo") as ws:
        ws.send_text("plain \U0001f600")
        assert ws.receive_text() == "plain \U0001f600"
        ws.send_bytes(b"\x00\xff")
        assert ws.receive_bytes() == b"\x00\xff"
        ws.send_json({"a": [1, 2]})
        assert ws.receive_json() == {"got": {"a": [1, 2]}}


def test_request_details_reach_the_handler() -> None:
    app = App()

    @app.websocket("/rooms/{room}/{seat:int}")
    def room(ws: WebSocket, request: Request) -> None:
        ws.send_json(
            {
                "params": request.params,
                "query": request.query.get("nick"),
                "header": request.headers.get("x-team"),
                "cookie": request.cookies.get("session"),
                "path": request.path,
                "same": ws.request is request,
            }
        )

    with TestClient(app) as client:
        headers = {"x-team": "blue", "cookie": "session=abc"}
        with client.websocket_connect(
            "/rooms/lobby/7", headers=headers, params={"nick": "ann"}
        ) as ws:
            assert ws.receive_json() == {
                "params": {"room": "lobby", "seat": 7},
                "query": "ann",
                "header": "blue",
                "cookie": "abc",
                "path": "/rooms/lobby/7",
                "same": True,
            }


def test_handler_signature_decides_the_arguments() -> None:
    app = App()

    @app.websocket("/one")
    def one(ws: WebSocket) -> None:
        ws.send_text("one argument")

    @app.websocket("/two")
    def two(ws: WebSocket, request: Request) -> None:
        ws.send_text(f"two arguments at {request.path}")

    with TestClient(app) as client:
        with client.websocket_connect("/one") as ws:
            assert ws.receive_text() == "one argument"
        with client.websocket_connect("/two") as ws:
            assert ws.receive_text() == "two arguments at /two"


def test_a_handler_taking_three_arguments_is_refused_at_registration() -> None:
    app = App()
    with pytest.raises(TypeError, match=r"must take \(ws\) or \(ws, request\)"):

        @app.websocket("/bad")
        def bad(ws: WebSocket, request: Request, extra: int) -> None: ...


def test_async_handler() -> None:
    app = App()

    @app.websocket("/ws")
    async def echo(ws: AsyncWebSocket) -> None:
        await ws.send_text("ready")
        async for msg in ws:
            await ws.send_json({"echo": msg.text})

    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "ready"
        ws.send_text("hi")
        assert ws.receive_json() == {"echo": "hi"}


def test_return_closes_with_1000() -> None:
    app = App()

    @app.websocket("/ws")
    def once(ws: WebSocket) -> None:
        ws.send_text("bye")

    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "bye"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1000


def test_exception_closes_with_1011_and_logs_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()

    @app.websocket("/ws")
    def broken(ws: WebSocket) -> None:
        raise ValueError("do not leak me")

    with caplog.at_level(logging.ERROR, logger="cello"), TestClient(app) as client:
        with client.websocket_connect("/ws") as ws, pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1011
        assert "do not leak me" not in (closed.value.reason or "")
    errors = [r for r in caplog.records if r.name == "cello" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[0] is ValueError


def test_unknown_path_is_a_404() -> None:
    with (
        TestClient(quickstart()) as client,
        pytest.raises(WebSocketUpgradeError) as refused,
        client.websocket_connect("/nope"),
    ):
        pass
    assert refused.value.response.status_code == 404


def test_guards() -> None:
    app = App()

    def token_required(request: Request) -> None:
        if request.query.get("token") != "t0k3n":
            raise HTTPException(401, "bad token", headers={"WWW-Authenticate": "Bearer"})

    async def no_bots(request: Request) -> bool:
        return "bot" not in request.headers.get("user-agent", "")

    @app.websocket("/private", guard=[token_required, no_bots])
    def private(ws: WebSocket) -> None:
        ws.send_text("in")

    with TestClient(app) as client:
        with pytest.raises(WebSocketUpgradeError) as refused, client.websocket_connect("/private"):
            pass
        assert refused.value.response.status_code == 401
        assert refused.value.response.json() == {"detail": "bad token"}
        assert refused.value.response.headers["www-authenticate"] == "Bearer"

        with (
            pytest.raises(WebSocketUpgradeError) as refused,
            client.websocket_connect(
                "/private", params={"token": "t0k3n"}, headers={"user-agent": "a bot"}
            ),
        ):
            pass
        assert refused.value.response.status_code == 403

        with client.websocket_connect("/private", params={"token": "t0k3n"}) as ws:
            assert ws.receive_text() == "in"


def test_a_crashing_guard_refuses_with_500(caplog: pytest.LogCaptureFixture) -> None:
    app = App()

    def crash(request: Request) -> None:
        raise RuntimeError("guard bug")

    @app.websocket("/ws", guard=crash)
    def handler(ws: WebSocket) -> None: ...

    with (
        caplog.at_level(logging.ERROR, logger="cello"),
        TestClient(app) as client,
        pytest.raises(WebSocketUpgradeError) as refused,
        client.websocket_connect("/ws"),
    ):
        pass
    assert refused.value.response.status_code == 500
    assert b"guard bug" not in refused.value.response.content
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


def test_subprotocol_in_the_clients_order() -> None:
    app = App()

    @app.websocket("/ws", subprotocols=["a", "b"])
    def handler(ws: WebSocket) -> None:
        ws.send_text(str(ws.subprotocol))

    with TestClient(app) as client:
        with client.websocket_connect("/ws", subprotocols=["b", "a"]) as ws:
            assert ws.subprotocol == "b"
            assert ws.receive_text() == "b"
        with client.websocket_connect("/ws", subprotocols=["c"]) as ws:
            assert ws.subprotocol is None
            assert ws.receive_text() == "None"


def test_recv_timeout_raises_timeout_error() -> None:
    app = App()

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        started = time.monotonic()
        try:
            ws.recv(timeout=0.1)
        except TimeoutError:
            ws.send_text(f"timed out after {time.monotonic() - started:.1f} s")
        msg = ws.recv(timeout=WAIT)
        ws.send_text(f"still open: {msg.text if msg else None}")

    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "timed out after 0.1 s"
        ws.send_text("yes")
        assert ws.receive_text() == "still open: yes"


def test_malformed_json_raises_and_the_connection_stays_usable() -> None:
    app = App()

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        while True:
            try:
                ws.send_json({"ok": ws.recv_json()})
            except ValueError as exc:
                ws.send_json({"error": str(exc).split(":")[0]})
            except ConnectionClosed:
                return

    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.send_text("{oops")
        assert ws.receive_json() == {"error": "the message is not valid JSON"}
        ws.send_text("[1, 2]")
        assert ws.receive_json() == {"ok": [1, 2]}


def test_iteration_ends_on_close_and_sees_every_message() -> None:
    app = App()
    seen = queue.Queue[list[str]]()

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        seen.put([msg.text or "" for msg in ws])

    with TestClient(app) as client:
        with client.websocket_connect("/ws") as ws:
            for word in ("a", "b", "c"):
                ws.send_text(word)
        assert seen.get(timeout=WAIT) == ["a", "b", "c"]


def test_sends_from_a_foreign_thread_arrive_in_order() -> None:
    app = App()

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        def push() -> None:
            for n in range(200):
                ws.send_text(str(n))

        pusher = threading.Thread(target=push)
        pusher.start()
        cello.blocking(pusher.join)  # on the loop's thread (greenlet runner) a join would hang
        ws.recv()

    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        assert [ws.receive_text() for _ in range(200)] == [str(n) for n in range(200)]


def test_send_after_the_client_closed_raises_connection_closed() -> None:
    app = App()
    outcome = queue.Queue[BaseException]()

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        ws.recv()  # the close message
        try:
            ws.send_text("anyone?")
        except ConnectionClosed as exc:
            outcome.put(exc)

    with TestClient(app) as client:
        with client.websocket_connect("/ws") as ws:
            ws.close(4002, "leaving")
        error = outcome.get(timeout=WAIT)
    assert isinstance(error, ConnectionError)
    assert isinstance(error, ConnectionClosed)
    assert (error.code, error.reason) == (4002, "leaving")


def test_ping_sends_nothing() -> None:
    app = App()

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        ws.send(WebSocketMessage.ping())
        ws.send(WebSocketMessage.text("after the ping"))

    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive() == "after the ping"


def test_close_message_closes_with_its_code() -> None:
    app = App()

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        ws.send(WebSocketMessage.close(4100, "custom"))

    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert (closed.value.code, closed.value.reason) == (4100, "custom")


def test_invalid_close_code_is_refused() -> None:
    app = App()
    outcome = queue.Queue[str]()

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        try:
            ws.close(1006)
        except ValueError as exc:
            outcome.put(str(exc))

    with TestClient(app) as client, client.websocket_connect("/ws"):
        assert "1006 is not a close code" in outcome.get(timeout=WAIT)


def test_handler_budget_refuses_with_1013_and_frees(websocket_runner: str) -> None:
    app = App(**handler_budget(websocket_runner, 1))

    @app.websocket("/ws")
    def hold(ws: WebSocket) -> None:
        ws.send_text("held")
        ws.recv()

    with TestClient(app) as client:
        with client.websocket_connect("/ws") as first:
            assert first.receive_text() == "held"
            with client.websocket_connect("/ws") as second:
                with pytest.raises(WebSocketDisconnect) as closed:
                    second.receive_text()
                assert closed.value.code == 1013
        deadline = time.monotonic() + WAIT
        while busy_handlers(app) and time.monotonic() < deadline:
            time.sleep(0.01)
        with client.websocket_connect("/ws") as third:
            assert third.receive_text() == "held"


def test_lifespan_hooks_run() -> None:
    app = quickstart()
    events: list[str] = []
    app.on_startup(lambda: events.append("sync startup"))

    @app.on_startup
    async def opened() -> None:
        events.append("async startup")

    app.on_shutdown(lambda: events.append("shutdown"))

    with TestClient(app):
        assert events == ["sync startup", "async startup"]
    assert events == ["sync startup", "async startup", "shutdown"]


def test_a_failing_startup_is_reported() -> None:
    app = App()

    @app.on_startup
    def fail() -> None:
        raise OSError("database unreachable")

    with pytest.raises(RuntimeError, match="database unreachable"), TestClient(app):
        pass


def test_http_requests_get_json_404_until_routes_exist() -> None:
    with TestClient(quickstart()) as client:
        response = client.get("/anything")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_no_thread_outlives_the_client() -> None:
    before = set(threading.enumerate())
    with TestClient(quickstart()) as client:
        for _ in range(5):
            with client.websocket_connect("/ws") as ws:
                assert ws.receive_text() == "Connected!"
    deadline = time.monotonic() + WAIT
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(threading.enumerate()) - before == set()


def test_without_the_context_manager_close_cleans_up() -> None:
    before = set(threading.enumerate())
    client = TestClient(quickstart())
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "Connected!"
    client.close()
    client.app.handler_threads.shutdown(WAIT)  # type: ignore[attr-defined]
    client.app.handler_greenlets.shutdown()  # type: ignore[attr-defined]  # its stall watch
    assert set(threading.enumerate()) - before == set()
