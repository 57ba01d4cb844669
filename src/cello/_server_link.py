"""`ServerLink`: what a connection may use of its server beyond ASGI, when the server offers it.

Through ASGI alone, every message a client sends is an event the server queues and the
app's `receive` awaits (a task step and a future per message; uvicorn also pauses and
resumes reading the socket around each one), and every message out is an `await send`.
cello's own uvicorn backend (`cello.serving.WebSocketProtocol`) offers each connection a
link in the scope's extensions (`"cello.direct"`): the connection hands the server a
callback that takes the client's events as they are parsed, decides itself when reading
pauses (its buffers are bounded), and writes a message synchronously when the server could
send it at once. The same bytes go out in the same order; only the hops between them go.

The link is used only when the app got the server's own `receive` and `send` (`serves`):
a middleware that wraps them (to watch or change events) must see every event, so then
the connection speaks plain ASGI, as it does on every other server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

from starlette.types import Message, Receive, Scope, Send

#: The scope extension under which the server offers the link: `{"link": ServerLink}`.
EXTENSION: Final = "cello.direct"


class ServerLink(Protocol):
    """One WebSocket connection's side door into the server; every method runs on the loop."""

    def serves(self, receive: Receive, send: Send) -> bool:
        """Whether `receive` and `send` are the server's own for this connection."""
        ...

    def attach(self, consumer: Callable[[Message], None]) -> None:
        """From now on, pass each event the app would `receive` to `consumer` (the ones
        already waiting first, in order), and stop pausing reading on each message:
        the consumer calls `pause_reading` when it holds enough."""
        ...

    def detach(self) -> None:
        """Events go back to the server's queue for `receive`."""
        ...

    def pause_reading(self) -> None:
        """Stop reading the socket (the client's sends then wait in TCP)."""
        ...

    def resume_reading(self) -> None:
        """Read the socket again."""
        ...

    def can_send(self) -> bool:
        """Whether the server can write a message now without waiting: the connection is
        open and the socket's buffer below its limit. When it cannot, send with the ASGI
        `send`, which waits, or raises, as the case needs."""
        ...

    def send_now(self, event: Message) -> None:
        """Write a `websocket.send` event, right after `can_send` said it can (on the
        loop, with nothing in between)."""
        ...

    def send_if_ready(self, event: Message) -> bool:
        """`send_now` if `can_send`, in one call (a send's hot path); whether it wrote."""
        ...


def find_link(scope: Scope, receive: Receive, send: Send) -> ServerLink | None:
    """The connection's link, if its server offers one and the app got its own `receive`
    and `send` (no middleware between them); else `None`."""
    offered: Any = (scope.get("extensions") or {}).get(EXTENSION)
    if not offered:
        return None
    link: ServerLink | None = offered.get("link")
    if link is None or not link.serves(receive, send):
        return None
    return link
