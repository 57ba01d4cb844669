"""`WebSocketMessage`: one WebSocket message, as handlers receive and send it.

The shape follows the Cello documentation (`msg_type`, `text`, `data`, factories and
predicates) so that code written against it runs unchanged. A close message also carries
the close `code` and `reason`.

The close message `recv()` returns when the client leaves is a `ReceivedClose`: reading its
`.text` or `.data` logs a warning (once per place in the code), because a loop that checks
only `if msg is None` takes it for data: it would broadcast "None" to a room or pass
`None` to `json.loads` on every disconnect. The warning names the fix.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, overload

logger = logging.getLogger("cello")

MessageType = Literal["text", "binary", "ping", "pong", "close"]


class _TextField:
    """`WebSocketMessage.text` is both the factory and the attribute, as in Cello.

    On the class it returns the factory (`WebSocketMessage.text("hi")`); on a message it
    returns the message's text (`msg.text`). This is how type checkers see it; at run time
    the two halves are split (see `_MessageClass`) so that reading `msg.text` costs no
    Python call.
    """

    @overload
    def __get__(
        self, instance: None, owner: type[WebSocketMessage]
    ) -> Callable[[str], WebSocketMessage]: ...
    @overload
    def __get__(self, instance: WebSocketMessage, owner: type[WebSocketMessage]) -> str | None: ...
    def __get__(
        self, instance: WebSocketMessage | None, owner: type[WebSocketMessage]
    ) -> Callable[[str], WebSocketMessage] | str | None:
        raise NotImplementedError  # never made at run time

    def __set__(self, instance: WebSocketMessage, value: str | None) -> None:
        raise NotImplementedError


class _MessageClass(type):
    """The type of `WebSocketMessage`: its `text` property answers on the class (the
    factory), so the messages' own `text` can be a plain slot, read with no Python call
    (a handler reads it for every message). A property of the metaclass is a data
    descriptor, which attribute lookup on the class takes before the slot's descriptor
    in the class itself; lookup on a message finds only the slot.
    """

    @property
    def text(cls) -> Callable[[str], WebSocketMessage]:
        return cls.text_message  # type: ignore[attr-defined, no-any-return]


class WebSocketMessage(metaclass=_MessageClass):
    """A WebSocket message: text, binary, ping, pong or close.

    Attributes:
        msg_type: One of `"text"`, `"binary"`, `"ping"`, `"pong"`, `"close"`.
        text: The text of a text message, else `None`.
        data: The payload of a binary (or ping/pong) message, else `None`.
        code: For a close message, the close code: as received (1005 when the client's
            close frame had none), or as given to `close()` (1000 by default).
        reason: For a close message, the close reason (may be empty).
    """

    __slots__ = ("code", "data", "msg_type", "reason", "text")

    if TYPE_CHECKING:
        text = _TextField()

    def __init__(
        self,
        msg_type: MessageType,
        text: str | None = None,
        data: bytes | None = None,
        *,
        code: int | None = None,
        reason: str = "",
    ) -> None:
        self.msg_type: MessageType = msg_type
        self.text = text
        self.data = data
        self.code = code
        self.reason = reason

    @classmethod
    def text_message(cls, text: str) -> WebSocketMessage:
        """A text message (also reachable as `WebSocketMessage.text(...)`)."""
        return cls("text", text=text)

    @classmethod
    def binary(cls, data: bytes) -> WebSocketMessage:
        """A binary message."""
        return cls("binary", data=bytes(data))

    @classmethod
    def ping(cls, data: bytes = b"") -> WebSocketMessage:
        """A ping. Sending one checks the connection is open; see `WebSocket.send`."""
        return cls("ping", data=bytes(data))

    @classmethod
    def pong(cls, data: bytes = b"") -> WebSocketMessage:
        """A pong. Sending one checks the connection is open; see `WebSocket.send`."""
        return cls("pong", data=bytes(data))

    @classmethod
    def close(cls, code: int = 1000, reason: str = "") -> WebSocketMessage:
        """A close message; sending it closes the connection with `code` and `reason`."""
        return cls("close", code=code, reason=reason)

    def is_text(self) -> bool:
        return self.msg_type == "text"

    def is_binary(self) -> bool:
        return self.msg_type == "binary"

    def is_close(self) -> bool:
        return self.msg_type == "close"

    def is_ping(self) -> bool:
        return self.msg_type == "ping"

    def is_pong(self) -> bool:
        return self.msg_type == "pong"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WebSocketMessage):
            return NotImplemented
        # `_TEXT`, `_DATA` read the slots: a `ReceivedClose`'s properties would warn.
        mine = (self.msg_type, _TEXT.__get__(self), _DATA.__get__(self), self.code, self.reason)
        return mine == (
            other.msg_type,
            _TEXT.__get__(other),
            _DATA.__get__(other),
            other.code,
            other.reason,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self.msg_type == "text":
            return f"WebSocketMessage.text({_TEXT.__get__(self)!r})"
        if self.msg_type == "close":
            return f"WebSocketMessage.close({self.code!r}, {self.reason!r})"
        return f"WebSocketMessage.{self.msg_type}({self.data!r})"


#: The `data` and `text` slots' own descriptors, which `ReceivedClose` shadows.
_DATA = WebSocketMessage.__dict__["data"]
_TEXT = WebSocketMessage.__dict__["text"]

#: Where a received close message's payload was read, so each place warns once. A set
#: under a lock: a warning is rare, and this stays exact without the GIL.
_warned_at: set[tuple[str, int, str]] = set()
_warned_lock = threading.Lock()


def _warn_payload_read(attribute: str) -> None:
    """Log, once per line of code, that `.text`/`.data` was read on the client's close."""
    caller = sys._getframe(2)  # the code that read the attribute (past the descriptor)
    where = (caller.f_code.co_filename, caller.f_lineno, attribute)
    with _warned_lock:
        if where in _warned_at:
            return
        _warned_at.add(where)
    logger.warning(
        "msg.%s was read on the close message recv() returns when the client leaves "
        "(%s, line %d, in %s); it is None. End the loop on it: "
        "`if msg is None or msg.is_close(): break`, or iterate `for msg in ws:`",
        attribute,
        where[0],
        where[1],
        caller.f_code.co_name,
    )


class _ReceivedText:
    """`ReceivedClose.text`: `None`, with the warning."""

    def __get__(self, instance: ReceivedClose | None, owner: type[ReceivedClose]) -> object:
        if instance is None:
            return WebSocketMessage.text_message
        _warn_payload_read("text")
        return None

    def __set__(self, instance: ReceivedClose, value: str | None) -> None:
        _TEXT.__set__(instance, value)  # the slot, as `WebSocketMessage.__init__` sets it


class ReceivedClose(WebSocketMessage):
    """The close message `recv()` returns once when the client closes (see the module)."""

    __slots__ = ()

    text = _ReceivedText()  # type: ignore[assignment]

    def __init__(self, code: int, reason: str) -> None:
        super().__init__("close", code=code, reason=reason)

    @classmethod
    def text_message(cls, text: str) -> WebSocketMessage:
        """A text message (not a close): `WebSocketMessage.text_message`."""
        return WebSocketMessage.text_message(text)

    @property
    def data(self) -> None:
        """`None`, with the warning."""
        _warn_payload_read("data")
        return None

    @data.setter
    def data(self, value: bytes | None) -> None:
        _DATA.__set__(self, value)
