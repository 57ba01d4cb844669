"""Security before acceptance: allowed origins (cross-site WebSocket hijacking), a token
checked by a guard, and refusals that carry no internal detail. Served by a real uvicorn on
every backend, driven by the `websockets` client, which sets `Origin` as a browser would."""

from __future__ import annotations

import logging
import queue

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from cello import App, Blueprint, HTTPException, Request, WebSocket
from cello.origins import OriginPolicy
from servers import SANSIO_BACKENDS, ThreadServer

pytestmark = pytest.mark.usefixtures("websocket_runner")

WAIT = 10


def greeter(app: App | Blueprint, path: str, **options: object) -> None:
    @app.websocket(path, **options)  # type: ignore[arg-type]
    def greet(ws: WebSocket) -> None:
        ws.send_text("welcome")


def refused_status(url: str, origin: str | None = None, **options: object) -> int:
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin=origin, **options).close()  # type: ignore[arg-type]
    status: int = refused.value.response.status_code
    return status


def greeted(url: str, origin: str | None = None) -> bool:
    with connect(url, origin=origin) as client:  # type: ignore[arg-type]
        return client.recv(WAIT) == "welcome"


# ----------------------------------------------------------------- origins on a real server


def test_app_origins_refuse_other_sites_with_403(ws_backend: str) -> None:
    app = App(allowed_origins=["https://app.example.com"])
    greeter(app, "/ws")
    with ThreadServer(app, ws=ws_backend) as server:
        with pytest.raises(InvalidStatus) as refused:
            connect(server.url("/ws"), origin="https://evil.example.net")  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
        assert refused.value.response.body == b'{"detail": "Origin not allowed"}'
        assert greeted(server.url("/ws"), origin="https://app.example.com")


def test_no_origin_header_is_allowed(ws_backend: str) -> None:
    """Browsers always send Origin; a client without one is not a hijacked browser page."""
    app = App(allowed_origins=["https://app.example.com"])
    greeter(app, "/ws")
    with ThreadServer(app, ws=ws_backend) as server:
        assert greeted(server.url("/ws"), origin=None)


def test_refused_origin_runs_no_guard_or_handler(ws_backend: str) -> None:
    app = App(allowed_origins=["https://app.example.com"])
    ran = queue.Queue[str]()

    def guard(request: Request) -> None:
        ran.put("guard")

    @app.websocket("/sync", guard=guard)
    def sync_handler(ws: WebSocket) -> None:
        ran.put("sync handler")

    @app.websocket("/async", guard=guard)
    async def async_handler(ws: object) -> None:
        ran.put("async handler")

    with ThreadServer(app, ws=ws_backend) as server:
        for path in ("/sync", "/async"):
            assert refused_status(server.url(path), "https://evil.example.net") == 403
        assert ran.empty()
        with connect(server.url("/sync"), origin="https://app.example.com"):  # type: ignore[arg-type]
            assert ran.get(timeout=WAIT) == "guard"
            assert ran.get(timeout=WAIT) == "sync handler"


def test_route_origins_replace_the_apps(ws_backend: str) -> None:
    app = App(allowed_origins=["https://app.example.com"])
    greeter(app, "/app-wide")
    greeter(app, "/widget", allowed_origins=["https://*.partner.example"])
    with ThreadServer(app, ws=ws_backend) as server:
        assert greeted(server.url("/widget"), "https://shop.partner.example")
        assert greeted(server.url("/widget"), "https://eu.shop.partner.example")
        assert refused_status(server.url("/widget"), "https://partner.example") == 403
        assert refused_status(server.url("/widget"), "https://app.example.com") == 403
        assert greeted(server.url("/app-wide"), "https://app.example.com")
        assert refused_status(server.url("/app-wide"), "https://shop.partner.example") == 403


def test_blueprint_route_origins(ws_backend: str) -> None:
    app = App()
    live = Blueprint("/live")
    greeter(live, "/feed", allowed_origins=["http://localhost:*"])
    app.register_blueprint(live)
    with ThreadServer(app, ws=ws_backend) as server:
        assert greeted(server.url("/live/feed"), "http://localhost:5173")
        assert refused_status(server.url("/live/feed"), "http://localhost.evil.example") == 403


def test_two_origin_headers_are_refused(ws_backend: str) -> None:
    """A request that names two origins is ambiguous: neither is trusted."""
    app = App(allowed_origins=["https://app.example.com"])
    greeter(app, "/ws")
    with ThreadServer(app, ws=ws_backend) as server:
        status = refused_status(
            server.url("/ws"),
            "https://app.example.com",
            additional_headers=[("Origin", "https://evil.example.net")],
        )
        # websockets-sansio's own parser (cello's default too) already answers 400; the others
        # leave it to cello.
        assert status == (400 if ws_backend in SANSIO_BACKENDS else 403)


# ----------------------------------------------------------------- the policy itself


@pytest.mark.parametrize(
    ("entry", "origin", "allowed"),
    [
        ("https://app.example.com", "https://app.example.com", True),
        ("https://app.example.com", "http://app.example.com", False),  # scheme counts
        ("https://app.example.com", "https://app.example.com:8443", False),  # port counts
        ("https://app.example.com", "https://app.example.com:443", True),  # default port
        ("https://app.example.com:443", "https://app.example.com", True),
        ("https://APP.example.com/", "https://app.EXAMPLE.com", True),  # case, trailing /
        ("https://*.example.com", "https://a.example.com", True),
        ("https://*.example.com", "https://a.b.example.com", True),
        ("https://*.example.com", "https://example.com", False),  # not the bare domain
        ("https://*.example.com", "https://evilexample.com", False),
        ("https://*.example.com", "https://a.example.com.evil.net", False),
        ("https://*.example.com", "http://a.example.com", False),
        ("http://localhost:*", "http://localhost", True),
        ("http://localhost:*", "http://localhost:8000", True),
        ("http://localhost:*", "http://localhost.evil.net:8000", False),
        ("http://[::1]:8000", "http://[::1]:8000", True),
        ("null", "null", True),
        ("https://app.example.com", "null", False),
        ("*", "https://anything.example", True),
        ("https://app.example.com", "", False),
        ("https://app.example.com", "app.example.com", False),
    ],
)
def test_origin_matching(entry: str, origin: str, allowed: bool) -> None:
    assert OriginPolicy([entry]).allows(origin) is allowed


@pytest.mark.parametrize(
    "entry",
    [
        "app.example.com",  # no scheme
        "https://app.example.com/chat",  # a path
        "https://*example.com",  # * not a whole label
        "https://a.*.example.com",  # * not leftmost
        "https://*",
        "*.example.com",
    ],
)
def test_malformed_entries_fail_when_the_route_is_declared(entry: str) -> None:
    app = App()
    with pytest.raises(ValueError, match="not scheme://host"):
        greeter(app, "/ws", allowed_origins=[entry])
    with pytest.raises(ValueError, match="not scheme://host"):
        App(allowed_origins=[entry])


# ----------------------------------------------------------------- authentication


def test_bearer_token_in_a_header_is_checked_before_accept(ws_backend: str) -> None:
    """The documented guard pattern with the token in `Authorization` (for non-browser
    clients; browsers cannot set headers on a WebSocket and use the query string)."""
    app = App()
    users = {"token-alice": "alice"}

    def authenticated(request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token not in users:
            raise HTTPException(401, "authentication required", {"WWW-Authenticate": "Bearer"})

    @app.websocket("/me", guard=authenticated)
    def me(ws: WebSocket, request: Request) -> None:
        ws.send_text(users[request.headers["authorization"].split()[1]])

    with ThreadServer(app, ws=ws_backend) as server:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "token-alice"}):
            with pytest.raises(InvalidStatus) as refused:
                connect(server.url("/me"), additional_headers=headers).close()
            assert refused.value.response.status_code == 401
            assert refused.value.response.headers["WWW-Authenticate"] == "Bearer"
        with connect(
            server.url("/me"), additional_headers={"Authorization": "Bearer token-alice"}
        ) as client:
            assert client.recv(WAIT) == "alice"


def test_crashing_guard_leaks_nothing_to_the_client(
    ws_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    def lookup(request: Request) -> None:
        raise RuntimeError("db password=hunter2 at 10.0.0.7")

    greeter(app, "/ws", guard=lookup)
    with ThreadServer(app, ws=ws_backend) as server, caplog.at_level(logging.ERROR, "cello"):
        with pytest.raises(InvalidStatus) as refused:
            connect(server.url("/ws")).close()
        response = refused.value.response
        assert response.status_code == 500
        assert response.body == b'{"detail": "Internal Server Error"}'
        assert "hunter2" not in str(response.headers)
    logged = [r for r in caplog.records if r.name == "cello" and r.exc_info]
    assert len(logged) == 1
    assert "hunter2" in str(logged[0].exc_info[1])  # type: ignore[index]
