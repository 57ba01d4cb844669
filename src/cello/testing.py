"""`TestClient`: drive a cello app in-process from plain (sync) tests.

Built on httpx and httpx-ws: HTTP goes through httpx's ASGI transport and WebSockets
through httpx-ws's, both on an event loop that runs in a background thread (an anyio
blocking portal), so a test needs no event-loop fixture:

    from cello.testing import TestClient

    def test_echo():
        with TestClient(app) as client, client.websocket_connect("/ws") as ws:
            assert ws.receive_text() == "Connected!"

httpx-ws's in-process transport differs from a real server in ways that would make tests
pass here and fail under uvicorn (or the reverse); `_ServerLikeTransport` corrects them:
the offered subprotocols are stripped of whitespace, the scope offers the ASGI
denial-response extension (so a guard's `HTTPException(401)` is an HTTP 401 here too), a
close before acceptance is an HTTP 403 rejection, as uvicorn answers it, and the handshake
may take longer than one second (a sync handler's thread may be slow to start under load).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType
from typing import Any

import anyio
import anyio.from_thread
import httpx
import wsproto.events
from httpx_ws import (
    AsyncWebSocketSession,
    WebSocketDisconnect,
    WebSocketUpgradeError,
    aconnect_ws,
)
from httpx_ws.transport import ASGIWebSocketTransport
from starlette.types import ASGIApp, Message

__all__ = ["TestClient", "WebSocketDisconnect", "WebSocketTestSession", "WebSocketUpgradeError"]

#: Seconds a receive waits by default, so a test that expects a message never hangs.
RECEIVE_TIMEOUT = 10.0


class _ServerLikeTransport(ASGIWebSocketTransport):
    """httpx-ws's in-process transport, made to behave like uvicorn where it matters."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("upgrade", "").lower() != "websocket":
            return await super().handle_async_request(request)
        offered = request.headers.get("sec-websocket-protocol")
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "root_path": self.root_path,
            "scheme": "wss" if request.url.scheme in ("https", "wss") else "ws",
            "query_string": request.url.query,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "client": self.client,
            "server": (request.url.host, request.url.port),
            "subprotocols": [p.strip() for p in offered.split(",")] if offered else [],
            "state": {},
            "extensions": {"websocket.http.response": {}},
        }
        try:
            return await self._handle_ws_request(request, scope)
        except WebSocketDisconnect as exc:
            # The app closed before accepting: a real server refuses the upgrade with 403.
            response = httpx.Response(403, request=request, content=b"")
            raise WebSocketUpgradeError(response) from exc


class WebSocketTestSession:
    """One in-process WebSocket connection, as a test sees it.

    Receives wait at most `timeout` seconds (10 by default) and raise `TimeoutError`
    past it. When the server closes the connection they raise `WebSocketDisconnect`,
    whose `code` and `reason` are the server's.

    Attributes:
        subprotocol: The subprotocol the app accepted, or `None`.
    """

    def __init__(self, portal: anyio.from_thread.BlockingPortal, session: AsyncWebSocketSession):
        self._portal = portal
        self._session = session
        self.subprotocol: str | None = session.subprotocol

    def send_text(self, data: str) -> None:
        """Send a text message."""
        self._portal.call(self._session.send_text, data)

    def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        self._portal.call(self._session.send_bytes, data)

    def send_json(self, data: Any) -> None:
        """Send `data` as JSON in a text message."""
        self._portal.call(self._session.send_text, json.dumps(data))

    def receive_text(self, timeout: float = RECEIVE_TIMEOUT) -> str:
        """Wait for a text message; `WebSocketDisconnect` if the server closes instead."""
        return self._portal.call(self._session.receive_text, timeout)

    def receive_bytes(self, timeout: float = RECEIVE_TIMEOUT) -> bytes:
        """Wait for a binary message; `WebSocketDisconnect` if the server closes instead."""
        return self._portal.call(self._session.receive_bytes, timeout)

    def receive_json(self, timeout: float = RECEIVE_TIMEOUT) -> Any:
        """Wait for a text message and parse it as JSON."""
        return json.loads(self.receive_text(timeout))

    def receive(self, timeout: float = RECEIVE_TIMEOUT) -> str | bytes:
        """Wait for the next message, text (`str`) or binary (`bytes`)."""
        event = self._portal.call(self._session.receive, timeout)
        if isinstance(event, wsproto.events.TextMessage | wsproto.events.BytesMessage):
            data = event.data
            return bytes(data) if isinstance(data, bytearray) else data
        raise TypeError(f"unexpected WebSocket event {event!r}")

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (the app's `recv()` sees a close message)."""
        self._portal.call(self._session.close, code, reason)


class TestClient:
    """Call an ASGI app in-process, synchronously: HTTP methods and `websocket_connect`.

    Used as a context manager, it also runs the app's lifespan: startup hooks on entry,
    shutdown hooks on exit. Without one, call `close()` when done. Every thread and task it
    starts ends by then.

    Args:
        app: The ASGI application (a cello `App`, or any ASGI app).
        base_url: The URL requests are resolved against.
        root_path: The ASGI `root_path`, as if the app were mounted there.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self, app: ASGIApp, base_url: str = "http://testserver", root_path: str = ""
    ) -> None:
        self.app = app
        self.base_url = base_url
        self.root_path = root_path
        self._stack: contextlib.ExitStack | None = None
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._client: httpx.AsyncClient | None = None

    # ----------------------------------------------------------------- lifecycle

    def _start(self) -> tuple[anyio.from_thread.BlockingPortal, httpx.AsyncClient]:
        if self._portal is None or self._client is None:
            with contextlib.ExitStack() as stack:
                portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
                client = stack.enter_context(portal.wrap_async_context_manager(self._http()))
                self._stack = stack.pop_all()
            self._portal, self._client = portal, client
        return self._portal, self._client

    @contextlib.asynccontextmanager
    async def _http(self) -> AsyncIterator[httpx.AsyncClient]:
        transport = _ServerLikeTransport(
            app=self.app, root_path=self.root_path, initial_receive_timeout=10.0
        )
        async with httpx.AsyncClient(transport=transport, base_url=self.base_url) as client:
            yield client

    def __enter__(self) -> TestClient:
        portal, _ = self._start()
        assert self._stack is not None
        try:
            self._stack.enter_context(portal.wrap_async_context_manager(self._lifespan()))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Run the lifespan shutdown (if started) and stop the client's event loop thread."""
        stack, self._stack = self._stack, None
        self._portal = self._client = None
        if stack is not None:
            stack.close()

    @contextlib.asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        to_app, app_inbox = anyio.create_memory_object_stream[Message](math.inf)
        app_outbox, from_app = anyio.create_memory_object_stream[Message](math.inf)
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        scope["state"] = {}
        failure: str | None = None

        async def run_app() -> None:
            with app_inbox, app_outbox:
                await self.app(scope, app_inbox.receive, app_outbox.send)

        async def step(event: str) -> str | None:
            """Send a lifespan event; the app's failure message, if it reports one."""
            await to_app.send({"type": f"lifespan.{event}"})
            try:
                reply = await from_app.receive()
            except anyio.EndOfStream:
                return None  # the app does not speak lifespan: nothing to run
            if reply["type"] == f"lifespan.{event}.failed":
                return f"lifespan {event} failed: {reply.get('message', '')}"
            return None

        with to_app, from_app:
            async with anyio.create_task_group() as group:
                group.start_soon(run_app)
                failure = await step("startup")
                if failure is None:
                    try:
                        yield
                    finally:
                        failure = await step("shutdown")
                group.cancel_scope.cancel()
        # Raised outside the task group, so the test sees it as is (not in a group).
        if failure is not None:
            raise RuntimeError(failure)

    # ----------------------------------------------------------------- HTTP

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send an HTTP request; `kwargs` are httpx's (`json=`, `headers=`, `params=`...)."""
        portal, client = self._start()
        return portal.call(functools.partial(client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("HEAD", url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("OPTIONS", url, **kwargs)

    # ----------------------------------------------------------------- WebSocket

    @contextlib.contextmanager
    def websocket_connect(
        self,
        path: str,
        subprotocols: Sequence[str] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Iterator[WebSocketTestSession]:
        """Open a WebSocket to `path`; closes it (code 1000) when the block ends.

        Raises:
            WebSocketUpgradeError: the app refused the connection; `.response` holds the
                HTTP status (`.response.status_code`) and body.
        """
        portal, client = self._start()

        @contextlib.asynccontextmanager
        async def connect() -> AsyncIterator[AsyncWebSocketSession]:
            session: AsyncWebSocketSession
            async with aconnect_ws(
                path,
                client,
                subprotocols=list(subprotocols) if subprotocols else None,
                headers=headers or {},
                params=params,
                keepalive_ping_interval_seconds=None,
            ) as session:
                yield session

        opened = portal.wrap_async_context_manager(connect())
        session: AsyncWebSocketSession = opened.__enter__()
        try:
            yield WebSocketTestSession(portal, session)
        finally:
            # Close cleanly whatever the test raised; its exception then propagates as is.
            try:
                opened.__exit__(None, None, None)
            except* anyio.ClosedResourceError:
                pass  # httpx-ws's reader after a session the test closed itself
