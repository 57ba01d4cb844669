"""The ASGI WebSocket events cello sends and reads: the one place they are built.

Every outgoing message, whether a handler's `ws.send_text`, a hub broadcast or one relayed
from another process, becomes its ASGI event here, and is checked here: text that UTF-8
cannot encode (a lone surrogate, as `json.loads('"\\ud800"')` gives) is refused at the call
with a `ValueError`. Left to the server it would fail inside the connection's writer, long
after the call returned, and (for a broadcast) in every member's writer at once.
"""

from __future__ import annotations

import json
from typing import Any, Final

from starlette.types import Message, Scope

from .messages import WebSocketMessage

#: The close code of a connection lost without a close frame.
ABNORMAL_CLOSURE: Final = 1006

#: Close codes an application may send (RFC 6455 section 7.4, plus the private range).
_SENDABLE_CODES: Final = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def text_event(text: str) -> Message:
    """A text message; `ValueError` for text UTF-8 cannot encode (lone surrogates)."""
    if not isinstance(text, str):
        raise TypeError(f"send_text() takes a str, not {type(text).__name__}")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"the text cannot be sent: it is not valid Unicode ({exc.reason} at "
                f"index {exc.start}: {text[exc.start : exc.end]!r})"
            ) from None
    return {"type": "websocket.send", "text": text}


def notice_event(text: str) -> Message:
    """A text message cello writes itself (the hub's presence and history notices, JSON
    made with `json.dumps`'s ASCII escapes): nothing to check."""
    return {"type": "websocket.send", "text": text}


def binary_event(data: bytes | bytearray | memoryview) -> Message:
    """A binary message (a copy of `data`, so the caller may reuse its buffer)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"send_binary() takes bytes, not {type(data).__name__}")
    return {"type": "websocket.send", "bytes": bytes(data)}


def json_event(value: Any) -> Message:
    """`value` as compact JSON text (ASCII-only, so always encodable)."""
    return {"type": "websocket.send", "text": json.dumps(value, separators=(",", ":"))}


def broadcast_event(
    message: str | bytes | bytearray | memoryview | dict[str, Any] | list[Any],
) -> Message:
    """A hub broadcast: text for `str`, binary for bytes, JSON text for a `dict` or `list`."""
    if isinstance(message, str):
        return text_event(message)
    if isinstance(message, bytes | bytearray | memoryview):
        return binary_event(message)
    if isinstance(message, dict | list):
        return json_event(message)
    raise TypeError(f"broadcast() takes str, bytes, dict or list, not {type(message).__name__}")


def relayed_event(kind: bytes, body: bytes) -> Message:
    """A broadcast relayed from another process: `t` and UTF-8 text (`j`: JSON text), or
    `b` and bytes.

    Text is decoded with replacement, so a corrupt payload can never yield text that the
    server would fail to encode.
    """
    if kind == b"t" or kind == b"j":
        return {"type": "websocket.send", "text": body.decode(errors="replace")}
    return {"type": "websocket.send", "bytes": body}


def accept_event(subprotocol: str | None) -> Message:
    return {"type": "websocket.accept", "subprotocol": subprotocol}


def check_close(code: int, reason: str) -> None:
    """Refuse a close code or reason the protocol does not allow an application to send."""
    if code not in _SENDABLE_CODES and not 3000 <= code <= 4999:
        raise ValueError(f"{code} is not a close code an application may send")
    try:
        size = len(reason.encode())
    except UnicodeEncodeError:
        raise ValueError("a close reason must be valid Unicode") from None
    if size > 123:
        raise ValueError("a close reason is at most 123 bytes of UTF-8")


def close_event(code: int, reason: str) -> Message:
    return {"type": "websocket.close", "code": code, "reason": reason}


def refusal(scope: Scope, status: int, detail: str, headers: Any = None) -> list[Message]:
    """The ASGI events that refuse a connection before acceptance.

    An HTTP response with `status` and a JSON body where the server supports the
    denial-response extension; otherwise close code 1008, which servers answer with 403.
    """
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        return [close_event(1008, "")]
    body = json.dumps({"detail": detail}).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in dict(headers or {}).items()]
    return [
        {"type": "websocket.http.response.start", "status": status, "headers": raw_headers},
        {"type": "websocket.http.response.body", "body": body},
    ]


def ends_connection(event: Message) -> bool:
    """Whether nothing can be sent after `event` (a close frame, or a denial's last body)."""
    kind = event["type"]
    return kind == "websocket.close" or (
        kind == "websocket.http.response.body" and not event.get("more_body")
    )


# ------------------------------------------------------------------------- incoming


def to_message(event: Message) -> WebSocketMessage:
    """An ASGI `websocket.receive` event as a `WebSocketMessage`."""
    text = event.get("text")
    if text is not None:
        return WebSocketMessage("text", text=text)
    return WebSocketMessage("binary", data=event.get("bytes") or b"")


def was_lost(event: Message) -> bool:
    """Whether a `websocket.disconnect` means the connection was lost, not closed by a frame.

    1006 says so. uvicorn's sansio and wsproto backends report a lost connection as 1005
    with no `reason` key, while a received close frame (even one without a status, 1005)
    always carries a `reason`; that absence is what tells the two apart.
    """
    code = event.get("code", 1005)
    return code == ABNORMAL_CLOSURE or (code == 1005 and "reason" not in event)
