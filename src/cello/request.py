"""`Request`: what a handler knows about the connection that reached it.

Built on Starlette's `HTTPConnection`, which already parses headers, query string,
cookies and client address from the ASGI scope; cello adds the names its users know
(`params`, `query`, `path`) and plain (not awaitable) body accessors: the body is read,
within the app's size limit, before the handler runs, so a sync handler in its thread
and an async one on the loop read it the same way.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import FormData, QueryParams, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import Scope

from .routing import get_route_path


class Request(HTTPConnection):
    """The HTTP request, or the WebSocket upgrade request, that reached a handler.

    Attributes:
        params: Path parameters, converted by their type (`{id:int}` gives an `int`).
    """

    def __init__(self, scope: Scope, params: dict[str, Any] | None = None, body: bytes = b""):
        super().__init__(scope)
        self.params: dict[str, Any] = params if params is not None else {}
        self._body = body
        self._json: Any = _UNPARSED

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

    @property
    def content_type(self) -> str:
        """The media type of the body, without parameters (`application/json`)."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def body(self) -> bytes:
        """The request body."""
        return self._body

    def text(self) -> str:
        """The body decoded as text (the charset of `Content-Type`, else UTF-8).

        Raises:
            HTTPException: 400 when the body is not valid in that charset.
        """
        charset = "utf-8"
        for part in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self._body.decode(charset)
        except (UnicodeDecodeError, LookupError) as exc:
            raise HTTPException(400, f"The request body is not valid {charset} text") from exc

    def is_json(self) -> bool:
        """Whether the body is declared as JSON (`application/json` or `+json`)."""
        kind = self.content_type
        return kind == "application/json" or kind.endswith("+json")

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            HTTPException: 400 with the parser's message when the body is not valid JSON.
        """
        if self._json is _UNPARSED:
            try:
                self._json = json.loads(self._body)
            except ValueError as exc:
                raise HTTPException(400, f"Malformed JSON in the request body: {exc}") from exc
            except RecursionError:
                # Valid JSON nested deeper than the parser recurses: refused like malformed.
                raise HTTPException(
                    400, "The JSON in the request body is nested too deeply"
                ) from None
        return self._json

    def form(self) -> FormData:
        """The body parsed as an HTML form (`application/x-www-form-urlencoded`).

        Raises:
            HTTPException: 415 for other content types (multipart is not supported yet).
        """
        if self.content_type not in ("application/x-www-form-urlencoded", ""):
            raise HTTPException(415, f"Cannot read a form from {self.content_type}")
        fields: list[tuple[str, str | UploadFile]] = []
        fields.extend(parse_qsl(self.text(), keep_blank_values=True))
        return FormData(fields)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path!r} params={self.params!r}>"


_UNPARSED: Any = object()
