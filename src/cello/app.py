"""`App`: the ASGI application users create, decorate and serve.

`App` keeps the route registry and the app-wide parts (handler threads, lifespan hooks,
the set of open WebSocket connections) and hands each ASGI scope to the module that
serves it: `_connection` for WebSockets, `lifespan` here.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from ._bridge import Channel
from ._connection import Guard, WebSocketEndpoint, serve_websocket
from ._threads import HandlerThreads
from .routing import RouteTable

__all__ = ["App"]

logger = logging.getLogger("cello")

F = TypeVar("F", bound=Callable[..., Any])
Hook = Callable[[], Any]


class App:
    """A cello application: an ASGI callable (`uvicorn module:app` serves it).

    Args:
        websocket_threads: How many sync WebSocket handlers may run at once, one thread
            each. Past it a new connection is accepted and closed with 1013 ("try again
            later") at once. Idle threads are reused, and exit after a few seconds unused.
    """

    def __init__(self, *, websocket_threads: int = 10_000) -> None:
        self.websocket_routes: RouteTable[WebSocketEndpoint] = RouteTable()
        self.websocket_threads = websocket_threads
        self.handler_threads = HandlerThreads(websocket_threads)
        #: Open WebSocket connections, so shutdown can close them.
        self.live_channels: set[Channel] = set()
        self._guard_limiter: anyio.CapacityLimiter | None = None
        self._startup_hooks: list[Hook] = []
        self._shutdown_hooks: list[Hook] = []

    # ----------------------------------------------------------------- registration

    def websocket(
        self,
        path: str,
        *,
        subprotocols: Sequence[str] = (),
        guard: Guard | Sequence[Guard] | None = None,
    ) -> Callable[[F], F]:
        """Register a WebSocket handler for `path`.

        The handler is `def h(ws)` or `def h(ws, request)` (a worker thread runs it and it
        may block), or the same as `async def` (it runs on the event loop and awaits the
        `AsyncWebSocket` methods). The connection is accepted before it is called.

        Args:
            path: A route path; `{name}` and typed `{name:int}` parameters land in
                `request.params`.
            subprotocols: Subprotocols this route speaks; the first one the client offers
                (in the client's order) is chosen and sent in the accept.
            guard: A callable, or several, run with the request before acceptance. Raise
                `HTTPException(status, detail)` or return `False` to refuse the connection.
        """
        guards: tuple[Guard, ...]
        if guard is None:
            guards = ()
        elif callable(guard):
            guards = (guard,)
        else:
            guards = tuple(guard)

        def register(handler: F) -> F:
            self.websocket_routes.add(path, WebSocketEndpoint.create(handler, subprotocols, guards))
            return handler

        return register

    @property
    def guard_limiter(self) -> anyio.CapacityLimiter:
        """Threads for plain-`def` guards of async routes (created on the event loop)."""
        if self._guard_limiter is None:
            self._guard_limiter = anyio.CapacityLimiter(self.websocket_threads)
        return self._guard_limiter

    def on_startup(self, hook: F) -> F:
        """Run `hook` (sync or async, no arguments) when the server starts."""
        self._startup_hooks.append(hook)
        return hook

    def on_shutdown(self, hook: F) -> F:
        """Run `hook` (sync or async, no arguments) when the server stops."""
        self._shutdown_hooks.append(hook)
        return hook

    # ----------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await serve_websocket(self, scope, receive, send)
        elif kind == "http":
            await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

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
        for hook in self._startup_hooks:
            await _call_hook(hook)

    async def shutdown(self) -> None:
        """Close open WebSockets with 1001, run the shutdown hooks, end idle threads."""
        await self.close_websockets()
        for hook in reversed(self._shutdown_hooks):
            await _call_hook(hook)
        await asyncio.to_thread(self.handler_threads.shutdown, 5.0)

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

    def run(self, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
        """Serve the app with uvicorn until interrupted; see `cello.serving.run`."""
        from .serving import run

        run(self, host=host, port=port, **options)


async def _call_hook(hook: Hook) -> None:
    result = hook()
    if inspect.isawaitable(result):
        await result
