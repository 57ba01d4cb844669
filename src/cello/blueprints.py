"""The route decorators, shared by `App` and `Blueprint` (a route group with a prefix).

`Routes` holds the decorator API (`get`, `post`, ..., `route`, `websocket`) and turns each
into one of two calls its subclass implements: `_add_http` and `_add_websocket`. `App`
registers routes for real; a `Blueprint` records them and replays them, prefixed, when an
app (or a parent blueprint) registers it.

The decorators refuse the usual slips when they are made, with the fix in the message,
rather than registering something that never matches: a decorator used without its
path (`@app.websocket` with no parentheses), a WebSocket handler taking `(request, ws)`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .guards import Guard
from .origins import OriginPolicy
from .runners import check_runner

F = TypeVar("F", bound=Callable[..., Any])


class Routes:
    """Route decorators; subclasses decide what registering means."""

    def _add_http(self, path: str, methods: Sequence[str], handler: Callable[..., Any]) -> None:
        raise NotImplementedError

    def _add_websocket(
        self,
        path: str,
        handler: Callable[..., Any],
        subprotocols: Sequence[str],
        guards: tuple[Guard, ...],
        origins: OriginPolicy | None = None,
        runner: str | None = None,
    ) -> None:
        raise NotImplementedError

    def route(self, path: str, methods: Sequence[str] = ("GET",)) -> Callable[[F], F]:
        """Register an HTTP handler for `path` and `methods`.

        The handler is `def h(request)` (run in a worker thread; it may block) or
        `async def h(request)` (run on the event loop); `h()` without the request works too.
        It returns a `dict`/`list` (JSON), `str` (text), `bytes`, `None` (204) or a
        `Response`. Path parameters (`{id}`, `{id:int}`) land in `request.params`.
        """
        _check_path(path, "route")
        upper = tuple(m.upper() for m in methods)

        def register(handler: F) -> F:
            self._add_http(path, upper, handler)
            return handler

        return register

    def get(self, path: str) -> Callable[[F], F]:
        """Register a `GET` handler (it also answers `HEAD`)."""
        _check_path(path, "get")
        return self.route(path, ("GET",))

    def post(self, path: str) -> Callable[[F], F]:
        """Register a `POST` handler."""
        _check_path(path, "post")
        return self.route(path, ("POST",))

    def put(self, path: str) -> Callable[[F], F]:
        """Register a `PUT` handler."""
        _check_path(path, "put")
        return self.route(path, ("PUT",))

    def patch(self, path: str) -> Callable[[F], F]:
        """Register a `PATCH` handler."""
        _check_path(path, "patch")
        return self.route(path, ("PATCH",))

    def delete(self, path: str) -> Callable[[F], F]:
        """Register a `DELETE` handler."""
        _check_path(path, "delete")
        return self.route(path, ("DELETE",))

    def head(self, path: str) -> Callable[[F], F]:
        """Register a `HEAD` handler."""
        _check_path(path, "head")
        return self.route(path, ("HEAD",))

    def options(self, path: str) -> Callable[[F], F]:
        """Register an `OPTIONS` handler."""
        _check_path(path, "options")
        return self.route(path, ("OPTIONS",))

    def websocket(
        self,
        path: str,
        *,
        subprotocols: Sequence[str] = (),
        guard: Guard | Sequence[Guard] | None = None,
        allowed_origins: Sequence[str] | None = None,
        runner: str | None = None,
    ) -> Callable[[F], F]:
        """Register a WebSocket handler for `path`.

        The handler is `def h(ws)` or `def h(ws, request)` (run by the route's runner: a
        worker thread, where it may block, or a greenlet on the event loop), or the same
        as `async def` (it runs on the event loop and awaits the `AsyncWebSocket`
        methods). The connection is accepted before it is called.

        Args:
            path: A route path; `{name}` and typed `{name:int}` parameters land in
                `request.params`.
            subprotocols: Subprotocols this route speaks; the first one the client offers
                (in the client's order) is chosen and sent in the accept.
            guard: A callable, or several, run with the request before acceptance. Raise
                `HTTPException(status, detail)` or return `False` to refuse the connection.
            allowed_origins: The web origins that may connect to this route, in place of
                the app's `allowed_origins` (see `App`); others get 403 before any guard.
            runner: `"thread"` or `"greenlet"` for this route's plain `def` handler, in
                place of the app's `websocket_runner` (see `cello.runners`).
        """
        _check_path(path, "websocket")
        if guard is None:
            guards: tuple[Guard, ...] = ()
        elif callable(guard):
            guards = (guard,)
        else:
            guards = tuple(guard)
        origins = OriginPolicy.of(allowed_origins)  # a bad entry fails here, not on a request
        check_runner(runner)

        def register(handler: F) -> F:
            _check_websocket_handler(handler)
            self._add_websocket(path, handler, subprotocols, guards, origins, runner)
            return handler

        return register

    def register_blueprint(self, blueprint: Blueprint, prefix: str = "") -> None:
        """Add every route of `blueprint` here, under its prefix (and `prefix` before it).

        A blueprint's `/` route answers at its prefix with and without the final slash:
        `Blueprint("/users")`'s `@get("/")` serves `/users` and `/users/`.
        """
        for replay in blueprint.recorded:
            replay(self, prefix + blueprint.prefix)


class Blueprint(Routes):
    """A group of routes under a common path prefix, registered on an app in one call.

    api = Blueprint("/api")

    @api.get("/users/{id:int}")
    def user(request): ...

    app.register_blueprint(api)   # serves /api/users/{id:int}
    """

    def __init__(self, prefix: str = "", name: str | None = None) -> None:
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError(
                f"A blueprint prefix starts with '/' and does not end with it: {prefix!r}"
            )
        self.prefix = prefix
        #: A label for the group (as in Cello); cello does not route by it.
        self.name = name if name is not None else prefix.strip("/")
        self.recorded: list[Callable[[Routes, str], None]] = []

    def _add_http(self, path: str, methods: Sequence[str], handler: Callable[..., Any]) -> None:
        def replay(target: Routes, prefix: str) -> None:
            for full in _joined(prefix, path):
                target._add_http(full, methods, handler)

        self.recorded.append(replay)

    def _add_websocket(
        self,
        path: str,
        handler: Callable[..., Any],
        subprotocols: Sequence[str],
        guards: tuple[Guard, ...],
        origins: OriginPolicy | None = None,
        runner: str | None = None,
    ) -> None:
        def replay(target: Routes, prefix: str) -> None:
            for full in _joined(prefix, path):
                target._add_websocket(full, handler, subprotocols, guards, origins, runner)

        self.recorded.append(replay)

    def register_blueprint(self, blueprint: Blueprint, prefix: str = "") -> None:
        """Nest `blueprint` here: its routes join this one's, under both prefixes."""
        self.recorded.append(
            lambda target, outer: Routes.register_blueprint(target, blueprint, outer + prefix)
        )

    #: Cello's name for nesting a blueprint.
    register = register_blueprint

    def get_all_routes(self) -> list[tuple[str, str]]:
        """`(path, method)` for every route this blueprint (and those nested in it) would
        add to an app, in order; a WebSocket route's method is `"WEBSOCKET"`."""
        collector = _RouteList()
        Routes.register_blueprint(collector, self)
        return collector.routes


class _RouteList(Routes):
    """Where `get_all_routes` replays a blueprint: it lists the routes, registers nothing."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, str]] = []

    def _add_http(self, path: str, methods: Sequence[str], handler: Callable[..., Any]) -> None:
        self.routes.extend((path, method) for method in methods)

    def _add_websocket(
        self,
        path: str,
        handler: Callable[..., Any],
        subprotocols: Sequence[str],
        guards: tuple[Guard, ...],
        origins: OriginPolicy | None = None,
        runner: str | None = None,
    ) -> None:
        self.routes.append((path, "WEBSOCKET"))


def _joined(prefix: str, path: str) -> tuple[str, ...]:
    """The paths a blueprint route registers: its root `/` under a prefix is the prefix
    itself (as Cello's nested blueprints write `/api/v1/users`) and the prefix with `/`."""
    if prefix and path == "/":
        return (prefix, prefix + "/")
    return (prefix + path,)


def _check_path(path: object, decorator: str) -> None:
    """Refuse a decorator used bare (`@app.websocket` above a function): it would register
    nothing, silently, and the function would be replaced by the decorator's inner one."""
    if callable(path):
        name = getattr(path, "__name__", "the handler")
        raise TypeError(
            f"@{decorator} needs the route's path, with parentheses: "
            f'@app.{decorator}("/path") above def {name}(...)'
        )
    if not isinstance(path, str):
        raise TypeError(f"a route's path is a str like '/ws', not {path!r}")


_WS_NAMES = frozenset({"ws", "websocket", "socket", "conn", "connection"})
_REQUEST_NAMES = frozenset({"request", "req", "scope"})


def _check_websocket_handler(handler: Callable[..., Any]) -> None:
    """Refuse `def h(request, ws)`: cello passes the WebSocket first, so each argument would
    be the other object and the first `ws.recv()` would fail inside the handler."""
    try:
        params = list(inspect.signature(handler).parameters)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check
        return
    if len(params) == 2 and params[0] in _REQUEST_NAMES and params[1] in _WS_NAMES:
        raise TypeError(
            f"WebSocket handler {handler.__qualname__} takes ({params[0]}, {params[1]}); "
            f"cello passes the WebSocket first: def {handler.__name__}"
            f"({params[1]}, {params[0]})"
        )
