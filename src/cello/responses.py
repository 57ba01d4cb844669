"""`Response` and the conversion of handler return values into responses.

The rendering is Starlette's (its response classes already render bodies, headers and
cookies and are ASGI callables); `Response` adds the names cello users know from the Cello
framework: the factories `Response.json(...)`, `.text`, `.html`, `.xml`, `.binary`,
`.created`, `.redirect`, `.file`, `.sendfile`, `.no_content`, `.sse`, and `set_header` and
`status` to change a response after it is made.

Every factory returns a `Response`: each kind is a small class that puts `Response` in
front of the Starlette class that renders it (`class _JSON(Response, JSONResponse)`), so
`isinstance(Response.json({}), Response)` holds and the rendering stays Starlette's.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import anyio
import anyio.to_thread
from starlette import responses as starlette_responses
from starlette.staticfiles import StaticFiles

from .sse import SseEvent, SseResponse, SseStream

__all__ = ["Response", "to_response"]

Headers = Mapping[str, str] | None

#: The statuses that send the client to `Location`, and those of them that are permanent.
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
PERMANENT_STATUSES = (301, 308)


class Response(starlette_responses.Response):
    """An HTTP response: Starlette's `Response`, with Cello's factories and setters.

    `Response(content, status_code=200, headers=None, media_type=None)` builds one
    directly. Any response can be changed until it is returned: `set_header(name, value)`,
    `status = 404`, `set_cookie(...)`, `headers[...]`.
    """

    @property
    def status(self) -> int:
        """The HTTP status; the same as `status_code`."""
        return self.status_code

    @status.setter
    def status(self, value: int) -> None:
        self.status_code = value

    def set_header(self, name: str, value: str) -> None:
        """Set header `name`, replacing any value it had.

        Raises:
            ValueError: a line break or NUL in `name` or `value`, which would end the
                header early (response splitting) or be refused by the server.
        """
        for part in (name, value):
            if _HEADER_BREAK.search(part):
                raise ValueError(f"a response header cannot contain CR, LF or NUL: {part!r}")
        self.headers[name] = value

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: Headers = None) -> Response:
        """`data` serialized as JSON (`application/json`)."""
        return _JSON(data, status_code=status, headers=headers)

    @classmethod
    def text(cls, text: str, status: int = 200, headers: Headers = None) -> Response:
        """Plain text (`text/plain; charset=utf-8`)."""
        return _Text(text, status_code=status, headers=headers)

    @classmethod
    def html(cls, html: str, status: int = 200, headers: Headers = None) -> Response:
        """An HTML page (`text/html; charset=utf-8`)."""
        return _HTML(html, status_code=status, headers=headers)

    @classmethod
    def xml(
        cls, data: Any, status: int = 200, root_name: str = "root", headers: Headers = None
    ) -> Response:
        """An XML document (`application/xml`).

        A `str` (or `bytes`) is sent as it is. Anything else becomes elements inside
        `<root_name>`: a dict's keys name child elements, a nested dict nests, a list
        repeats its key's element once per item (a list at the top, or inside a list,
        gives `<item>` elements), `None` an empty element, `True`/`False` `true`/`false`,
        other scalars their `str()`. Text is escaped (`&`, `<`, `>`, `"`, CR).

        `status` comes second, as in every other factory.

        Raises:
            ValueError: a key or `root_name` that is not an XML element name (`"1st"`,
                `"a b"`, `"x:y"`), or text with a character XML 1.0 cannot carry (NUL and
                most control characters).
            TypeError: a value of another type (a set, an object).
        """
        if isinstance(data, str | bytes):
            body = data
        else:
            if isinstance(data, list | tuple):  # one root element, holding the items
                data = {"item": data}
            body = '<?xml version="1.0" encoding="utf-8"?>\n' + _xml_element(root_name, data)
        return _XML(body, status_code=status, headers=headers)

    @classmethod
    def binary(
        cls,
        data: bytes,
        status: int = 200,
        headers: Headers = None,
        content_type: str = "application/octet-stream",
    ) -> Response:
        """Raw bytes with the given content type.

        Raises:
            TypeError: a `str` as `status`: the content type goes by name,
                `Response.binary(data, content_type="image/png")`.
        """
        if isinstance(status, str):
            raise TypeError(
                f"status is an int; pass the content type by name: content_type={status!r}"
            )
        return Response(bytes(data), status_code=status, headers=headers, media_type=content_type)

    @classmethod
    def created(
        cls, data: Any = None, location: str | None = None, headers: Headers = None
    ) -> Response:
        """201 Created: `data` as JSON (an empty body when `None`), with `Location` when
        `location` is given."""
        response = (
            Response(status_code=201, headers=headers)
            if data is None
            else _JSON(data, status_code=201, headers=headers)
        )
        if location is not None:
            response.set_header("location", location)
        return response

    @classmethod
    def redirect(
        cls,
        url: str,
        status: int | None = None,
        permanent: bool = False,
        headers: Headers = None,
    ) -> Response:
        """A redirect to `url`: 302, or 301 when `permanent`, or the `status` given.

        `status` may be 301, 302, 303, 307 or 308 (307 and 308 keep the method and body).
        A bool in second place is taken as `permanent`, as in Cello's
        `Response.redirect(url, True)`.

        Raises:
            ValueError: a `status` that is not a redirect, or one that contradicts
                `permanent=True`.
        """
        if isinstance(status, bool):
            permanent = status
            status = None
        if status is None:
            status = 301 if permanent else 302
        elif status not in REDIRECT_STATUSES:
            raise ValueError(
                f"a redirect status is one of {', '.join(map(str, REDIRECT_STATUSES))}, "
                f"not {status!r}"
            )
        elif permanent and status not in PERMANENT_STATUSES:
            raise ValueError(f"permanent=True asks for 301 or 308, but status={status}")
        return _Redirect(url, status_code=status, headers=headers)

    @classmethod
    def file(
        cls,
        path: str | os.PathLike[str],
        filename: str | None = None,
        headers: Headers = None,
        content_type: str | None = None,
        *,
        directory: str | os.PathLike[str] | None = None,
    ) -> Response:
        """A file from disk, streamed, offered as a download.

        Without `directory`, `path` is a path the application chose itself; never build it
        from the request. The download is named `filename`, else the file's own name
        (`Content-Disposition: attachment`); to show a file inline, use `sendfile`.

        With `directory`, `path` may come from the client (a path parameter): it names a
        file inside `directory`, and anything that does not resolve to a regular file there
        (`..`, an absolute path, a backslash, a NUL byte, a symlink leading out of
        `directory`, a directory, a missing file) is answered with 404. That file is shown
        inline, unless `filename` is given.

        The file is looked up when the response is sent; a missing one gets a 404 then.
        """
        if directory is None:
            name = Path(path).name if filename is None else filename
            return _FileResponse(path, filename=name, headers=headers, media_type=content_type)
        return _DirectoryFileResponse(
            directory, path, filename=filename, headers=headers, media_type=content_type
        )

    @classmethod
    def sendfile(
        cls,
        path: str | os.PathLike[str],
        content_type: str | None = None,
        headers: Headers = None,
    ) -> Response:
        """A file the application chose, streamed and shown inline (no
        `Content-Disposition`): an image, a video, a page. A missing file gets a 404.

        As with `file`, never build `path` from the request; `Range` requests are answered.
        """
        return _FileResponse(path, headers=headers, media_type=content_type)

    @classmethod
    def no_content(cls, headers: Headers = None) -> Response:
        """204 No Content."""
        return Response(status_code=204, headers=headers)

    @classmethod
    def sse(
        cls,
        source: SseStream | Iterable[Any] | AsyncIterator[Any],
        *,
        keepalive: float = 15.0,
        headers: Headers = None,
        status: int = 200,
    ) -> Response:
        """A Server-Sent Events response; see `cello.sse.sse_response`."""
        return _Sse(source, keepalive=keepalive, headers=headers, status=status)


_HEADER_BREAK = re.compile(r"[\r\n\0]")


class _JSON(Response, starlette_responses.JSONResponse):
    """JSON as Starlette renders it, plus the request's own mappings: `request.headers`,
    `request.query`, `request.cookies` (which Cello's docs treat as dicts) become objects,
    so `{"headers": request.headers}` is an answer, not a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content,
            ensure_ascii=False,
            allow_nan=False,
            indent=None,
            separators=(",", ":"),
            default=_mapping_as_dict,
        ).encode("utf-8")


def _mapping_as_dict(value: Any) -> Any:
    """`json.dumps`' fallback: a read-only mapping (Starlette's `Headers`, `QueryParams`)
    as a dict; a name given more than once gets the value `mapping[name]` gives."""
    if isinstance(value, Mapping):
        return {str(key): value[key] for key in value}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class _Text(Response, starlette_responses.PlainTextResponse):
    pass


class _HTML(Response, starlette_responses.HTMLResponse):
    pass


class _XML(Response):
    media_type = "application/xml"


class _Redirect(Response, starlette_responses.RedirectResponse):
    pass


class _Sse(Response, SseResponse):
    """An SSE response that is a cello `Response` (and still an `SseResponse`, which is
    how the app's HTTP serving finds the streams to end at shutdown)."""


# ------------------------------------------------------------------------ XML

#: XML 1.0 element names without a namespace prefix (NCName): letters, `_`, then also
#: digits, `-`, `.` and combining marks.
_NAME_START = (
    "A-Z_a-z\xc0-\xd6\xd8-\xf6\xf8-\u02ff\u0370-\u037d\u037f-\u1fff\u200c-\u200d"
    "\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd\U00010000-\U000effff"
)
_XML_NAME = re.compile(f"[{_NAME_START}][{_NAME_START}\\-.0-9\xb7\u0300-\u036f\u203f-\u2040]*")
#: Characters XML 1.0 cannot carry at all, escaped or not.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ESCAPES = {'"': "&quot;", "\r": "&#13;"}


def _xml_element(name: Any, value: Any) -> str:
    """`value` as the element `name` (a list gives one element per item)."""
    if not isinstance(name, str) or not _XML_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not an XML element name (start with a letter or _, then letters, "
            "digits, -, _ or .; no spaces or colons)"
        )
    if isinstance(value, list | tuple):
        return "".join(
            _xml_element(name, {"item": item} if isinstance(item, list | tuple) else item)
            for item in value
        )
    if value is None:
        return f"<{name}/>"
    if isinstance(value, dict):
        return f"<{name}>{''.join(_xml_element(k, v) for k, v in value.items())}</{name}>"
    return f"<{name}>{_xml_text(value)}</{name}>"


def _xml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str | int | float):
        raise TypeError(f"cannot write {type(value).__name__} as XML; use dict, list or scalars")
    text = str(value)
    bad = _NOT_XML.search(text)
    if bad:
        raise ValueError(f"XML 1.0 cannot carry the character {bad.group()!r} (in {text!r})")
    return escape(text, _ESCAPES)


# ---------------------------------------------------------------------- files


def _not_found() -> starlette_responses.Response:
    return _JSON({"detail": "Not Found"}, status_code=404)


class _FileResponse(Response, starlette_responses.FileResponse):
    """Starlette's file response, answering 404 (not a 500) when the file is missing."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not await anyio.Path(self.path).is_file():
            await _not_found()(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class _DirectoryFileResponse(Response, starlette_responses.FileResponse):
    """A file named by the client, served only if it resolves to a regular file inside
    `directory`; 404 for anything else, whatever the reason, so that the answer does not
    tell what exists outside (or inside) the directory.

    The containment check is Starlette's `StaticFiles.lookup_path`: the joined path and
    the directory are both resolved (`os.path.realpath`, so symlinks are followed before
    comparing) and must share the directory as their common path. Before it, names no
    portable URL path needs are refused outright: a backslash (a separator on Windows), a
    NUL byte, and an absolute path.
    """

    def __init__(
        self, directory: str | os.PathLike[str], name: str | os.PathLike[str], **options: Any
    ) -> None:
        self.requested = os.fspath(name)
        self.static = StaticFiles(directory=directory, check_dir=False)
        # The content type is guessed from the name asked for; the path is set on lookup.
        super().__init__(os.path.join(directory, self.requested), **options)

    def lookup(self) -> tuple[str, os.stat_result] | None:
        name = self.requested
        if not name or "\\" in name or "\x00" in name or os.path.isabs(name):
            return None
        try:
            full_path, stat_result = self.static.lookup_path(name)
        except (OSError, ValueError):  # too long, not readable, NUL, another drive...
            return None
        if stat_result is None or not stat.S_ISREG(stat_result.st_mode):
            return None
        if not os.access(full_path, os.R_OK):  # else the open fails after the headers went
            return None
        return full_path, stat_result

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        found = await anyio.to_thread.run_sync(self.lookup)
        if found is None:
            await _not_found()(scope, receive, send)
            return
        self.path, self.stat_result = found
        self.set_stat_headers(self.stat_result)
        await super().__call__(scope, receive, send)


# ------------------------------------------------------------ return values


def to_response(value: Any) -> starlette_responses.Response:
    """What a handler returned, as a response.

    `dict`/`list` → JSON; `str` → text; `bytes` → binary; `None` → 204; an `SseStream`, an
    `SseEvent` or a non-empty list (or tuple) of `SseEvent`s → Server-Sent Events; a
    response → itself.

    Raises:
        TypeError: any other value (the request then gets a 500 and the error is logged).
    """
    if isinstance(value, starlette_responses.Response):
        return value
    if isinstance(value, SseStream):
        return Response.sse(value)
    if isinstance(value, SseEvent):
        return Response.sse(SseStream([value]))
    if isinstance(value, list | tuple) and value and all(isinstance(v, SseEvent) for v in value):
        return Response.sse(SseStream(value))
    if isinstance(value, dict | list):
        return _JSON(value)
    if isinstance(value, str):
        return _Text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return Response(bytes(value), media_type="application/octet-stream")
    if value is None:
        return Response(status_code=204)
    raise TypeError(
        f"a handler returned {type(value).__name__}; return a dict, list, str, bytes, None, "
        "SSE events or a Response"
    )
