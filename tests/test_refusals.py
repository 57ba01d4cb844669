"""Refusals: a plain HTTP request to a WebSocket endpoint (426), and WebSocket upgrades
refused without uvicorn logging an error.

uvicorn logs `ERROR: ASGI callable returned without completing handshake.` when the app
returns before the server counts the handshake as answered. uvicorn 0.54's
`websockets-sansio` did so after every denial response, which it never counted: the
refusal tests here fail on it, on that backend, on cello's corrected one and on uvicorn's
default (`auto`). cello requires uvicorn 0.55, which counts it.
"""

from __future__ import annotations

import inspect
import json
import logging
import socket
import struct
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.exceptions import HTTPException
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from cello import App, AsyncWebSocket, Request, WebSocket
from cello._bridge import State
from cello.testing import TestClient
from servers import WS_BACKENDS, ThreadServer, wait_until

WAIT = 10

#: Every backend with the denial-response extension, and uvicorn's default (`auto`: what
#: `uvicorn app:app` serves with).
BACKENDS = (*WS_BACKENDS, "auto")

UPGRADE_DETAIL = (
    "This is a WebSocket endpoint: connect to it with a WebSocket client (ws:// or wss://)"
)


def endpoints_app() -> App:
    app = App()

    @app.websocket("/ws")
    def only_websocket(ws: WebSocket) -> None:
        ws.send_text("hello")

    @app.websocket("/rooms/{room}")
    def room(ws: WebSocket) -> None:
        ws.send_text("room")

    @app.websocket("/both")
    def both_websocket(ws: WebSocket) -> None:
        ws.send_text("websocket")

    @app.get("/both")
    def both_http() -> str:
        return "http"

    return app


def assert_upgrade_required(response: httpx.Response, method: str) -> None:
    assert response.status_code == 426
    assert response.headers["upgrade"] == "websocket"
    assert response.headers["connection"] == "Upgrade"
    assert response.headers["content-type"] == "application/json"
    if method != "HEAD":
        assert response.json() == {"detail": UPGRADE_DETAIL}


# ----------------------------------------------------------------- HTTP to a WebSocket path


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("path", ["/ws", "/rooms/lobby"])
def test_http_request_to_a_websocket_endpoint_is_426(method: str, path: str) -> None:
    with TestClient(endpoints_app()) as client:
        assert_upgrade_required(client.request(method, path), method)


def test_a_path_with_an_http_route_too_serves_http() -> None:
    with TestClient(endpoints_app()) as client:
        assert client.get("/both").text == "http"
        refused = client.post("/both")
        assert refused.status_code == 405  # the HTTP route decides: not 426
        assert refused.headers["allow"] == "GET, HEAD"
        with client.websocket_connect("/both") as ws:
            assert ws.receive_text() == "websocket"


def test_a_path_with_no_route_at_all_is_still_404() -> None:
    with TestClient(endpoints_app()) as client:
        response = client.get("/wss")
    assert response.status_code == 404
    assert "upgrade" not in response.headers


def test_426_below_a_mount() -> None:
    """The WebSocket table is matched like the HTTP one: below the app's `root_path`."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    site = Starlette(routes=[Mount("/rt", app=endpoints_app())])
    with TestClient(site) as client:
        assert_upgrade_required(client.get("/rt/ws"), "GET")
        assert client.get("/ws").status_code == 404


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_426_through_uvicorn_keeps_the_connection_serving(http: str) -> None:
    app = endpoints_app()
    with ThreadServer(app, ws="websockets-sansio", http=http) as server:
        with httpx.Client(base_url=server.http_url("")) as client:
            for method in ("GET", "HEAD", "POST"):
                assert_upgrade_required(client.request(method, "/ws"), method)
            # The same keep-alive connection answers the next request.
            assert client.get("/both").text == "http"
        with connect(server.url("/ws")) as ws:
            assert ws.recv(WAIT) == "hello"


# ----------------------------------------------------------------- refused upgrades


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@pytest.fixture
def uvicorn_log() -> Iterator[Records]:
    """What uvicorn logs on "uvicorn.error". Attach it once the server's `Config` exists:
    creating it applies uvicorn's logging configuration, which removes that logger's
    handlers (and the logger does not propagate to caplog's root handler)."""
    records = Records()
    logger = logging.getLogger("uvicorn.error")
    yield records
    logger.removeHandler(records)


def drained(server: ThreadServer) -> bool:
    """uvicorn has finished every connection's task: what it logs after the app returns
    has been logged."""
    state = server.server.server_state
    return not state.tasks and not state.connections


def refusing_app() -> App:
    app = App(allowed_origins=["https://app.example.com"])

    def token_missing(request: Request) -> None:
        raise HTTPException(401, "token missing", headers={"WWW-Authenticate": "Bearer"})

    async def token_missing_async(request: Request) -> None:
        raise HTTPException(401, "token missing")

    def says_no(request: Request) -> bool:
        return False

    @app.websocket("/thread", guard=token_missing, runner="thread")
    def on_thread(ws: WebSocket) -> None:
        raise AssertionError("refused before the handler")

    @app.websocket("/greenlet", guard=token_missing, runner="greenlet")
    def in_greenlet(ws: WebSocket) -> None:
        raise AssertionError("refused before the handler")

    @app.websocket("/async-guard", guard=token_missing_async, runner="thread")
    def async_guard(ws: WebSocket) -> None:
        raise AssertionError("refused before the handler")

    @app.websocket("/async", guard=token_missing)
    async def on_loop(ws: AsyncWebSocket) -> None:
        raise AssertionError("refused before the handler")

    @app.websocket("/false", guard=says_no)
    def false(ws: WebSocket) -> None:
        raise AssertionError("refused before the handler")

    @app.websocket("/open")
    def open_route(ws: WebSocket) -> None:
        ws.send_text("open")

    return app


#: (path, request headers, status, detail) of each way a cello app refuses an upgrade.
REFUSALS = [
    ("/nowhere", {}, 404, "No WebSocket route for this path"),
    ("/open", {"Origin": "https://evil.example"}, 403, "Origin not allowed"),
    ("/thread", {}, 401, "token missing"),
    ("/greenlet", {}, 401, "token missing"),
    ("/async-guard", {}, 401, "token missing"),
    ("/async", {}, 401, "token missing"),
    ("/false", {}, 403, "Forbidden"),
]


def test_auto_is_what_uvicorn_serves_without_a_ws_option() -> None:
    assert inspect.signature(uvicorn.Config).parameters["ws"].default == "auto"


@pytest.mark.parametrize("backend", BACKENDS)
def test_refused_upgrades_get_their_status_and_log_no_error(
    backend: str, uvicorn_log: Records
) -> None:
    with ThreadServer(refusing_app(), ws=backend, log_level="info") as server:
        logging.getLogger("uvicorn.error").addHandler(uvicorn_log)
        for path, headers, status, detail in REFUSALS:
            with pytest.raises(InvalidStatus) as refused:
                connect(server.url(path), additional_headers=headers, open_timeout=WAIT)
            assert refused.value.response.status_code == status, path
            assert json.loads(refused.value.response.body or b"") == {"detail": detail}
        with connect(server.url("/open")) as ws:  # the server serves on
            assert ws.recv(WAIT) == "open"
        assert wait_until(lambda: drained(server))
    assert uvicorn_log.messages(logging.ERROR) == []
    # The handler did hear uvicorn: each refusal is an INFO line with its status.
    logged = uvicorn_log.messages(logging.INFO)
    for path, _, status, _ in REFUSALS:
        assert any(f'"WebSocket {path}" {status}' in line for line in logged), (path, logged)


@pytest.mark.parametrize("backend", BACKENDS)
def test_refusing_a_client_that_already_left_logs_no_error(
    backend: str, uvicorn_log: Records
) -> None:
    """The client resets while a thread runner's guard runs; the guard then refuses. The
    connection's pump has read the loss, so the denial is not sent; the app still answers
    the handshake with a close (uvicorn's legacy `websockets` backend otherwise logs 'ASGI
    callable returned without sending handshake.' at ERROR; the others refuse the send)."""
    app = App()
    in_guard, release = threading.Event(), threading.Event()

    def slow_refusal(request: Request) -> None:
        in_guard.set()
        release.wait(WAIT)
        raise HTTPException(401, "token missing")

    @app.websocket("/ws", guard=slow_refusal, runner="thread")
    def handler(ws: WebSocket) -> None:
        raise AssertionError("refused before the handler")

    with ThreadServer(app, ws=backend, log_level="info") as server:
        logging.getLogger("uvicorn.error").addHandler(uvicorn_log)
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        assert in_guard.wait(WAIT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset: gone without a word
        assert wait_until(lambda: not server.server.server_state.connections)
        assert wait_until(lambda: all(c.state is State.LOST for c in app.live_channels))
        release.set()
        assert wait_until(lambda: drained(server))
    assert uvicorn_log.messages(logging.ERROR) == []
