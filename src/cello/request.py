"""`Request`: what a handler knows about the connection that reached it.

Built on Starlette's `HTTPConnection`, which already parses headers, query string,
cookies and client address from the ASGI scope; cello adds the names its users know
from the Cello framework (`params`, `query`, `path`, `get_header`, `client_ip`, `context`...)
and plain (not awaitable) body accessors: the body is read, within the app's size limit,
before the handler runs, so a sync handler in its thread and an async one on the loop read
it the same way.

Where Cello's pages use a name two ways, both work: `request.content_type` is a string
that can also be called, and `request.url` is a string that also has Starlette's URL
attributes (`.path`, `.query`, `.hostname`...).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import URL, QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import Scope

from .routing import get_route_path

__all__ = ["ContentType", "Form", "Query", "Request", "RequestURL"]

#: The scope key holding `request.context`, so ASGI middleware can fill it before the handler.
CONTEXT_KEY = "cello.context"

FORM_TYPE = "application/x-www-form-urlencoded"
MULTIPART_TYPE = "multipart/form-data"


class ContentType(str):
    """The body's media type, a `str` that also answers when called.

    Cello's pages read it both as a property (`request.content_type == "..."`) and as a
    method (`request.content_type()`); a string whose call returns itself serves both.
    """

    __slots__ = ()

    def __call__(self) -> ContentType:
        return self


class RequestURL(str, URL):
    """The request's full URL: a `str` (`{"url": request.url}` serializes as JSON) that is
    also a Starlette `URL` (`.path`, `.query`, `.hostname`, `.port`, `.scheme`, `.netloc`,
    `.include_query_params(...)` work as in Starlette).

    `replace` is both: with positional arguments it is `str.replace`, with keywords
    Starlette's `URL.replace(path=..., query=...)`.
    """

    def __new__(cls, url: str) -> RequestURL:
        return super().__new__(cls, url)

    def __init__(self, url: str) -> None:
        URL.__init__(self, url)

    def replace(self, *args: Any, **components: Any) -> Any:
        if args:
            return str.replace(self, *args)
        return URL.replace(self, **components)


class Query(QueryParams):
    """The query string: Starlette's `QueryParams`, plus Cello's `get_all(name)`.

    A repeated key gives its last value with `[name]`/`get(name)`, as in Starlette.
    """

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`, in order (`[]` when absent); the same as `getlist`."""
        return self.getlist(name)


class Form(dict[str, str]):
    """A form's fields: a plain `dict` of each name's last value (as Starlette's `FormData`
    and `request.query` give), so `form.get("x", "")`,
    `form["x"]` and returning `{"data": form}` from a handler (JSON) all work.

    `getlist(name)` (alias `get_all`) gives every value of a repeated name.
    """

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__()
        self._fields = list(fields)
        for name, value in self._fields:
            self[name] = value

    def getlist(self, name: str) -> list[str]:
        """Every value of `name`, in order (`[]` when absent)."""
        return [value for key, value in self._fields if key == name]

    def get_all(self, name: str) -> list[str]:
        """Cello's spelling of `getlist`."""
        return self.getlist(name)

    def multi_items(self) -> list[tuple[str, str]]:
        """Every `(name, value)` pair, in order, repeated names included."""
        return list(self._fields)


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
        self._form: Form | None = None
        self._request_url: RequestURL | None = None
        self._query: Query | None = None

    # ------------------------------------------------------------- the request line

    @property
    def path(self) -> str:
        """The path the route matched, below any mount prefix (`root_path`)."""
        return get_route_path(self.scope) or "/"

    @property
    def method(self) -> str:
        """The HTTP method (`GET` for a WebSocket upgrade)."""
        method: str = self.scope.get("method", "GET")
        return method

    @property
    def url(self) -> RequestURL:
        """The full URL, `scheme://host/path?query`, as a string with URL attributes."""
        if self._request_url is None:
            self._request_url = RequestURL(str(URL(scope=self.scope)))
        return self._request_url

    @property
    def scheme(self) -> str:
        """`http` or `https` (`ws` or `wss` for a WebSocket upgrade), as the server saw it."""
        scheme: str = self.scope.get("scheme", "http")
        return scheme

    @property
    def host(self) -> str:
        """The `Host` header as sent (`example.com:8000`), or `""` when there is none."""
        return self.headers.get("host", "")

    @property
    def client_ip(self) -> str:
        """The client's address, or `""` when the server does not know it.

        A string either way, so it can be logged or compared without a `None` check.
        Behind a proxy it is the proxy's, unless the server trusts its forwarding headers
        (uvicorn's `--forwarded-allow-ips`).
        """
        client = self.client
        return client.host if client is not None else ""

    @property
    def query_params(self) -> Query:
        """The query-string parameters (`request.query_params["page"]`, `.get_all(...)`)."""
        if self._query is None:
            self._query = Query(self.scope.get("query_string", b""))
        return self._query

    @property
    def query(self) -> Query:
        """The query-string parameters; the same object as `query_params`."""
        return self.query_params

    def get_query_param(self, name: str, default: str | None = None) -> str | None:
        """The last value of query parameter `name`, or `default` when it is absent."""
        return self.query_params.get(name, default)

    # ------------------------------------------------------------------ headers

    def get_header(self, name: str, default: str | None = None) -> str | None:
        """Header `name` (any case), or `default` when the request has none."""
        return self.headers.get(name, default)

    @property
    def content_type(self) -> ContentType:
        """The body's media type, lowercased and without parameters (`application/json`,
        not `application/JSON; charset=utf-8`), or `""` when not declared.

        Without the parameters, a comparison holds whatever charset the client sends; the
        whole header is `request.get_header("content-type")`. Readable as
        `request.content_type` and, as on Cello's pages, `request.content_type()`.
        """
        header = self.headers.get("content-type", "")
        return ContentType(header.split(";")[0].strip().lower())

    @property
    def content_length(self) -> int | None:
        """The `Content-Length` header as an int; `None` when absent or not a number."""
        value = self.headers.get("content-length", "").strip()
        if not value or not value.isascii() or not value.isdigit():
            return None
        return int(value)

    @property
    def context(self) -> dict[str, Any]:
        """A dict for this request's own data (what middleware found out, for instance).

        It lives in the ASGI scope under `"cello.context"`, so ASGI middleware can fill it
        before the handler runs; each request (and each WebSocket connection) has its own.
        """
        context: dict[str, Any] = self.scope.setdefault(CONTEXT_KEY, {})
        return context

    def is_json(self) -> bool:
        """Whether the body is declared as JSON (`application/json` or `+json`)."""
        kind = self.content_type
        return kind == "application/json" or kind.endswith("+json")

    def is_form(self) -> bool:
        """Whether the body is declared as a URL-encoded form (what `form()` reads)."""
        return self.content_type == FORM_TYPE

    def is_multipart(self) -> bool:
        """Whether the body is declared as `multipart/form-data` (file uploads)."""
        return self.content_type == MULTIPART_TYPE

    # --------------------------------------------------------------------- body

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

    def form(self) -> Form:
        """The body parsed as an HTML form (`application/x-www-form-urlencoded`).

        A `dict` of each field's last value; `getlist(name)` gives all of a repeated one.

        Raises:
            HTTPException: 415 for other content types (multipart is not supported yet).
        """
        if self._form is None:
            kind = self.content_type
            if kind == MULTIPART_TYPE:
                raise HTTPException(
                    415, "multipart/form-data is not supported yet; read request.body()"
                )
            if kind not in (FORM_TYPE, ""):
                raise HTTPException(415, f"Cannot read a form from {kind}")
            self._form = Form(parse_qsl(self.text(), keep_blank_values=True))
        return self._form

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path!r} params={self.params!r}>"


_UNPARSED: Any = object()
