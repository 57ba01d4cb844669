"""The life of one HTTP request: route, read the body, call the handler, send the response.

* No route for the path: 404; a route without this method: 405 with `Allow`. JSON bodies.
  A path that only a WebSocket route serves: 426 with `Upgrade: websocket`, whatever the
  method, so a browser tab or `curl` opened on it learns it needs a WebSocket client.
* The body is read before the handler runs, up to the app's `max_body_size` (else 413),
  so `request.body()/json()/form()` are plain calls in sync and async handlers alike.
* A plain `def` handler runs in a worker thread from the app's own limiter (not anyio's
  shared 40 tokens, and not the WebSocket handler threads); an `async def` one on the loop.
* `HTTPException(status, detail)` becomes that status with `{"detail": ...}`; any other
  exception is logged with its traceback and answered 500 with no detail.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from .metrics import Metrics
from .request import Request
from .responses import to_response
from .routing import RouteTable
from .sse import LiveStreams, SseResponse

if TYPE_CHECKING:
    from ._connection import WebSocketEndpoint

logger = logging.getLogger("cello")

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass(frozen=True, slots=True)
class HttpEndpoint:
    """A registered HTTP handler and how to call it."""

    handler: Callable[..., Any]
    is_async: bool
    takes_request: bool

    @classmethod
    def create(cls, handler: Callable[..., Any]) -> HttpEndpoint:
        positional = [
            p
            for p in inspect.signature(handler).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(positional) > 1:
            raise TypeError(f"HTTP handler {handler.__qualname__} must take (request) or ()")
        return cls(handler, inspect.iscoroutinefunction(handler), len(positional) == 1)

    @property
    def name(self) -> str:
        return f"{self.handler.__module__}.{self.handler.__qualname__}"


#: The handlers of one path, by method.
MethodMap = dict[str, HttpEndpoint]


def error_response(status: int, detail: str, headers: Any = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def upgrade_required() -> JSONResponse:
    """The answer to a plain HTTP request for a WebSocket endpoint (RFC 9110 15.5.22: a
    426 names the protocol to switch to in `Upgrade`, and RFC 9110 7.8 has `Connection:
    Upgrade` go with it)."""
    return error_response(
        426,
        "This is a WebSocket endpoint: connect to it with a WebSocket client (ws:// or wss://)",
        {"Upgrade": "websocket", "Connection": "Upgrade"},
    )


class HttpHost(Protocol):
    """What serving HTTP needs from the app (an `App` is one), and nothing more."""

    http_routes: RouteTable[MethodMap]
    #: Consulted when no HTTP route matches, to answer a WebSocket path with 426.
    websocket_routes: RouteTable[WebSocketEndpoint]
    #: The largest request body read, in bytes.
    max_body_size: int
    #: The app's live SSE streams, so its shutdown can end them.
    live_streams: LiveStreams
    #: Counts responses by status.
    metrics: Metrics

    @property
    def http_limiter(self) -> anyio.CapacityLimiter: ...


async def serve_http(app: HttpHost, scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI application for one `http` scope."""
    response = await respond(app, scope, receive)
    app.metrics.http_response(response.status_code)
    await response(scope, receive, send)


async def respond(app: HttpHost, scope: Scope, receive: Receive) -> Response:
    """The response to one request: a refusal, or what the handler's result becomes."""
    found = app.http_routes.match_scope(scope)
    if found is None:
        if app.websocket_routes.match_scope(scope) is None:
            return error_response(404, "Not Found")
        return upgrade_required()
    methods, params = found
    method = scope["method"]
    endpoint = methods.get(method) or (methods.get("GET") if method == "HEAD" else None)
    if endpoint is None:
        allowed = sorted({*methods, *(["HEAD"] if "GET" in methods else [])})
        return error_response(405, "Method Not Allowed", {"Allow": ", ".join(allowed)})
    response: Response
    try:
        body = await read_body(scope, receive, app.max_body_size)
        request = Request(scope, params, body)
        args = (request,) if endpoint.takes_request else ()
        if endpoint.is_async:
            result = await endpoint.handler(*args)
        else:
            result = await anyio.to_thread.run_sync(
                endpoint.handler, *args, limiter=app.http_limiter
            )
        response = to_response(result)
    except HTTPException as exc:
        response = error_response(exc.status_code, exc.detail, exc.headers)
    except Exception:
        logger.exception("HTTP handler %s failed on %s %s", endpoint.name, method, scope["path"])
        response = error_response(500, "Internal Server Error")
    if isinstance(response, SseResponse):
        response.live_streams = app.live_streams  # so the app's shutdown can end it
    return response


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing with 413 past `limit` bytes.

    A declared `Content-Length` over the limit is refused before anything is read.
    """
    for name, value in scope.get("headers", ()):
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise HTTPException(413, f"The request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPException(400, "The client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"The request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
