"""`cello._events`: the ASGI events cello builds, and the checks made while building them."""

from __future__ import annotations

import json

import pytest

from cello import WebSocketMessage
from cello._events import (
    binary_event,
    broadcast_event,
    check_close,
    ends_connection,
    refusal,
    relayed_event,
    text_event,
    to_message,
    was_lost,
)


@pytest.mark.parametrize("text", ["\ud800", "ok \udfff", json.loads('"\\ud83d"')])
def test_text_that_utf8_cannot_encode_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not valid Unicode"):
        text_event(text)
    with pytest.raises(ValueError, match="not valid Unicode"):
        broadcast_event(text)


def test_text_and_binary_events() -> None:
    assert text_event("héllo 👋") == {"type": "websocket.send", "text": "héllo 👋"}
    buffer = bytearray(b"ab")
    event = binary_event(buffer)
    buffer[0] = 0
    assert event == {"type": "websocket.send", "bytes": b"ab"}  # a copy
    with pytest.raises(TypeError, match="takes a str"):
        text_event(b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes bytes"):
        binary_event("x")  # type: ignore[arg-type]


def test_broadcasts_by_type() -> None:
    assert broadcast_event("t") == {"type": "websocket.send", "text": "t"}
    assert broadcast_event(b"b") == {"type": "websocket.send", "bytes": b"b"}
    # JSON is ASCII-escaped, so even a lone surrogate inside a dict is sendable text.
    assert broadcast_event({"a": "\ud800"}) == {"type": "websocket.send", "text": '{"a":"\\ud800"}'}
    with pytest.raises(TypeError, match="not int"):
        broadcast_event(3)  # type: ignore[arg-type]


def test_relayed_text_is_always_encodable() -> None:
    event = relayed_event(b"t", b"ok \xff")
    assert event == {"type": "websocket.send", "text": "ok \ufffd"}
    assert relayed_event(b"b", b"\xff") == {"type": "websocket.send", "bytes": b"\xff"}


def test_close_codes_and_reasons() -> None:
    check_close(1000, "")
    check_close(4999, "x" * 123)
    for code in (999, 1004, 1005, 1006, 1015, 2999, 5000):
        with pytest.raises(ValueError, match="close code"):
            check_close(code, "")
    with pytest.raises(ValueError, match="123 bytes"):
        check_close(1000, "é" * 62)
    with pytest.raises(ValueError, match="valid Unicode"):
        check_close(1000, "\ud800")


def test_refusal_with_and_without_the_denial_extension() -> None:
    extended = {"extensions": {"websocket.http.response": {}}}
    start, body = refusal(extended, 401, "no token", {"WWW-Authenticate": "Bearer"})
    assert start["status"] == 401
    assert (b"www-authenticate", b"Bearer") in start["headers"]
    assert json.loads(body["body"]) == {"detail": "no token"}
    assert ends_connection(body)
    assert not ends_connection(start)
    assert refusal({}, 401, "no token") == [{"type": "websocket.close", "code": 1008, "reason": ""}]


def test_incoming_events() -> None:
    assert to_message({"type": "websocket.receive", "text": "a"}) == WebSocketMessage("text", "a")
    assert to_message({"type": "websocket.receive", "bytes": b"a"}) == WebSocketMessage.binary(b"a")
    assert was_lost({"type": "websocket.disconnect", "code": 1006})
    assert was_lost({"type": "websocket.disconnect", "code": 1005})  # no reason key: lost
    assert not was_lost({"type": "websocket.disconnect", "code": 1005, "reason": ""})
    assert not was_lost({"type": "websocket.disconnect", "code": 1000, "reason": ""})
