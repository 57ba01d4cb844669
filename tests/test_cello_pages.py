"""Code written from the Cello framework's documentation runs on cello unchanged.

The handlers below are written the way Cello's WebSocket, routing, SSE and middleware
pages write them (the same calls, in the same places), served by uvicorn and driven by
real clients: httpx for HTTP and SSE, the `websockets` client for WebSockets. What those
pages use beyond cello (ORMs, JWT middleware, templates...) is on docs/migrating.md.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from cello import App, Blueprint, Response, SseEvent, SseStream, WebSocketMessage
from servers import ThreadServer, wait_until
from sse_parsing import sse_events

WAIT = 5


@contextlib.contextmanager
def served(app: App) -> Iterator[httpx.Client]:
    with (
        ThreadServer(app) as server,
        httpx.Client(base_url=server.http_url(""), timeout=WAIT) as client,
    ):
        client.ws_url = server.url  # type: ignore[attr-defined]
        yield client


# ----------------------------------------------------------------- the SSE page


def feed_app() -> App:
    """An event feed that resumes after `Last-Event-ID`, as the SSE page's feed does."""
    app = App()
    events = [{"id": i, "type": "update", "data": {"count": i}} for i in range(5)]

    def get_events_from(start: int) -> list[dict[str, object]]:
        return events[start:]

    @app.get("/events")
    def event_stream(request):  # type: ignore[no-untyped-def]
        stream = SseStream()
        stream.add(SseEvent(json.dumps({"status": "connected"}), event="init", retry=3000))
        for i in range(3):
            stream.add(
                SseEvent(json.dumps({"count": i, "at": time.time()}), event="update", id=str(i))
            )
        return Response.sse(stream)

    @app.get("/feed")
    def feed(request):  # type: ignore[no-untyped-def]
        last_id = request.get_header("Last-Event-ID")
        start_from = int(last_id) + 1 if last_id else 0
        stream = SseStream()
        for event in get_events_from(start_from):
            stream.add(
                SseEvent(json.dumps(event["data"]), event=event["type"], id=str(event["id"]))
            )
        return Response.sse(stream)

    @app.get("/notifications")
    def notifications(request):  # type: ignore[no-untyped-def]
        stream = SseStream()
        stream.add(SseEvent("User logged in", event="auth"))
        stream.add(SseEvent("Line 1\nLine 2"))
        stream.add_data("Simple data event")
        stream.add_event("notification", "New message received")
        return stream  # a stream returned as it is is an SSE response too

    @app.get("/secure-events")
    def authenticated_stream(request):  # type: ignore[no-untyped-def]
        if request.query.get("token") != "good":
            return Response.json({"error": "Unauthorized"}, status=401)
        return Response.sse(SseStream([SseEvent.data("hello")]))

    return app


def test_the_sse_pages_classes_work_as_it_describes() -> None:
    event = SseEvent("sensor data", event="update", id="42", retry=5000)
    assert event.to_sse_string() == "event: update\nid: 42\nretry: 5000\ndata: sensor data\n\n"
    assert SseEvent.data("Line 1\nLine 2").to_sse_string() == "data: Line 1\ndata: Line 2\n\n"
    assert SseEvent.with_event("notification", "hi").event == "notification"
    stream = SseStream()
    assert stream.is_empty()
    stream.add(SseEvent("First event"))
    stream.add_data("Simple data event")
    stream.add_event("notification", "New message received")
    assert stream.len() == 3
    assert not stream.is_empty()


def test_the_sse_pages_handlers_stream_their_events() -> None:
    with served(feed_app()) as client:
        response = client.get("/events")
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        events = sse_events(response.text)
        assert events[0] == {"event": "init", "retry": "3000", "data": '{"status": "connected"}'}
        assert [e["id"] for e in events[1:]] == ["0", "1", "2"]

        assert [e["id"] for e in sse_events(client.get("/feed").text)] == ["0", "1", "2", "3", "4"]
        resumed = sse_events(client.get("/feed", headers={"Last-Event-ID": "2"}).text)
        assert [(e["id"], e["data"]) for e in resumed] == [
            ("3", '{"count": 3}'),
            ("4", '{"count": 4}'),
        ]

        notes = sse_events(client.get("/notifications").text)
        assert notes == [
            {"event": "auth", "data": "User logged in"},
            {"data": "Line 1\nLine 2"},
            {"data": "Simple data event"},
            {"event": "notification", "data": "New message received"},
        ]

        refused = client.get("/secure-events?token=bad")
        assert refused.status_code == 401
        assert refused.json() == {"error": "Unauthorized"}
        assert sse_events(client.get("/secure-events?token=good").text) == [{"data": "hello"}]


# ----------------------------------------------------------------- the routing page


def routing_app() -> App:
    app = App()

    @app.get("/")
    def index(request):  # type: ignore[no-untyped-def]
        return {"method": "GET"}

    @app.put("/items/{id}")
    def update_item(request):  # type: ignore[no-untyped-def]
        return {"method": "PUT", "id": request.params["id"]}

    @app.route("/resource", methods=["GET", "POST"])
    def resource(request):  # type: ignore[no-untyped-def]
        return {"action": "list" if request.method == "GET" else "create"}

    @app.get("/search")
    def search(request):  # type: ignore[no-untyped-def]
        return {
            "query": request.query.get("q", ""),
            "limit": int(request.query.get("limit", "10")),
            "sort": request.query.get("sort", "asc"),
        }

    @app.get("/filter")
    def filter_items(request):  # type: ignore[no-untyped-def]
        return {"tags": request.query.get_all("tag")}

    @app.get("/users/me")
    def get_current_user(request):  # type: ignore[no-untyped-def]
        return {"user": "current"}

    @app.get("/users/{*path}")  # declared before {id}: still tried after it
    def user_wildcard(request):  # type: ignore[no-untyped-def]
        return {"path": request.params["path"]}

    @app.get("/users/{id}")
    def get_user(request):  # type: ignore[no-untyped-def]
        return {"id": request.params["id"]}

    @app.get("/versioned")
    def get_versioned(request):  # type: ignore[no-untyped-def]
        version = request.get_header("API-Version", "1")
        return {"version": int(version)}

    @app.get("/files/{*path}")
    def get_file(request):  # type: ignore[no-untyped-def]
        return {"path": request.params["path"]}

    users_bp = Blueprint("/users")

    @users_bp.get("/")
    def list_users(request):  # type: ignore[no-untyped-def]
        return {"users": []}

    @users_bp.get("/{id}")
    def get_bp_user(request):  # type: ignore[no-untyped-def]
        return {"id": request.params["id"]}

    @users_bp.post("/")
    def create_user(request):  # type: ignore[no-untyped-def]
        return Response.json(request.json(), status=201)

    api_v1 = Blueprint("/api/v1")
    api_v1.register_blueprint(users_bp)
    app.register_blueprint(api_v1)
    return app


def test_the_routing_pages_routes_answer_as_it_says() -> None:
    with served(routing_app()) as client:
        assert client.get("/").json() == {"method": "GET"}
        assert client.put("/items/9").json() == {"method": "PUT", "id": "9"}
        assert client.get("/resource").json() == {"action": "list"}
        assert client.post("/resource").json() == {"action": "create"}
        assert client.get("/search?q=python&limit=5").json() == {
            "query": "python",
            "limit": 5,
            "sort": "asc",
        }
        assert client.get("/filter?tag=python&tag=rust&tag=web").json() == {
            "tags": ["python", "rust", "web"]
        }
        assert client.get("/users/me").json() == {"user": "current"}
        assert client.get("/users/123").json() == {"id": "123"}
        assert client.get("/users/123/posts/456").json() == {"path": "123/posts/456"}
        assert client.get("/versioned").json() == {"version": 1}
        assert client.get("/versioned", headers={"api-version": "2"}).json() == {"version": 2}
        assert client.get("/files/documents/reports/2024/q1.pdf").json() == {
            "path": "documents/reports/2024/q1.pdf"
        }
        assert client.get("/api/v1/users").json() == {"users": []}
        assert client.get("/api/v1/users/42").json() == {"id": "42"}
        created = client.post("/api/v1/users", json={"name": "Ada"})
        assert created.status_code == 201
        assert created.json() == {"name": "Ada"}


# ----------------------------------------------------------------- the WebSocket page


def websocket_app() -> App:
    app = App()
    clients: list[object] = []

    @app.websocket("/ws")
    def handler(ws):  # type: ignore[no-untyped-def]
        ws.send_text("Hello, client!")
        ws.send_binary(b"\x00\x01\x02\x03")
        ws.send(WebSocketMessage.text("Structured message"))
        while True:
            msg = ws.recv()
            if msg is None:
                break
            if msg.is_close():
                break
            if msg.is_text():
                ws.send_text(f"Text: {msg.text}")
            elif msg.is_binary():
                ws.send_text(f"Binary: {len(msg.data)} bytes")

    @app.websocket("/ws/chat")
    def chat(ws):  # type: ignore[no-untyped-def]
        clients.append(ws)
        ws.send_text(json.dumps({"type": "system", "users_online": len(clients)}))
        while True:
            msg = ws.recv()
            if msg is None or msg.is_close():
                break
            broadcast(json.dumps({"type": "message", "text": msg.text}))
        clients.remove(ws)

    def broadcast(message, exclude=None):  # type: ignore[no-untyped-def]
        for client in clients:
            if client is not exclude:
                with contextlib.suppress(Exception):  # the page's broadcast skips the gone
                    client.send_text(message)  # type: ignore[attr-defined]

    @app.websocket("/ws/rooms/{room_id}")
    def room_handler(ws, request):  # type: ignore[no-untyped-def]
        room_id = request.params["room_id"]
        ws.send_text(f"Joined room: {room_id}")
        while True:
            msg = ws.recv()
            if msg is None or msg.is_close():
                break
            ws.send_text(f"[{room_id}] {msg.text}")

    return app


def test_the_websocket_pages_handlers_behave_as_it_says() -> None:
    with served(websocket_app()) as client:
        url = client.ws_url  # type: ignore[attr-defined]
        with connect(url("/ws")) as ws:
            assert ws.recv(WAIT) == "Hello, client!"
            assert ws.recv(WAIT) == b"\x00\x01\x02\x03"
            assert ws.recv(WAIT) == "Structured message"
            ws.send("hi")
            assert ws.recv(WAIT) == "Text: hi"
            ws.send(b"1234")
            assert ws.recv(WAIT) == "Binary: 4 bytes"
        with connect(url("/ws/chat")) as a, connect(url("/ws/chat")) as b:
            assert json.loads(a.recv(WAIT))["type"] == "system"
            assert json.loads(b.recv(WAIT))["users_online"] == 2
            a.send("hello")
            for member in (a, b):
                assert json.loads(member.recv(WAIT)) == {"type": "message", "text": "hello"}
        with connect(url("/ws/rooms/lobby")) as ws:
            assert ws.recv(WAIT) == "Joined room: lobby"
            ws.send("hi")
            assert ws.recv(WAIT) == "[lobby] hi"


# ----------------------------------------------------------------- the middleware pages


def test_enable_cors_allows_every_origin_by_default() -> None:
    app = App()
    app.enable_cors()

    @app.get("/status")
    def status(request):  # type: ignore[no-untyped-def]
        return {"ok": True}

    with served(app) as client:
        simple = client.get("/status", headers={"Origin": "https://anywhere.example"})
        assert simple.headers["access-control-allow-origin"] == "*"
        preflight = client.options(
            "/status",
            headers={
                "Origin": "https://anywhere.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Content-Type, Authorization",
            },
        )
        assert preflight.status_code == 200
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert preflight.headers["access-control-max-age"] == "86400"


def test_enable_cors_with_origins_allows_only_those() -> None:
    app = App()
    app.enable_cors(origins=["https://app.example.com"])

    @app.get("/data")
    def get_data(request):  # type: ignore[no-untyped-def]
        return {"data": 1}

    with served(app) as client:
        allowed = client.get("/data", headers={"Origin": "https://app.example.com"})
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        other = client.get("/data", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        refused = client.options(
            "/data",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert refused.status_code == 400


def test_enable_compression_gzips_large_bodies_only() -> None:
    app = App()
    app.enable_compression(min_size=256)

    @app.get("/big")
    def big(request):  # type: ignore[no-untyped-def]
        return Response.text("x" * 1000)

    @app.get("/small")
    def small(request):  # type: ignore[no-untyped-def]
        return Response.text("x" * 10)

    with served(app) as client:
        raw = client.get("/big", headers={"Accept-Encoding": "gzip"})
        assert raw.headers["content-encoding"] == "gzip"
        assert raw.text == "x" * 1000  # httpx decodes it
        assert "content-encoding" not in client.get("/small").headers
        with client.stream("GET", "/big", headers={"Accept-Encoding": "gzip"}) as streamed:
            assert gzip.decompress(b"".join(streamed.iter_raw())) == b"x" * 1000


def test_enable_logging_logs_each_request_and_websocket(caplog: pytest.LogCaptureFixture) -> None:
    app = App()
    app.enable_logging()

    @app.get("/api/users/{id:int}")
    def user(request):  # type: ignore[no-untyped-def]
        return {"id": request.params["id"]}

    @app.websocket("/ws")
    def echo(ws):  # type: ignore[no-untyped-def]
        for msg in ws:
            ws.send_text(msg.text)

    @app.websocket("/guarded", guard=lambda request: False)
    def guarded(ws):  # type: ignore[no-untyped-def]
        pass

    caplog.set_level(logging.INFO, logger="cello.requests")
    with served(app) as client:
        assert client.get("/api/users/7").status_code == 200
        assert client.get("/api/users/x").status_code == 404
        with connect(client.ws_url("/ws")) as ws:  # type: ignore[attr-defined]
            ws.send("hi")
            assert ws.recv(WAIT) == "hi"
        with pytest.raises(InvalidStatus, match="403"):
            connect(client.ws_url("/guarded"))  # type: ignore[attr-defined]
        assert wait_until(lambda: len(caplog.records) >= 4)
    lines = [r.message for r in caplog.records if r.name == "cello.requests"]
    assert any(line.startswith("GET /api/users/7 -> 200 (") for line in lines), lines
    assert any(line.startswith("GET /api/users/x -> 404 (") for line in lines), lines
    assert any(line.startswith("WS /ws -> 101, closed 1000 (") for line in lines), lines
    assert any(line.startswith("WS /guarded -> 403 (") for line in lines), lines


def test_on_event_hooks_run_when_the_server_starts_and_stops() -> None:
    app = App()
    events: list[str] = []

    @app.on_event("startup")
    def startup() -> None:
        events.append("startup")

    @app.on_event("shutdown")
    async def shutdown() -> None:
        events.append("shutdown")

    with served(app):
        assert events == ["startup"]
    assert events == ["startup", "shutdown"]
    with pytest.raises(ValueError, match='"startup" or "shutdown"'):
        app.on_event("start")
