"""A newcomer's usual slips get a clear answer at the moment they are made.

Each of these used to pass silently or fail far from the cause: a decorator without its
path registered nothing, `{id:integer}` raised a bare `AssertionError`, `{*path}` was taken
literally (the route never matched), a handler taking `(request, ws)` failed inside, an
async handler's un-awaited `ws.recv()` failed on "'coroutine' object has no attribute",
and a loop checking only `if msg is None` broadcast "None" when a client left.
"""

from __future__ import annotations

import logging

import pytest

from cello import App, Blueprint, messages
from cello.routing import PathPattern, RouteTable
from cello.testing import TestClient, WebSocketDisconnect
from servers import wait_until

pytestmark = pytest.mark.usefixtures("websocket_runner")


# ----------------------------------------------------------------- decorators


@pytest.mark.parametrize("decorator", ["websocket", "get", "post", "put", "delete", "route"])
def test_a_decorator_without_its_path_is_refused(decorator: str) -> None:
    app = App()

    def handler(ws):  # type: ignore[no-untyped-def]
        pass

    with pytest.raises(
        TypeError,
        match=rf'@{decorator} needs the route\'s path.*@app\.{decorator}\("/path"\) above def',
    ):
        getattr(app, decorator)(handler)
    assert len(app.websocket_routes) == len(app.http_routes) == 0


def test_a_websocket_handler_with_its_arguments_swapped_is_refused() -> None:
    app = App()
    with pytest.raises(
        TypeError,
        match=r"takes \(request, ws\); cello passes the WebSocket first: def room\(ws, request\)",
    ):

        @app.websocket("/ws")
        def room(request, ws):  # type: ignore[no-untyped-def]
            pass

    bp = Blueprint("/bp")
    with pytest.raises(TypeError, match="passes the WebSocket first"):

        @bp.websocket("/ws")
        async def other(req, websocket):  # type: ignore[no-untyped-def]
            pass


def test_handlers_with_other_argument_names_are_accepted() -> None:
    app = App()

    @app.websocket("/a")
    def a(ws, request):  # type: ignore[no-untyped-def]
        pass

    @app.websocket("/b")
    def b(connection):  # type: ignore[no-untyped-def]
        pass

    assert len(app.websocket_routes) == 2


# ----------------------------------------------------------------- path placeholders


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "/items/{id:integer}",
            r"Unknown path parameter type 'integer' in \{id:integer\}.*\{name:int\}",
        ),
        ("/items/{id:}", "a brace that is not a path parameter"),
        ("/files/{*}", "a brace that is not a path parameter"),
        ("/files/{the path}", "a brace that is not a path parameter"),
        ("/files/{path", "a brace that is not a path parameter"),
        ("/files/path}", "a brace that is not a path parameter"),
        ("files", "must start with '/'"),
    ],
)
def test_a_path_the_router_cannot_mean_is_refused_at_declaration(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PathPattern(path)
    app = App()
    with pytest.raises(ValueError, match=message):
        app.get(path)(lambda: None)
    with pytest.raises(ValueError, match=message):
        app.websocket(path)(lambda ws: None)


@pytest.mark.parametrize("pattern", ["/files/{*path}", "/files/{path:*}", "/files/{path:path}"])
def test_cello_wildcards_take_the_rest_of_the_path(pattern: str) -> None:
    table: RouteTable[str] = RouteTable()
    table.add(pattern, "files")
    assert table.match("/files/docs/2024/q1.pdf") == ("files", {"path": "docs/2024/q1.pdf"})
    assert table.match("/files/x") == ("files", {"path": "x"})
    assert table.exact(pattern) == "files"


def test_a_wildcard_and_its_starlette_spelling_are_the_same_route() -> None:
    table: RouteTable[str] = RouteTable()
    table.add("/files/{*path}", "files")
    with pytest.raises(ValueError, match="already registered"):
        table.add("/files/{path:path}", "again")


def test_wildcard_routes_serve_http_and_websockets() -> None:
    app = App()

    @app.get("/files/{*path}")
    def get_file(request):  # type: ignore[no-untyped-def]
        return {"path": request.params["path"]}

    @app.websocket("/tail/{*path}")
    def tail(ws, request):  # type: ignore[no-untyped-def]
        ws.send_text(request.params["path"])

    with TestClient(app) as client:
        assert client.get("/files/documents/reports/q1.pdf").json() == {
            "path": "documents/reports/q1.pdf"
        }
        with client.websocket_connect("/tail/var/log/app.log") as ws:
            assert ws.receive_text() == "var/log/app.log"


# ----------------------------------------------------------------- blueprints


def test_a_nested_blueprints_root_route_answers_at_its_prefix() -> None:
    users = Blueprint("/users")

    @users.get("/")
    def list_users(request):  # type: ignore[no-untyped-def]
        return {"users": []}

    @users.get("/{id}")
    def get_user(request):  # type: ignore[no-untyped-def]
        return {"id": request.params["id"]}

    @users.websocket("/")
    def feed(ws):  # type: ignore[no-untyped-def]
        ws.send_text("feed")

    api = Blueprint("/api/v1")
    api.register_blueprint(users)
    app = App()
    app.register_blueprint(api)
    with TestClient(app) as client:
        assert client.get("/api/v1/users").json() == {"users": []}
        assert client.get("/api/v1/users/").json() == {"users": []}
        assert client.get("/api/v1/users/7").json() == {"id": "7"}
        for path in ("/api/v1/users", "/api/v1/users/"):
            with client.websocket_connect(path) as ws:
                assert ws.receive_text() == "feed"


def test_a_blueprint_has_a_name() -> None:
    assert Blueprint("/users", name="users").name == "users"
    assert Blueprint("/api/v1").name == "api/v1"


def test_a_blueprint_lists_its_routes_nested_ones_included() -> None:
    api = Blueprint("/api")

    @api.get("/health")
    def health(request):  # type: ignore[no-untyped-def]
        return {"ok": True}

    users = Blueprint("/users")

    @users.route("/", methods=["GET", "POST"])
    def list_users(request):  # type: ignore[no-untyped-def]
        return {"users": []}

    @users.websocket("/live")
    def live(ws):  # type: ignore[no-untyped-def]
        pass

    api.register(users)  # Cello's name for register_blueprint
    assert api.get_all_routes() == [
        ("/api/health", "GET"),
        ("/api/users", "GET"),
        ("/api/users", "POST"),
        ("/api/users/", "GET"),
        ("/api/users/", "POST"),
        ("/api/users/live", "WEBSOCKET"),
    ]
    app = App()
    app.register_blueprint(api)
    assert len(app.http_routes) == 3


def test_an_apps_root_route_stays_slash() -> None:
    bp = Blueprint()

    @bp.get("/")
    def home(request):  # type: ignore[no-untyped-def]
        return "home"

    app = App()
    app.register_blueprint(bp)
    assert [path for path, _ in app.http_routes] == ["/"]


# ----------------------------------------------------------------- the client's close message


def test_reading_the_text_of_the_clients_close_warns_once_with_the_fix(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messages, "_warned_at", set())  # each runner's run warns afresh
    app = App()
    seen: list[object] = []

    @app.websocket("/chat")
    def chat(ws):  # type: ignore[no-untyped-def]
        while True:
            msg = ws.recv()
            if msg is None:  # the mistake: the close message is not None
                break
            seen.append(msg.text)

    caplog.set_level(logging.WARNING, logger="cello")
    with TestClient(app) as client:
        for _ in range(3):
            with client.websocket_connect("/chat") as ws:
                ws.send_text("hi")
        assert wait_until(lambda: seen.count(None) == 3)
    assert seen == ["hi", None] * 3
    warnings = [r for r in caplog.records if "msg.text was read on the close message" in r.message]
    assert len(warnings) == 1, caplog.text
    assert "if msg is None or msg.is_close(): break" in warnings[0].message
    assert __file__ in warnings[0].message
    assert "in chat" in warnings[0].message


def test_the_right_loop_warns_nothing(caplog: pytest.LogCaptureFixture) -> None:
    app = App()
    closes: list[object] = []

    @app.websocket("/chat")
    def chat(ws):  # type: ignore[no-untyped-def]
        while True:
            msg = ws.recv()
            if msg is None or msg.is_close():
                closes.append((msg.code, msg.reason) if msg is not None else None)
                break
            ws.send_text(msg.text)

    caplog.set_level(logging.WARNING, logger="cello")
    with TestClient(app) as client:
        with client.websocket_connect("/chat") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "hi"
            ws.close(4000, "bye")
        assert wait_until(lambda: closes == [(4000, "bye")])
    assert "close message" not in caplog.text


# ----------------------------------------------------------------- async handlers


def test_an_unawaited_recv_in_an_async_handler_is_named_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()

    @app.websocket("/ws")
    async def handler(ws):  # type: ignore[no-untyped-def]
        msg = ws.recv()  # the mistake: no await
        await ws.send_text(msg.text)

    caplog.set_level(logging.ERROR, logger="cello")
    with TestClient(app) as client:
        with client.websocket_connect("/ws") as ws, pytest.raises(WebSocketDisconnect) as closed:
            ws.receive()
        assert closed.value.code == 1011
    (record,) = [r for r in caplog.records if "raised" in r.message]
    assert "handler is async def" in record.message
    assert "msg = await ws.recv()" in record.message


def test_sync_iteration_in_an_async_handler_is_named_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()

    @app.websocket("/ws")
    async def handler(ws):  # type: ignore[no-untyped-def]
        for msg in ws:  # the mistake: not async for
            await ws.send_text(msg.text)

    caplog.set_level(logging.ERROR, logger="cello")
    with TestClient(app) as client:
        with client.websocket_connect("/ws") as ws, pytest.raises(WebSocketDisconnect) as closed:
            ws.receive()
        assert closed.value.code == 1011
    assert "`async for msg in ws:`" in caplog.text


def test_other_async_handler_errors_get_no_hint(caplog: pytest.LogCaptureFixture) -> None:
    app = App()

    @app.websocket("/ws")
    async def handler(ws):  # type: ignore[no-untyped-def]
        raise TypeError("an ordinary bug")

    caplog.set_level(logging.ERROR, logger="cello")
    with TestClient(app) as client:
        with client.websocket_connect("/ws") as ws, pytest.raises(WebSocketDisconnect) as closed:
            ws.receive()
        assert closed.value.code == 1011
    (record,) = [r for r in caplog.records if "raised" in r.message]
    assert record.message.endswith("raised")
