"""`Request`: what a handler knows about the connection that reached it.

Built on Starlette's `HTTPConnection`, which already parses headers, query string,
cookies and client address from the ASGI scope; cello adds the names its users know
(`params`, `query`, `path`).
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import HTTPConnection
from starlette.types import Scope

from .routing import get_route_path


class Request(HTTPConnection):
    """The HTTP request, or the WebSocket upgrade request, that reached a handler.

    Attributes:
        params: Path parameters, converted by their type (`{id:int}` gives an `int`).
    """

    def __init__(self, scope: Scope, params: dict[str, Any] | None = None) -> None:
        super().__init__(scope)
        self.params: dict[str, Any] = params if params is not None else {}

    @property
    def path(self) -> str:
        """The path the route matched, below any mount prefix (`root_path`)."""
        return get_route_path(self.scope) or "/"

    @property
    def query(self) -> QueryParams:
        """The query-string parameters (`request.query["page"]`, `.getlist(...)`)."""
        return self.query_params

    @property
    def method(self) -> str:
        """The HTTP method (`GET` for a WebSocket upgrade)."""
        method: str = self.scope.get("method", "GET")
        return method

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path!r} params={self.params!r}>"
