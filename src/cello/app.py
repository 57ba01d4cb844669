"""`App`: the ASGI application users create, decorate and serve.

`App` keeps the route tables and the app-wide parts (handler threads, lifespan hooks,
middleware, the set of open WebSocket connections) and hands each ASGI scope to the module
that serves it: `_http` for HTTP, `_connection` for WebSockets, lifespan here.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ._bridge import Channel
from ._connection import WebSocketEndpoint, serve_websocket
from ._greenlets import HandlerGreenlets
from ._http import HttpEndpoint, MethodMap, serve_http
from ._threads import HandlerThreads
from .blueprints import Routes
from .browser import client_script
from .guards import Guard
from .hub import Hub
from .metrics import CONTENT_TYPE as METRICS_TYPE
from .metrics import Metrics
from .origins import OriginPolicy
from .request import Request
from .request_log import RequestLog, show_request_log
from .responses import Response
from .routing import RouteTable
from .runners import Runner, check_runner
from .sse import LiveStreams

__all__ = ["App"]

logger = logging.getLogger("cello")

F = TypeVar("F", bound=Callable[..., Any])
Hook = Callable[[], Any]

#: `enable_cors` defaults, as in Cello.
CORS_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")
CORS_HEADERS = ("Content-Type", "Authorization", "Accept", "Origin", "X-Requested-With")


class App(Routes):
    """A cello application: an ASGI callable (`uvicorn module:app` serves it).

    Args:
        websocket_runner: How plain `def` WebSocket handlers run: `"thread"` (a worker
            thread each; any blocking code works) or `"greenlet"` (on the event loop's
            thread, switching away wherever they wait: cheaper per message and per
            connection, but code that blocks for real stalls the loop). `None` (the
            default) reads `CELLO_WEBSOCKET_RUNNER`, `"thread"` when unset. A route's own
            `runner=` wins. See `cello.runners`.
        websocket_threads: How many sync WebSocket handlers may run at once, one thread
            each. Past it a new connection is accepted and closed with 1013 ("try again
            later") at once. Idle threads are reused, and exit after a few seconds unused.
            It also bounds the threads greenlet handlers' `cello.blocking` calls use.
        websocket_greenlets: How many greenlet-runner handlers may run at once; past it a
            new connection is closed with 1013.
        loop_stall_threshold: Seconds a greenlet handler may hold the event loop between
            two waits before a warning (once per route, with its stack) says it blocks;
            `None` turns the watch off.
        http_threads: How many sync HTTP handlers may run at once (further requests wait
            for a thread). Separate from the WebSocket threads.
        max_body_size: The largest request body read, in bytes; larger ones get 413.
        allowed_origins: The web origins that may open a WebSocket (exact, like
            `https://app.example.com`, or patterns, like `https://*.example.com`); an
            upgrade from any other browser origin is refused with 403 before guards and
            handler run. A route's own `allowed_origins` replaces this list. `None` (the
            default) checks nothing; see `cello.origins.OriginPolicy`.
        hub: The broadcast hub's backend (`app.hub`): a Redis URL (`redis://host:port/db`)
            shared by every process that should see the broadcasts, a `Hub`, or `None` to
            read the `CELLO_HUB_URL` environment variable, in memory (this process only)
            when that is unset.
        send_timeout: How long a WebSocket send may wait for a client that has fallen far
            behind (seconds; `None`, the default, waits as long as it takes). Past it the
            client is taken to have stopped reading: the connection is closed with 1008
            and the send raises `ConnectionClosed`. A send's own `timeout=` overrides it.
    """

    def __init__(
        self,
        *,
        websocket_runner: Runner | None = None,
        websocket_threads: int = 10_000,
        websocket_greenlets: int = 100_000,
        loop_stall_threshold: float | None = 0.1,
        http_threads: int = 256,
        max_body_size: int = 16 * 1024 * 1024,
        allowed_origins: Sequence[str] | None = None,
        hub: str | Hub | None = None,
        send_timeout: float | None = None,
    ) -> None:
        self.websocket_routes: RouteTable[WebSocketEndpoint] = RouteTable()
        self.http_routes: RouteTable[MethodMap] = RouteTable()
        self.websocket_runner = check_runner(websocket_runner, "websocket_runner")
        self.websocket_threads = websocket_threads
        self.handler_threads = HandlerThreads(websocket_threads)
        self.handler_greenlets = HandlerGreenlets(websocket_greenlets, loop_stall_threshold)
        self.http_threads = http_threads
        self.max_body_size = max_body_size
        if send_timeout is not None and send_timeout <= 0:
            raise ValueError("send_timeout must be positive (or None: no limit)")
        self.send_timeout = send_timeout
        #: The origins every WebSocket route accepts unless it has its own list.
        self.origin_policy = OriginPolicy.of(allowed_origins)
        #: Open WebSocket connections, so shutdown can close them.
        self.live_channels: set[Channel] = set()
        #: SSE responses being sent, so shutdown can end them (this app's only).
        self.live_streams = LiveStreams()
        #: Groups of connections and broadcasts to them, in memory or across processes.
        self.hub = Hub.from_setting(hub)
        #: Counters and gauges in Prometheus' text format (`enable_metrics` serves them).
        self.metrics = Metrics(self.live_channels, self.live_streams, self.hub)
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        self._middleware: list[tuple[Callable[..., ASGIApp], dict[str, Any]]] = []
        self._stack: ASGIApp | None = None
        self._startup_hooks: list[Hook] = []
        self._shutdown_hooks: list[Hook] = []

    # ----------------------------------------------------------------- registration

    def _add_http(self, path: str, methods: Sequence[str], handler: Callable[..., Any]) -> None:
        endpoint = HttpEndpoint.create(handler)
        existing = self.http_routes.exact(path)
        if existing is None:
            existing = {}
            self.http_routes.add(path, existing)
        for method in methods:
            if method in existing:
                raise ValueError(f"{method} {path} is already registered")
            existing[method] = endpoint

    def _add_websocket(
        self,
        path: str,
        handler: Callable[..., Any],
        subprotocols: Sequence[str],
        guards: tuple[Guard, ...],
        origins: OriginPolicy | None = None,
        runner: str | None = None,
    ) -> None:
        endpoint = WebSocketEndpoint.create(handler, subprotocols, guards, origins, runner)
        self.websocket_routes.add(path, endpoint)

    def on_startup(self, hook: F) -> F:
        """Run `hook` (sync or async, no arguments) when the server starts."""
        self._startup_hooks.append(hook)
        return hook

    def on_shutdown(self, hook: F) -> F:
        """Run `hook` (sync or async, no arguments) when the server stops."""
        self._shutdown_hooks.append(hook)
        return hook

    def enable_cors(
        self,
        origins: Sequence[str] | None = None,
        *,
        methods: Sequence[str] = CORS_METHODS,
        headers: Sequence[str] = CORS_HEADERS,
        credentials: bool = False,
        max_age: int = 86_400,
    ) -> None:
        """Answer CORS preflights and add CORS headers to HTTP responses (Cello's name).

        Starlette's `CORSMiddleware`, with Cello's defaults: every origin (`["*"]`) unless
        `origins` lists them. Browsers send no cookies to `*`; list the origins when
        `credentials` is on. WebSockets are not subject to CORS: `allowed_origins` (on
        `App` or a route) is what restricts the pages that may open one.
        """
        self.add_middleware(
            CORSMiddleware,
            allow_origins=list(origins) if origins is not None else ["*"],
            allow_methods=list(methods),
            allow_headers=list(headers),
            allow_credentials=credentials,
            max_age=max_age,
        )

    def enable_compression(self, min_size: int | None = None) -> None:
        """Gzip responses of at least `min_size` bytes (default 500) for clients that accept
        it (Cello's name for Starlette's `GZipMiddleware`; event streams are left alone)."""
        self.add_middleware(GZipMiddleware, minimum_size=500 if min_size is None else min_size)

    def enable_logging(self) -> None:
        """Log a line per HTTP request and per WebSocket when it ends, with its status (or
        close code) and duration (Cello's name); see `cello.request_log`."""
        show_request_log()
        self.add_middleware(RequestLog)

    def on_event(self, event: str) -> Callable[[F], F]:
        """`@app.on_event("startup")` / `("shutdown")`: Cello's and Starlette's spelling of
        `on_startup` / `on_shutdown`."""
        if event == "startup":
            return self.on_startup
        if event == "shutdown":
            return self.on_shutdown
        raise ValueError(f'on_event takes "startup" or "shutdown", not {event!r}')

    def enable_metrics(self, path: str = "/metrics") -> None:
        """Serve `app.metrics` at `path` (GET) in Prometheus' text format; see
        `cello.metrics`. Anyone who can reach the path reads the numbers: serve it where
        only the scraper can (or write the route yourself around `app.metrics.render()`)."""

        @self.get(path)
        def metrics() -> Response:
            return Response(self.metrics.render(), media_type=METRICS_TYPE)

    def enable_client(self, path: str = "/cello.js") -> None:
        """Serve the browser client (`cello.js`, see `cello.browser`) at `path` (GET), as
        `text/javascript`; browsers revalidate it (`ETag`), so an upgrade reaches them."""
        script = client_script().encode()
        etag = '"' + hashlib.sha256(script).hexdigest()[:32] + '"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}

        @self.get(path)
        def cello_js(request: Request) -> Response:
            if request.headers.get("if-none-match") == etag:
                return Response(b"", status_code=304, headers=headers)
            return Response(script, media_type="text/javascript; charset=utf-8", headers=headers)

    def add_middleware(self, middleware: Callable[..., ASGIApp], **options: Any) -> None:
        """Wrap the app in ASGI middleware (`add_middleware(CORSMiddleware, allow_origins=...)`).

        The last one added is the outermost. Add middleware before the app serves.
        """
        if self._stack is not None:
            raise RuntimeError("add middleware before the app starts serving")
        self._middleware.append((middleware, options))

    # ----------------------------------------------------------------- thread limits

    @property
    def http_limiter(self) -> anyio.CapacityLimiter:
        """Threads for sync HTTP handlers (created on the event loop)."""
        return self._limiter("http", self.http_threads)

    @property
    def guard_limiter(self) -> anyio.CapacityLimiter:
        """Threads for plain-`def` guards of async WebSocket routes."""
        return self._limiter("guard", self.websocket_threads)

    @property
    def blocking_limiter(self) -> anyio.CapacityLimiter:
        """Threads for `cello.blocking` calls from greenlet handlers."""
        return self._limiter("blocking", self.websocket_threads)

    def _limiter(self, name: str, tokens: int) -> anyio.CapacityLimiter:
        # Private limiters: anyio's shared default has only 40 threads for the process.
        limiter = self._limiters.get(name)
        if limiter is None:
            limiter = self._limiters[name] = anyio.CapacityLimiter(tokens)
        return limiter

    # ----------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stack = self._stack
        if stack is None:
            stack = self._stack = self._build_stack()
        await stack(scope, receive, send)

    def _build_stack(self) -> ASGIApp:
        if not self._middleware:
            # `_route` hands over the coroutine that serves the scope, for `__call__` to
            # await: one coroutine frame fewer for the whole life of every connection.
            return self._route
        app: ASGIApp = self._dispatch
        for middleware, options in self._middleware:
            app = middleware(app, **options)
        return app

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        # What middleware wraps: a coroutine function, as some check an app is.
        await self._route(scope, receive, send)

    def _route(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The coroutine that serves `scope`, by its type."""
        kind = scope["type"]
        if kind == "http":
            return serve_http(self, scope, receive, send)
        if kind == "websocket":
            return serve_websocket(self, scope, receive, send)
        if kind == "lifespan":
            return self._lifespan(receive, send)
        return _ignored()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("Startup failed")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                except Exception as exc:
                    logger.exception("Shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Run the startup hooks (the ASGI lifespan does this)."""
        if self.handler_threads.closed:
            self.handler_threads = HandlerThreads(self.websocket_threads)
        if self.handler_greenlets.watch is not None:
            self.handler_greenlets.watch.restart()
        await self.hub.start()
        for hook in self._startup_hooks:
            await _call_hook(hook)

    async def shutdown(self) -> None:
        """Close open connections, run the shutdown hooks, stop the hub, end idle threads."""
        await self.close_connections()
        for hook in reversed(self._shutdown_hooks):
            await _call_hook(hook)
        await self.hub.stop()
        await asyncio.to_thread(self.handler_threads.shutdown, 5.0)
        await asyncio.to_thread(self.handler_greenlets.shutdown)

    async def close_connections(self, timeout: float = 5.0) -> None:
        """End this app's live SSE streams and close its WebSockets with 1001 (shutdown)."""
        self.live_streams.end_all()
        await self.close_websockets(timeout=timeout)

    async def close_websockets(
        self, code: int = 1001, reason: str = "server shutting down", timeout: float = 5.0
    ) -> None:
        """Close every open WebSocket connection and wait up to `timeout` s for them to end.

        This is a close from the app's side: blocked `recv()` calls return `None` and later
        sends raise `ConnectionClosed`, so handlers that loop on `recv()` return.
        """
        for channel in list(self.live_channels):
            channel.close(code, reason)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Polling: once per shutdown, and the set is emptied by many connection tasks.
        while self.live_channels and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    # ----------------------------------------------------------------- serving

    def run(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        workers: int = 1,
        reload: bool = False,
        **options: Any,
    ) -> None:
        """Serve the app with uvicorn until interrupted; see `cello.serving.run`.

        The script's command line overrides the arguments (`python app.py --port 9000`;
        `--help` lists the flags, an unknown one exits with status 2); `argv=[]` in
        `options` reads none.
        """
        from .serving import run

        run(self, host=host, port=port, workers=workers, reload=reload, **options)


async def _call_hook(hook: Hook) -> None:
    result = hook()
    if inspect.isawaitable(result):
        await result


async def _ignored() -> None:
    """A scope type cello does not serve: nothing to do."""
