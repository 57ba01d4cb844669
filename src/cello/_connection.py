"""The life of one WebSocket connection, from `websocket.connect` to the last ASGI event.

Route the path; refuse it if no route matches, or with 403 if the browser page's `Origin`
is not one the route allows (`cello.origins`); run the route's guards (which may refuse
with an HTTP status before anything is accepted); accept with the chosen subprotocol;
run the handler (a sync one on a handler thread or in a greenlet on the loop, as its
runner says; an async one on the loop); close with 1000 when it returns or 1011 when it
raises. The close codes the server may see:

* 1000: the handler returned; 1011: the handler raised (logged with its traceback);
* 1013: the runner's budget is spent (the app's `websocket_threads` or
  `websocket_greenlets`);
* 1001: the server is shutting down (see `App.close_websockets`);
* before acceptance: the guard's HTTP status through the ASGI denial-response extension,
  or close code 1008 (HTTP 403) where the server lacks it; 404 for an unknown path.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.to_thread
from greenlet import GreenletExit
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope, Send

from ._bridge import Channel
from ._events import accept_event, close_event, refusal
from ._greenlets import GreenletRun, HandlerGreenlets, await_
from ._server_link import find_link
from ._threads import HandlerThreads
from .errors import ConnectionClosed
from .guards import Guard
from .hub import Hub
from .metrics import Metrics
from .origins import OriginPolicy
from .request import Request
from .routing import RouteTable
from .runners import Runner, check_runner, default_runner
from .websocket import AsyncWebSocket, WebSocket

logger = logging.getLogger("cello")


@dataclass(frozen=True, slots=True)
class WebSocketEndpoint:
    """A registered WebSocket route: the handler and how to call it."""

    handler: Callable[..., Any]
    is_async: bool
    takes_request: bool
    subprotocols: tuple[str, ...]
    guards: tuple[Guard, ...]
    #: The route's own origin policy; `None` defers to the app's.
    origins: OriginPolicy | None = None
    #: How a plain `def` handler runs; `None` defers to the app's runner.
    runner: Runner | None = None

    @classmethod
    def create(
        cls,
        handler: Callable[..., Any],
        subprotocols: Sequence[str],
        guards: Sequence[Guard],
        origins: OriginPolicy | None = None,
        runner: str | None = None,
    ) -> WebSocketEndpoint:
        positional = [
            p
            for p in inspect.signature(handler).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(positional) not in (1, 2):
            raise TypeError(
                f"WebSocket handler {handler.__qualname__} must take (ws) or (ws, request)"
            )
        is_async = inspect.iscoroutinefunction(handler)
        checked = check_runner(runner)
        if checked is not None and is_async:
            raise TypeError(
                f"runner={runner!r} is for plain def handlers; {handler.__qualname__} is "
                "async def, which always runs on the event loop"
            )
        return cls(
            handler=handler,
            is_async=is_async,
            takes_request=len(positional) == 2,
            subprotocols=tuple(subprotocols),
            guards=tuple(guards),
            origins=origins,
            runner=checked,
        )

    @property
    def name(self) -> str:
        return f"{self.handler.__module__}.{self.handler.__qualname__}"


class WebSocketHost(Protocol):
    """What serving a WebSocket needs from the app (an `App` is one), and nothing more."""

    websocket_routes: RouteTable[WebSocketEndpoint]
    #: The app-wide origin policy (a route's own replaces it); `None` checks nothing.
    origin_policy: OriginPolicy | None
    handler_threads: HandlerThreads
    handler_greenlets: HandlerGreenlets
    #: The runner of plain `def` handlers whose route does not choose; `None`: the default.
    websocket_runner: Runner | None
    #: Open connections, so shutdown can close them.
    live_channels: set[Channel]
    hub: Hub
    #: Where a connection's counts go when it ends.
    metrics: Metrics
    #: How long a send waits for room by default (`None`: no limit).
    send_timeout: float | None

    @property
    def guard_limiter(self) -> anyio.CapacityLimiter: ...

    @property
    def blocking_limiter(self) -> anyio.CapacityLimiter: ...


def choose_subprotocol(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    """The first subprotocol in the client's order of preference that the route supports."""
    for candidate in offered:
        candidate = candidate.strip()
        if candidate in supported:
            return candidate
    return None


def _refusal_for(scope: Scope, error: BaseException | None) -> list[Message]:
    if error is None:
        return refusal(scope, 403, "Forbidden")
    if isinstance(error, HTTPException):
        return refusal(scope, error.status_code, error.detail, error.headers)
    logger.error("WebSocket guard raised; refusing the connection", exc_info=error)
    return refusal(scope, 500, "Internal Server Error")


def _origin_allowed(app: WebSocketHost, endpoint: WebSocketEndpoint, scope: Scope) -> bool:
    """The route's origin policy, else the app's, checked before any guard or handler code."""
    policy = endpoint.origins if endpoint.origins is not None else app.origin_policy
    if policy is None or policy.allows_scope(scope):
        return True
    logger.info("Refused a WebSocket to %s from a disallowed origin", scope.get("path"))
    return False


def _call_handler(endpoint: WebSocketEndpoint, ws: Any, request: Request) -> Any:
    if endpoint.takes_request:
        return endpoint.handler(ws, request)
    return endpoint.handler(ws)


def _log_handler_error(endpoint: WebSocketEndpoint, error: BaseException) -> None:
    hint = _mistake_hint(endpoint, error)
    if hint is None:
        logger.error("WebSocket handler %s raised", endpoint.name, exc_info=error)
    else:
        logger.error("WebSocket handler %s raised. %s", endpoint.name, hint, exc_info=error)


def _mistake_hint(endpoint: WebSocketEndpoint, error: BaseException) -> str | None:
    """The likely slip behind `error` in an async handler, said plainly, or `None`.

    `ws.recv()` without `await` gives a coroutine, so the handler fails one line later on
    "'coroutine' object has no attribute 'text'", which does not name the missing `await`.
    """
    if not endpoint.is_async:
        return None
    name = endpoint.handler.__qualname__
    message = str(error)
    if isinstance(error, TypeError) and "'AsyncWebSocket' object is not iterable" in message:
        return f"{name} is async def: iterate the connection with `async for msg in ws:`"
    unawaited = getattr(error, "obj", None)  # the object an AttributeError was raised on
    if inspect.iscoroutine(unawaited):
        unawaited.close()  # said here: no "never awaited" RuntimeWarning on top
    elif not (isinstance(error, TypeError) and "coroutine" in message):
        return None
    return (
        f"{name} is async def, so ws.recv(), ws.send_text() and the other ws methods "
        "return coroutines: await them (`msg = await ws.recv()`), or make the handler a "
        "plain def"
    )


async def serve_websocket(app: WebSocketHost, scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI application for one `websocket` scope."""
    event = await receive()
    if event["type"] != "websocket.connect":
        return  # the client left before the handshake
    found = app.websocket_routes.match_scope(scope)
    if found is None:
        for message in refusal(scope, 404, "No WebSocket route for this path"):
            await send(message)
        return
    endpoint, params = found
    if not _origin_allowed(app, endpoint, scope):
        for message in refusal(scope, 403, "Origin not allowed"):
            await send(message)
        return
    request = Request(scope, params)
    subprotocol = choose_subprotocol(scope.get("subprotocols") or (), endpoint.subprotocols)
    accept = accept_event(subprotocol)
    loop = asyncio.get_running_loop()
    runner = None if endpoint.is_async else _runner_of(app, endpoint)
    channel = Channel(
        loop,
        receive,
        send,
        sync_reader=runner == "thread",
        send_timeout=app.send_timeout,
        link=find_link(scope, receive, send),
    )
    app.live_channels.add(channel)
    if not app.hub.running:
        await app.hub.start()  # served without lifespan (mounted): start on first use
    try:
        if runner is None:
            await _run_async(app, endpoint, channel, request, subprotocol, accept)
        elif runner == "greenlet":
            await _run_greenlet(app, _GreenletTurn(endpoint, channel, request, subprotocol, accept))
        else:
            # Awaited here rather than in a coroutine of its own (as the other runners
            # are): one frame fewer for each idle thread route's connection.
            turn = _ThreadTurn(endpoint, channel, request, subprotocol, accept)
            if turn.start(app.handler_threads):
                try:
                    await turn.done
                except asyncio.CancelledError:
                    channel.abort()  # wake the handler's blocked recv/send: its thread ends
                    raise
                await channel.finish()
            else:
                threads = app.handler_threads
                await _refuse_busy(
                    channel, accept, request.path, "thread", threads.busy, threads.limit
                )
    finally:
        app.live_channels.discard(channel)
        app.hub.forget(channel)
        app.metrics.connection_ended(channel)
    if channel.lost_before_handshake:
        # Answer the handshake anyway: uvicorn's legacy `websockets` backend logs "ASGI
        # callable returned without sending handshake" at ERROR for an app that returns
        # having sent nothing; the other backends refuse this send (the client is gone).
        with contextlib.suppress(Exception):
            await send(close_event(1000, ""))


def _runner_of(app: WebSocketHost, endpoint: WebSocketEndpoint) -> Runner:
    return endpoint.runner or app.websocket_runner or default_runner()


async def _refuse_busy(
    channel: Channel, accept: Message, path: str, kind: str, busy: int, limit: int
) -> None:
    """Accept and close with 1013: the runner's budget is spent."""
    logger.warning(
        "No WebSocket handler %s for %s (%d of %d busy); refusing it with 1013",
        kind,
        path,
        busy,
        limit,
    )
    channel.accept(accept)
    channel.close(1013, "server busy, try again later")
    await channel.finish()


async def _run_async(
    app: WebSocketHost,
    endpoint: WebSocketEndpoint,
    channel: Channel,
    request: Request,
    subprotocol: str | None,
    accept: Message,
) -> None:
    error: BaseException | None = None
    try:
        for guard in endpoint.guards:
            if inspect.iscoroutinefunction(guard):
                allowed = await guard(request)
            else:
                # A private limiter: anyio's shared one has only 40 threads.
                allowed = await anyio.to_thread.run_sync(guard, request, limiter=app.guard_limiter)
            if allowed is False:
                break
        else:
            allowed = True
    except Exception as exc:  # noqa: BLE001 - any guard failure refuses the connection
        allowed, error = False, exc
    if not allowed:
        channel.deny(_refusal_for(request.scope, error))
        await channel.finish()
        return
    ws = AsyncWebSocket(channel, request, subprotocol)
    try:
        await channel.aaccept(accept)
        await _call_handler(endpoint, ws, request)
    except ConnectionClosed:
        pass  # a send raced the client's departure: a normal end
    except asyncio.CancelledError:
        channel.abort()
        raise
    except Exception as exc:  # noqa: BLE001 - the handler boundary: log, close 1011, serve on
        _log_handler_error(endpoint, exc)
        channel.close(1011, "internal error")
    await channel.finish()


async def _run_greenlet(app: WebSocketHost, turn: _GreenletTurn) -> None:
    """Run a plain `def` handler's turn in a greenlet on this task (see `_greenlets`)."""
    channel = turn.channel
    greenlets = app.handler_greenlets
    if not greenlets.reserve():
        await _refuse_busy(
            channel, turn.accept, turn.request.path, "greenlet", greenlets.busy, greenlets.limit
        )
        return
    try:
        await GreenletRun(
            turn.serve,
            channel,
            route=turn.endpoint.name,
            watch=greenlets.watch,
            limiter=app.blocking_limiter,
        ).run()
    except asyncio.CancelledError:
        channel.abort()
        raise
    finally:
        greenlets.release()
    await channel.finish()


class _HandlerTurn:
    """A plain `def` handler's whole turn, on its thread or in its greenlet: the guards,
    the accept, the handler, and the boundary that turns its failure into 1011.

    The runners differ in how the turn accepts (`accept_now`) and waits for an async
    guard (`wait`). One object per connection holding what the turn needs, rather than
    closures over the runner's frame: an idle connection keeps it, and costs less so.
    """

    __slots__ = ("accept", "channel", "endpoint", "request", "ws")

    #: What passes through the boundary: not the handler's failure (cancellation).
    unwinding: tuple[type[BaseException], ...] = ()

    def __init__(
        self,
        endpoint: WebSocketEndpoint,
        channel: Channel,
        request: Request,
        subprotocol: str | None,
        accept: Message,
    ) -> None:
        self.endpoint = endpoint
        self.channel = channel
        self.request = request
        self.ws = WebSocket(channel, request, subprotocol)
        self.accept = accept

    def serve(self) -> None:
        """The turn itself."""
        endpoint, channel = self.endpoint, self.channel
        try:
            if self._guards_allow():
                self.accept_now()
                _call_handler(endpoint, self.ws, self.request)
        except ConnectionClosed:
            pass  # a send raced the client's departure: a normal end
        except self.unwinding:
            raise
        except BaseException as exc:  # noqa: BLE001 - the handler boundary, SystemExit too:
            # log and close 1011; a thread goes back to the pool, never dies with its job.
            _log_handler_error(endpoint, exc)
            channel.close(1011, "internal error")

    def accept_now(self) -> None:
        """Accept the connection (`ConnectionClosed` if it is closed already)."""
        raise NotImplementedError

    def wait(self, awaitable: Awaitable[Any]) -> Any:
        """Wait here for `awaitable` (an async guard's result), run on the loop."""
        raise NotImplementedError

    def _guards_allow(self) -> bool:
        """Run the route's guards; refuse through the channel if one says no."""
        request = self.request
        error: Exception | None = None
        try:
            for guard in self.endpoint.guards:
                result = guard(request)
                if inspect.isawaitable(result):
                    result = self.wait(result)
                if result is False:
                    break
            else:
                return True
        except Exception as exc:  # noqa: BLE001 - any guard failure refuses the connection
            error = exc
        self.channel.deny(_refusal_for(request.scope, error))
        return False


class _ThreadTurn(_HandlerTurn):
    """The turn as a handler thread's job: it queues the accept, an async guard runs on
    the loop, and the loop hears (`done`) when the turn has ended."""

    __slots__ = ("done",)

    #: Resolved on the loop once the turn has ended (made by `start`).
    done: asyncio.Future[None]

    def start(self, threads: HandlerThreads) -> bool:
        """Start the turn on one of `threads` (on the loop); `False` if their budget is
        spent."""
        self.done = asyncio.get_running_loop().create_future()
        self.channel.start_pump()
        return threads.submit(self._on_thread)

    def _on_thread(self) -> None:
        try:
            self.serve()
        finally:
            # RuntimeError: the loop is gone (process exit) and nobody is waiting.
            with contextlib.suppress(RuntimeError):
                self.done.get_loop().call_soon_threadsafe(self._ended)

    def _ended(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def accept_now(self) -> None:
        self.channel.accept(self.accept)

    def wait(self, awaitable: Awaitable[Any]) -> Any:
        loop = self.done.get_loop()
        return asyncio.run_coroutine_threadsafe(_await(awaitable), loop).result()


class _GreenletTurn(_HandlerTurn):
    """The turn in a greenlet handler on its connection's task (see `_greenlets`)."""

    __slots__ = ()

    # The task's cancellation unwinds the handler where it waits (`GreenletRun`).
    unwinding = (asyncio.CancelledError, GreenletExit)

    def accept_now(self) -> None:
        # Sent before the handler runs: nothing reads this connection (no pump), so
        # sending is how a client that left during the guards is found out.
        await_(self.channel.aaccept(self.accept))

    def wait(self, awaitable: Awaitable[Any]) -> Any:
        return await_(awaitable)


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
