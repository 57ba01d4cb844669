"""The browser client: `cello.js`, served by the app, and `ack` for the requests it makes.

`app.enable_client()` serves the client at `/cello.js` (a dependency-free ES module, also
fit for a bundler: `cello.client_script()` gives its text). It connects to a WebSocket
route, speaks JSON, reconnects with backoff and jitter, resumes from the last id the
hub gave (`join(..., resumable=True, since=request.query.get("since"))`), and makes
requests that the handler answers with `ws.send_json(ack(message, data))`; see
docs/browser-client.md.

The requests' wire format, JSON text both ways: the client sends
`{"type": ..., "data": ..., "ack": n}`; the answer is `{"ack": n, "data": ...}` or
`{"ack": n, "error": "..."}`.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

__all__ = ["ack", "client_script"]


def client_script() -> str:
    """The text of `cello.js`."""
    return resources.files("cello").joinpath("static", "cello.js").read_text("utf-8")


def ack(message: Any, data: Any = None, *, error: str | None = None) -> dict[str, Any]:
    """The answer to a request from the browser client: `ws.send_json(ack(message, data))`.

    `message` is the request as received (a dict with an `ack` number); `error` (a
    message for the page) makes the client's `request()` reject instead of resolve.

    Raises:
        ValueError: `message` is not a request (no `ack` number): nobody waits for an
            answer to it.
    """
    number = message.get("ack") if isinstance(message, dict) else None
    if not isinstance(number, int) or isinstance(number, bool):
        raise ValueError("not a request from the browser client: it has no `ack` number")
    if error is not None:
        return {"ack": number, "error": str(error)}
    return {"ack": number, "data": data}
