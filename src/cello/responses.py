"""`Response` and the conversion of handler return values into responses.

The response classes are Starlette's (they already render bodies, headers and cookies and
are ASGI callables); `Response` adds the factory names cello users know from the Cello
framework: `Response.json(...)`, `.text`, `.html`, `.binary`, `.redirect`, `.file`,
`.no_content`, `.sse`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.to_thread
from starlette import responses as starlette_responses
from starlette.staticfiles import StaticFiles

__all__ = ["Response", "to_response"]

Headers = Mapping[str, str] | None


class Response(starlette_responses.Response):
    """An HTTP response: Starlette's `Response`, with Cello's factory methods.

    `Response(content, status_code=200, headers=None, media_type=None)` builds one
    directly; `response.headers[...]` and `response.set_cookie(...)` adjust any response
    a factory returns.
    """

    @classmethod
    def json(
        cls, data: Any, status: int = 200, headers: Headers = None
    ) -> starlette_responses.Response:
        """`data` serialized as JSON (`application/json`)."""
        return starlette_responses.JSONResponse(data, status_code=status, headers=headers)

    @classmethod
    def text(
        cls, text: str, status: int = 200, headers: Headers = None
    ) -> starlette_responses.Response:
        """Plain text (`text/plain; charset=utf-8`)."""
        return starlette_responses.PlainTextResponse(text, status_code=status, headers=headers)

    @classmethod
    def html(
        cls, html: str, status: int = 200, headers: Headers = None
    ) -> starlette_responses.Response:
        """An HTML page (`text/html; charset=utf-8`)."""
        return starlette_responses.HTMLResponse(html, status_code=status, headers=headers)

    @classmethod
    def binary(
        cls,
        data: bytes,
        status: int = 200,
        headers: Headers = None,
        content_type: str = "application/octet-stream",
    ) -> starlette_responses.Response:
        """Raw bytes with the given content type."""
        return starlette_responses.Response(
            bytes(data), status_code=status, headers=headers, media_type=content_type
        )

    @classmethod
    def redirect(
        cls, url: str, permanent: bool = False, headers: Headers = None
    ) -> starlette_responses.Response:
        """A redirect: 301 when `permanent`, else 302."""
        return starlette_responses.RedirectResponse(
            url, status_code=301 if permanent else 302, headers=headers
        )

    @classmethod
    def file(
        cls,
        path: str | os.PathLike[str],
        filename: str | None = None,
        headers: Headers = None,
        content_type: str | None = None,
        *,
        directory: str | os.PathLike[str] | None = None,
    ) -> starlette_responses.Response:
        """A file from disk, streamed; with `filename`, offered as a download by that name.

        Without `directory`, `path` is a path the application chose itself; never build it
        from the request. With `directory`, `path` may come from the client (a path
        parameter): it names a file inside `directory`, and anything that does not resolve
        to a regular file there (`..`, an absolute path, a backslash, a NUL byte, a symlink
        leading out of `directory`, a directory, a missing file) is answered with 404.

        The file is looked up when the response is sent; a missing one gets a 404 then.
        """
        if directory is None:
            return _FileResponse(path, filename=filename, headers=headers, media_type=content_type)
        return _DirectoryFileResponse(
            directory, path, filename=filename, headers=headers, media_type=content_type
        )

    @classmethod
    def no_content(cls, headers: Headers = None) -> starlette_responses.Response:
        """204 No Content."""
        return starlette_responses.Response(status_code=204, headers=headers)

    @classmethod
    def sse(cls, source: Any, **options: Any) -> starlette_responses.Response:
        """A Server-Sent Events response; see `cello.sse.sse_response`."""
        from .sse import sse_response

        return sse_response(source, **options)


def _not_found() -> starlette_responses.Response:
    return starlette_responses.JSONResponse({"detail": "Not Found"}, status_code=404)


class _FileResponse(starlette_responses.FileResponse):
    """Starlette's file response, answering 404 (not a 500) when the file is missing."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not await anyio.Path(self.path).is_file():
            await _not_found()(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class _DirectoryFileResponse(starlette_responses.FileResponse):
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


def to_response(value: Any) -> starlette_responses.Response:
    """What a handler returned, as a response.

    `dict`/`list` → JSON; `str` → text; `bytes` → binary; `None` → 204; a response → itself.

    Raises:
        TypeError: any other value (the request then gets a 500 and the error is logged).
    """
    if isinstance(value, starlette_responses.Response):
        return value
    if isinstance(value, dict | list):
        return starlette_responses.JSONResponse(value)
    if isinstance(value, str):
        return starlette_responses.PlainTextResponse(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return starlette_responses.Response(bytes(value), media_type="application/octet-stream")
    if value is None:
        return starlette_responses.Response(status_code=204)
    raise TypeError(
        f"a handler returned {type(value).__name__}; return a dict, list, str, bytes, None "
        "or a Response"
    )
