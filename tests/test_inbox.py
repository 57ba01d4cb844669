"""`cello._inbox.Inbox`: the incoming side of a sync handler's connection, on its own."""

from __future__ import annotations

import threading
import time

import pytest

from cello import ConcurrencyError, WebSocketMessage
from cello._inbox import Inbox

WAIT = 5.0


def text(value: str) -> WebSocketMessage:
    return WebSocketMessage("text", text=value)


class Resumes:
    """The inbox's `resume` callback, counting its calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def test_messages_come_out_in_order_then_the_final_one_then_none() -> None:
    inbox = Inbox(Resumes())
    for value in "abc":
        assert not inbox.put(text(value), 1)
    assert len(inbox) == 3
    inbox.end(WebSocketMessage.close(1000, "bye"))
    assert [inbox.get(0) for _ in range(6)] == [
        text("a"),
        text("b"),
        text("c"),
        WebSocketMessage.close(1000, "bye"),
        None,
        None,
    ]


def test_pauses_at_the_message_count_and_resumes_once_at_half() -> None:
    resumes = Resumes()
    inbox = Inbox(resumes, max_messages=4, max_bytes=1_000)
    assert [inbox.put(text(str(i)), 1) for i in range(4)] == [False, False, False, True]
    assert inbox.paused
    inbox.get(0)
    assert resumes.count == 0  # 3 left: more than half
    inbox.get(0)
    assert resumes.count == 1  # 2 left: half
    assert not inbox.paused
    inbox.get(0)
    assert resumes.count == 1  # once per pause


def test_pauses_at_the_byte_bound_whatever_the_count() -> None:
    resumes = Resumes()
    inbox = Inbox(resumes, max_messages=100, max_bytes=1_000)
    assert not inbox.put(text("x"), 600)
    assert inbox.put(text("y"), 600)  # a message larger than what is left still gets in
    assert inbox.paused
    inbox.get(0)
    assert resumes.count == 0  # 600 bytes left: more than half of 1,000
    assert inbox.paused
    inbox.get(0)
    assert resumes.count == 1


def test_a_blocked_get_is_woken_by_put_and_by_end() -> None:
    inbox = Inbox(Resumes())
    got: list[WebSocketMessage | None] = []
    reader = threading.Thread(target=lambda: got.extend([inbox.get(WAIT), inbox.get(WAIT)]))
    reader.start()
    inbox.put(text("hi"), 2)
    inbox.end()
    reader.join(WAIT)
    assert got == [text("hi"), None]


def test_get_times_out() -> None:
    with pytest.raises(TimeoutError):
        Inbox(Resumes()).get(0.01)


def test_a_second_reader_is_refused() -> None:
    inbox = Inbox(Resumes())
    waiting = threading.Thread(target=inbox.get, args=(WAIT,))
    waiting.start()
    deadline = time.monotonic() + WAIT
    while not inbox._reading and time.monotonic() < deadline:  # the first reader is in get
        time.sleep(0.001)
    with pytest.raises(ConcurrencyError, match="one thread at a time"):
        inbox.get(0)
    inbox.end()
    waiting.join(WAIT)
    assert inbox.get(0) is None  # the refusal left no trace: the next read works


def test_ending_with_discard_drops_what_waits_and_resumes_a_paused_pump() -> None:
    resumes = Resumes()
    inbox = Inbox(resumes, max_messages=2)
    inbox.put(text("a"), 1)
    assert inbox.put(text("b"), 1)
    inbox.end(discard=True)
    assert resumes.count == 1
    assert inbox.get(0) is None
    assert not inbox.put(text("late"), 1)  # dropped: the app has closed
    assert len(inbox) == 0
    inbox.end(text("ignored"))  # ending twice does nothing
    assert inbox.get(0) is None
