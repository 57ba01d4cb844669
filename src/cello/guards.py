"""Guards: code that looks at a WebSocket upgrade request before the connection is accepted.

A route takes guards with `@app.websocket(path, guard=...)`. Each is called with the
`Request`; it refuses the connection by raising `HTTPException(status, detail)` (the client
gets that HTTP status, 401 for a missing token say) or by returning `False` (403); anything
else lets the next guard run, then the handler. A guard may be a plain function or an
`async def` one; a guard that raises anything else refuses with 500 and is logged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .request import Request

__all__ = ["Guard"]

#: A guard looks at the upgrade request before acceptance. It refuses the connection by
#: raising `HTTPException(status, detail)` or returning `False`; anything else accepts.
Guard = Callable[[Request], Any]
