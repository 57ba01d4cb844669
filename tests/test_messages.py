"""`WebSocketMessage`: the page's factories, predicates and attributes."""

from __future__ import annotations

from cello import WebSocketMessage


def test_text_is_a_factory_on_the_class_and_an_attribute_on_messages() -> None:
    msg = WebSocketMessage.text("Hello")
    assert msg.msg_type == "text"
    assert msg.text == "Hello"
    assert msg.data is None
    assert msg.is_text()
    assert not msg.is_binary()
    assert not msg.is_close()


def test_factories_and_predicates() -> None:
    binary = WebSocketMessage.binary(b"\x00\x01\x02")
    assert (binary.msg_type, binary.data, binary.text) == ("binary", b"\x00\x01\x02", None)
    assert binary.is_binary()
    ping = WebSocketMessage.ping()
    assert ping.msg_type == "ping"
    assert ping.is_ping()
    assert not ping.is_pong()
    assert WebSocketMessage.pong().is_pong()
    close = WebSocketMessage.close()
    assert close.is_close()
    assert close.code == 1000
    assert close.reason == ""
    assert WebSocketMessage.close(4000, "bye").code == 4000


def test_equality_and_repr() -> None:
    assert WebSocketMessage.text("a") == WebSocketMessage.text("a")
    assert WebSocketMessage.text("a") != WebSocketMessage.binary(b"a")
    assert repr(WebSocketMessage.text("a")) == "WebSocketMessage.text('a')"
    assert repr(WebSocketMessage.close(1001, "x")) == "WebSocketMessage.close(1001, 'x')"
