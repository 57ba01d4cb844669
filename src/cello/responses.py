"""`Response` and the conversion of handler return values into responses.

The response classes are Starlette's (they already render bodies, headers and cookies and
are ASGI callables); `Response` adds the factory names cello users know from the Cello
framework: `Response.json(...)`, `.text`, `.html`, `.binary`, `.redirect`, `.file`,
`.no_content`, `.sse`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import anyio
from starlette import responses as starlette_responses

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
    ) -> starlette_responses.Response:
        """A file from disk, streamed; with `filename`, offered as a download by that name.

        A missing file is answered with 404 when the response is sent.
        """
        return _FileResponse(path, filename=filename, headers=headers, media_type=content_type)

    @classmethod
    def no_content(cls, headers: Headers = None) -> starlette_responses.Response:
        """204 No Content."""
        return starlette_responses.Response(status_code=204, headers=headers)

    @classmethod
    def sse(cls, source: Any, **options: Any) -> starlette_responses.Response:
        """A Server-Sent Events response; see `cello.sse.sse_response`."""
        from .sse import sse_response

        return sse_response(source, **options)


class _FileResponse(starlette_responses.FileResponse):
    """Starlette's file response, answering 404 (not a 500) when the file is missing."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not await anyio.Path(self.path).is_file():
            missing = starlette_responses.JSONResponse({"detail": "Not Found"}, status_code=404)
            await missing(scope, receive, send)
            return
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
