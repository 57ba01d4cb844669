"""Exceptions a cello application sees or raises."""

from __future__ import annotations

from starlette.exceptions import HTTPException

__all__ = ["ConcurrencyError", "ConnectionClosed", "HTTPException"]


class ConnectionClosed(ConnectionError):
    """The WebSocket connection is closed: raised by a send on a closed connection.

    Attributes:
        code: The close code (1000 normal, 1001 going away, 1006 lost, ...).
        reason: The close reason, possibly empty.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(
            f"WebSocket connection closed (code {code}{', ' + reason if reason else ''})"
        )


class ConcurrencyError(RuntimeError):
    """Two threads used a connection in a way that must not overlap (both in `recv()`)."""
