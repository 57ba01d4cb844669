"""A cello app mounted inside Starlette and FastAPI, wrapped in ecosystem middleware.

Routes resolve under the mount prefix (`root_path`) for HTTP and WebSocket alike, and
Starlette's CORS and GZip middleware wrap the app unchanged.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from websockets.sync.client import connect

from cello import App, Request, WebSocket
from servers import ThreadServer

pytestmark = pytest.mark.usefixtures("websocket_runner")

WAIT = 10


def realtime_app() -> App:
    app = App()

    @app.get("/hello/{name}")
    def hello(request: Request) -> dict[str, str]:
        return {"hello": request.params["name"], "path": request.path}

    @app.get("/big")
    def big() -> str:
        return "cello " * 2000

    @app.websocket("/ws/{room}")
    def room(ws: WebSocket, request: Request) -> None:
        ws.send_text(f"room {request.params['room']} at {request.path}")
        for msg in ws:
            ws.send_text(f"echo {msg.text}")

    return app


def with_starlette(inner: App) -> Starlette:
    async def home(request: object) -> PlainTextResponse:
        return PlainTextResponse("starlette home")

    outer = Starlette(routes=[Route("/", home), Mount("/rt", app=inner)])
    outer.add_middleware(GZipMiddleware, minimum_size=500)
    outer.add_middleware(CORSMiddleware, allow_origins=["https://example.com"])
    return outer


def with_fastapi(inner: App) -> FastAPI:
    outer = FastAPI()

    @outer.get("/")
    def home() -> dict[str, str]:
        return {"fastapi": "home"}

    outer.mount("/rt", inner)
    outer.add_middleware(GZipMiddleware, minimum_size=500)
    outer.add_middleware(CORSMiddleware, allow_origins=["https://example.com"])
    return outer


@pytest.fixture(params=["starlette", "fastapi"])
def server(request: pytest.FixtureRequest) -> Iterator[ThreadServer]:
    inner = realtime_app()
    outer = with_starlette(inner) if request.param == "starlette" else with_fastapi(inner)
    with ThreadServer(outer, ws="websockets-sansio") as running:  # type: ignore[arg-type]
        yield running


def test_http_routes_resolve_under_the_prefix(server: ThreadServer) -> None:
    with httpx.Client(base_url=server.http_url(""), timeout=WAIT) as http:
        response = http.get("/rt/hello/ann")
        assert response.json() == {"hello": "ann", "path": "/hello/ann"}
        assert http.get("/").status_code == 200
        assert http.get("/rt/missing").json() == {"detail": "Not Found"}


def test_websocket_routes_resolve_under_the_prefix(server: ThreadServer) -> None:
    with connect(server.url("/rt/ws/lobby")) as ws:
        assert ws.recv(WAIT) == "room lobby at /ws/lobby"
        ws.send("hi")
        assert ws.recv(WAIT) == "echo hi"


def test_cors_and_gzip_wrap_the_app(server: ThreadServer) -> None:
    with httpx.Client(base_url=server.http_url(""), timeout=WAIT) as http:
        preflight = http.options(
            "/rt/hello/x",
            headers={"Origin": "https://example.com", "Access-Control-Request-Method": "GET"},
        )
        assert preflight.headers["access-control-allow-origin"] == "https://example.com"
        response = http.get("/rt/hello/x", headers={"Origin": "https://example.com"})
        assert response.headers["access-control-allow-origin"] == "https://example.com"
        raw = http.get("/rt/big", headers={"Accept-Encoding": "gzip"})
        assert raw.headers["content-encoding"] == "gzip"
        assert raw.text == "cello " * 2000  # httpx decodes it
        assert len(gzip.compress(raw.content)) < 2000 * 6


def test_add_middleware_on_the_cello_app() -> None:
    app = realtime_app()
    app.add_middleware(GZipMiddleware, minimum_size=500)
    app.add_middleware(CORSMiddleware, allow_origins=["*"])
    with ThreadServer(app, ws="websockets-sansio") as server:
        with httpx.Client(base_url=server.http_url(""), timeout=WAIT) as http:
            response = http.get("/big", headers={"Origin": "https://a.example"})
            assert response.headers["content-encoding"] == "gzip"
            assert response.headers["access-control-allow-origin"] == "*"
        with connect(server.url("/ws/mid")) as ws:
            assert ws.recv(WAIT) == "room mid at /ws/mid"
    with pytest.raises(RuntimeError, match="before the app starts serving"):
        app.add_middleware(GZipMiddleware)
