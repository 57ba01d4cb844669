"""The connection core (`cello._bridge.Channel`) driven by a scripted fake ASGI server.

No server, no sockets: `FakeASGI` is the ASGI `receive`/`send` pair a server would hand the
app, scripted by the test (events to receive, a gate that holds sends back, a failure to
raise), so every state transition runs in milliseconds. Transport behaviour is tested
end to end in test_transport.py and test_faults.py.

Every test runs twice (the `path` fixture): through plain ASGI, and through a server link
(`cello._server_link`), where `FakeASGI` also plays the server's side door as cello's
uvicorn backend does: it hands the client's events to the connection's consumer as they
come (holding them while reading is paused) and writes a message at once unless the gate
or a failure says the server could not.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest

from cello import ConnectionClosed, WebSocketMessage
from cello._bridge import FINISHED, OUTBOX_LIMIT, Channel, Queued, State, wake_writers
from cello._events import accept_event, close_event, text_event
from cello._greenlets import GreenletRun
from cello._inbox import BURST

WAIT = 5.0  # seconds any single expectation may take before the test fails

ACCEPT = accept_event(None)

#: How the fake server of the running test is reached: "asgi", or "link" (a server link).
_path = "asgi"


@pytest.fixture(autouse=True, params=["asgi", "link"])
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test through plain ASGI, then through a server link."""
    global _path
    _path = request.param
    yield _path
    _path = "asgi"


class FakeASGI:
    """The `receive` and `send` an ASGI server gives a WebSocket app, scripted; with
    `linked`, also the server link of cello's uvicorn backend."""

    def __init__(self, linked: bool = False) -> None:
        self.linked = linked
        self.consumer: Callable[[dict[str, Any]], None] | None = None  # attached by the app
        self.paused = False  # reading paused by the app (link only)
        self.held: deque[dict[str, Any]] = deque()  # events not read while paused (link)
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.gate = asyncio.Event()  # sends wait while it is clear
        self.gate.set()
        self.entered = asyncio.Event()  # set when a send has started (and waits at the gate)
        self.fail: BaseException | None = None  # raised by the next send

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send(self, event: dict[str, Any]) -> None:
        self.entered.set()
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.sent.append(event)

    def arrives(self, event: dict[str, Any]) -> None:
        """An event from the client, as the server would hand it to the app."""
        if self.consumer is None:
            self.incoming.put_nowait(event)
        elif self.paused or self.held:
            self.held.append(event)  # in the socket, unread
        else:
            self.consumer(event)

    def client_sends(self, text: str) -> None:
        self.arrives({"type": "websocket.receive", "text": text})

    def client_closes(self, code: int = 1000, reason: str = "") -> None:
        self.arrives({"type": "websocket.disconnect", "code": code, "reason": reason})

    def client_vanishes(self) -> None:
        self.arrives({"type": "websocket.disconnect", "code": 1006})

    def unread(self) -> int:
        """Events the client sent that the app has not read from the server yet."""
        return self.incoming.qsize() + len(self.held)

    # The server link (`cello._server_link.ServerLink`), as `cello.serving` offers it.

    def serves(self, receive: Any, send: Any) -> bool:
        return bool(receive == self.receive and send == self.send)

    def attach(self, consumer: Callable[[dict[str, Any]], None]) -> None:
        while not self.incoming.empty():
            self.held.append(self.incoming.get_nowait())
        self.consumer = consumer
        self.resume_reading()

    def detach(self) -> None:
        self.consumer = None

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        while self.held and not self.paused and self.consumer is not None:
            self.consumer(self.held.popleft())

    def can_send(self) -> bool:
        return self.gate.is_set() and self.fail is None

    def send_if_ready(self, event: dict[str, Any]) -> bool:
        if not self.can_send():
            return False
        self.send_now(event)
        return True

    def send_now(self, event: dict[str, Any]) -> None:
        assert self.can_send()
        self.entered.set()
        self.sent.append(event)

    def texts(self) -> list[str]:
        return [e["text"] for e in self.sent if e["type"] == "websocket.send" and "text" in e]

    def kinds(self) -> list[str]:
        return [e["type"].removeprefix("websocket.") for e in self.sent]


def run(test: Callable[[FakeASGI], Awaitable[None]]) -> None:
    """Run `test` on a fresh event loop with a fresh fake server, bounded in time."""

    async def main() -> None:
        fake = FakeASGI(linked=_path == "link")
        async with asyncio.timeout(WAIT * 2):
            await test(fake)

    asyncio.run(main())


def channel_for(fake: FakeASGI, **options: Any) -> Channel:
    if fake.linked:
        options.setdefault("link", fake)
    return Channel(asyncio.get_running_loop(), fake.receive, fake.send, **options)


async def in_thread(fn: Callable[[], Any]) -> Any:
    """Run a blocking call in a plain thread, as a handler thread would."""
    return await asyncio.to_thread(fn)


async def settle() -> None:
    """Let every ready callback and task on the loop run (a few rounds of the loop)."""
    for _ in range(5):
        await asyncio.sleep(0)


# ----------------------------------------------------------------- every transition


def test_connecting_open_closing_closed() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        assert channel.state is State.CONNECTING
        assert not channel.open
        channel.accept(ACCEPT)
        assert channel.state is State.OPEN
        assert channel.open
        channel.send(text_event("one"))
        channel.close(1000, "bye")
        assert channel.state is State.CLOSING
        with pytest.raises(ConnectionClosed) as closed:
            channel.send(text_event("late"))
        assert closed.value.code == 1000
        await channel.finish()
        assert channel.state is State.CLOSED
        assert fake.kinds() == ["accept", "send", "close"]
        assert fake.sent[-1] == close_event(1000, "bye")

    run(test)


def test_denied_then_closed() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        events = [
            {"type": "websocket.http.response.start", "status": 401, "headers": []},
            {"type": "websocket.http.response.body", "body": b"no"},
        ]
        channel.deny(events)
        assert channel.state is State.DENIED
        assert channel.close_code == 1008
        with pytest.raises(ConnectionClosed):
            channel.accept(ACCEPT)
        await channel.finish()
        assert channel.state is State.CLOSED
        assert fake.sent == events

    run(test)


def test_close_before_accept_is_a_refusal() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.close(1011, "internal error")
        assert channel.state is State.CLOSING
        await channel.finish()
        assert fake.kinds() == ["close"]

    run(test)


def test_client_leaving_before_accept() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.start_pump()
        fake.client_closes(1001)
        await settle()
        assert channel.state is State.CLOSED_BY_PEER
        with pytest.raises(ConnectionClosed) as closed:
            channel.accept(ACCEPT)
        assert closed.value.code == 1001
        await channel.finish()
        assert fake.sent == []

    run(test)


def test_task_cancelled_before_accept_is_lost() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.start_pump()
        channel.abort()  # the connection's task is going away (server shutdown, cancel)
        assert channel.state is State.LOST
        with pytest.raises(ConnectionClosed) as closed:
            channel.accept(ACCEPT)
        assert closed.value.code == 1006
        assert await in_thread(lambda: channel.recv(WAIT)) is None
        await channel.finish()
        assert fake.sent == []

    run(test)


def test_peer_close_gives_one_close_message_then_none() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        channel.start_pump()
        fake.client_sends("hi")
        fake.client_closes(4000, "done")
        received = await in_thread(lambda: [channel.recv(WAIT) for _ in range(3)])
        assert received == [
            WebSocketMessage("text", "hi"),
            WebSocketMessage.close(4000, "done"),
            None,
        ]
        assert channel.state is State.CLOSED_BY_PEER
        with pytest.raises(ConnectionClosed) as closed:
            channel.send(text_event("late"))
        assert (closed.value.code, closed.value.reason) == (4000, "done")
        await channel.finish()
        assert channel.state is State.CLOSED_BY_PEER  # nothing more goes out
        assert fake.kinds() == ["accept"]

    run(test)


def test_lost_connection_gives_none() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        channel.start_pump()
        fake.client_vanishes()
        assert await in_thread(lambda: channel.recv(WAIT)) is None
        assert channel.state is State.LOST
        assert channel.close_code == 1006
        await channel.finish()

    run(test)


def test_a_failed_send_loses_the_connection() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        await settle()
        fake.fail = OSError("client gone")
        channel.send(text_event("x"))
        await settle()
        assert channel.state is State.LOST
        with pytest.raises(ConnectionClosed) as closed:
            channel.send(text_event("y"))
        assert closed.value.code == 1006
        await channel.finish()

    run(test)


def test_a_send_only_handler_learns_the_clients_close_code() -> None:
    """Nothing reads the connection (a greenlet or async handler that only sends): when a
    send finds the client gone, the channel reads the client's close, so the handler's
    next send raises its code, as a thread handler's pump would have seen it, not 1006."""

    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake, sync_reader=False)
        channel.accept(ACCEPT)
        await settle()
        fake.client_sends("unread")
        fake.client_closes(1001, "going away")
        fake.fail = OSError("client gone")
        channel.send(text_event("x"))
        await asyncio.wait_for(channel.finished(), WAIT)
        assert channel.state is State.CLOSED_BY_PEER
        with pytest.raises(ConnectionClosed) as closed:
            channel.send(text_event("y"))
        assert (closed.value.code, closed.value.reason) == (1001, "going away")
        await channel.finish()

    run(test)


def test_a_reader_arriving_while_the_close_is_read_returns_none() -> None:
    """`arecv` starts while the writer is reading the client's close after a failed send:
    the writer takes the disconnect, so that `arecv` must not wait for it forever."""

    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake, sync_reader=False)
        channel.accept(ACCEPT)
        await settle()
        fake.fail = OSError("client gone")
        channel.send(text_event("x"))
        await settle()  # the writer now waits in `receive` for the client's close
        reader = asyncio.create_task(channel.arecv())
        await settle()
        fake.client_closes(1000)
        assert await asyncio.wait_for(reader, WAIT) is None
        assert channel.state is State.CLOSED_BY_PEER
        await channel.finish()

    run(test)


def test_client_closing_while_the_app_closes() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        channel.start_pump()
        await settle()
        fake.gate.clear()
        channel.send(text_event("held"))
        channel.close(1000)
        fake.client_closes(1001)
        await settle()
        assert channel.state is State.CLOSED_BY_PEER
        assert channel.close_code == 1000  # the first close decides the code
        assert await in_thread(lambda: channel.recv(WAIT)) is None  # the app closed first
        fake.gate.set()
        await channel.finish()

    run(test)


def test_a_denial_that_cannot_be_sent_is_lost() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        fake.fail = RuntimeError("Unexpected ASGI message 'websocket.close'")
        channel.deny([close_event(1008, "")])
        await channel.finish()
        assert channel.state is State.LOST

    run(test)


def test_finished_states_refuse_every_transition() -> None:
    async def test(fake: FakeASGI) -> None:
        for finished in FINISHED:
            channel = channel_for(fake)
            channel.state = finished
            for target in State:
                with channel._lock:
                    assert not channel._enter(target)
            assert channel.state is finished
            channel.close()  # closing a finished connection does nothing
            assert channel.state is finished

    run(test)


def test_closing_twice_keeps_the_first_code() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        channel.close(4001, "first")
        channel.close(4002, "second")
        await channel.finish()
        assert fake.sent[-1] == close_event(4001, "first")
        assert fake.kinds().count("close") == 1

    run(test)


# ----------------------------------------------------------------- defects it prevents


def test_an_async_sender_waiting_for_room_is_woken() -> None:
    """Hub broadcasts fill the outbox past its limit while an async handler sends: it is
    woken when the writer drains, though no thread waits (it used to wait forever)."""

    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        await channel.aaccept(ACCEPT)
        fake.gate.clear()
        to_wake = [channel] if channel.enqueue(text_event("b0"), 1024) is Queued.WAKE else []
        for i in range(1, OUTBOX_LIMIT + 10):
            # Past OUTBOX_LIMIT the hub is told the member is getting behind.
            expected = Queued.QUEUED if i < OUTBOX_LIMIT else Queued.BEHIND
            assert channel.enqueue(text_event(f"b{i}"), 1024) is expected
        wake_writers(to_wake)
        sender = asyncio.create_task(channel.asend(text_event("mine")))
        await settle()
        assert not sender.done()  # waiting for room
        fake.gate.set()
        await asyncio.wait_for(sender, WAIT)
        await channel.finish()
        assert fake.texts()[-1] == "mine"

    run(test)


def test_a_handler_returning_while_a_task_is_mid_send() -> None:
    """An async handler's background task is sending when the handler returns: the close
    goes out after that send (it used to fail an assertion in flush)."""

    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        await channel.aaccept(ACCEPT)
        fake.gate.clear()
        fake.entered.clear()
        background = asyncio.create_task(channel.asend(text_event("from a task")))
        await fake.entered.wait()  # the task is inside the ASGI send
        finishing = asyncio.create_task(channel.finish())
        await settle()
        assert not finishing.done()
        fake.gate.set()
        await asyncio.wait_for(asyncio.gather(background, finishing), WAIT)
        assert fake.kinds() == ["accept", "send", "close"]
        assert channel.state is State.CLOSED

    run(test)


def test_a_send_racing_close_from_another_thread_goes_out_or_raises() -> None:
    """Senders in several threads while another thread closes: every send that returned
    normally is delivered ahead of the close frame (none returns and is then dropped)."""

    async def test(fake: FakeASGI) -> None:
        for _ in range(20):
            fake.sent.clear()
            channel = channel_for(fake)
            channel.accept(ACCEPT)
            returned: list[str] = []
            start = threading.Barrier(5)

            def sender(
                name: str, channel: Channel = channel, start: Any = start, returned: Any = returned
            ) -> None:
                start.wait()
                for i in range(200):
                    text = f"{name}-{i}"
                    try:
                        channel.send(text_event(text))
                    except ConnectionClosed:
                        return
                    returned.append(text)

            def closer(channel: Channel = channel, start: Any = start) -> None:
                start.wait()
                channel.close(1000)

            switch = sys.getswitchinterval()
            sys.setswitchinterval(1e-6)
            try:
                await asyncio.gather(
                    *(in_thread(lambda n=n: sender(n)) for n in "abcd"), in_thread(closer)
                )
            finally:
                sys.setswitchinterval(switch)
            await channel.finish()
            assert fake.kinds()[-1] == "close"
            assert set(returned) <= set(fake.texts()), "a send returned but was dropped"

    run(test)


class GatedOutbox(list[dict[str, Any]]):
    """An outbox that holds the first data event's sender inside the append, until the
    closing thread has closed (or `hold` seconds have passed): the interleaving that lets a
    send land behind the close frame when the open check and the append are not atomic."""

    def __init__(self, hold: float) -> None:
        super().__init__()
        self.hold = hold
        self.sender_inside = threading.Event()
        self.closed = threading.Event()

    def _gate(self, events: list[dict[str, Any]]) -> None:
        if not self.sender_inside.is_set() and any(e["type"] == "websocket.send" for e in events):
            self.sender_inside.set()
            self.closed.wait(self.hold)

    def append(self, event: dict[str, Any]) -> None:
        self._gate([event])
        super().append(event)

    def extend(self, events: Any) -> None:
        events = list(events)
        self._gate(events)
        super().extend(events)


def test_a_send_interleaved_with_close_goes_out_or_raises() -> None:
    """The sender is held between its open check and its append while another thread
    closes: the send either goes out ahead of the close frame or raises; it never returns
    normally and is then dropped behind the close."""

    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        outbox = GatedOutbox(hold=0.2)
        channel._outbox = outbox  # before the writer starts and takes it
        channel.accept(ACCEPT)
        await settle()

        def sender() -> str:
            try:
                channel.send(text_event("raced"))
            except ConnectionClosed:
                return "raised"
            return "returned"

        def closer() -> None:
            outbox.sender_inside.wait(WAIT)
            channel.close(1000)
            outbox.closed.set()

        outcome, _ = await asyncio.gather(in_thread(sender), in_thread(closer))
        await channel.finish()
        if outcome == "returned":
            assert fake.kinds()[-2:] == ["send", "close"], "the send returned but was dropped"
        assert fake.kinds()[-1] == "close"

    run(test)


def test_recv_from_a_thread_on_an_async_route_raises() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake, sync_reader=False)
        await channel.aaccept(ACCEPT)
        with pytest.raises(RuntimeError, match="async route"):
            await in_thread(lambda: channel.recv(WAIT))
        await channel.finish()

    run(test)


def test_recv_on_the_loop_thread_raises() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        with pytest.raises(RuntimeError, match="event loop"):
            channel.recv(0)
        await channel.finish()

    run(test)


def test_a_closed_in_process_stream_is_a_disconnect(caplog: pytest.LogCaptureFixture) -> None:
    """httpx-ws's in-process transport raises anyio.ClosedResourceError once the client
    has closed: the connection is lost quietly (it used to log a traceback)."""

    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        await settle()
        fake.fail = anyio.ClosedResourceError()
        channel.close(1000)
        await channel.finish()
        assert channel.state is State.LOST

    with caplog.at_level(logging.INFO, logger="cello"):
        run(test)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_unexpected_send_error_is_logged_and_loses_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        fake.fail = ValueError("a server bug")
        channel.accept(ACCEPT)
        await channel.finish()
        assert channel.state is State.LOST

    run(test)
    assert "Sending websocket.accept failed" in caplog.text


def test_queued_counts_what_waits_for_the_handler_on_every_path() -> None:
    """`queued` (the metrics' queued messages) counts messages a handler has not read:
    a sync handler's inbox, or the buffer a server link fills for the other runners.
    Through plain ASGI they wait in the server's queue, which is the server's own."""

    async def test(fake: FakeASGI) -> None:
        for sync_reader in (True, False):
            channel = channel_for(fake, sync_reader=sync_reader)
            if sync_reader:
                channel.start_pump()
            channel.accept(ACCEPT)
            await settle()
            for text in ("a", "b", "c"):
                fake.client_sends(text)
            await settle()
            assert channel.queued() == (3 if sync_reader or fake.linked else 0)
            channel.close()
            await channel.finish()
            fake = FakeASGI(linked=fake.linked)

    run(test)


def test_an_idle_linked_connection_keeps_no_task() -> None:
    """With a server link, once what a thread handler queued has gone out, the writer ends
    rather than wait: an idle connection holds no task (memory per idle connection), and
    the next message is written at once, in order."""

    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.start_pump()
        await in_thread(lambda: channel.accept(ACCEPT))
        await in_thread(lambda: channel.send(text_event("a")))
        await settle()
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if fake.linked:
            assert others == set()
        else:
            assert len(others) == 2  # the pump, and the writer waiting to be woken
        await in_thread(lambda: channel.send(text_event("b")))
        await settle()
        assert fake.texts() == ["a", "b"]
        await channel.finish()
        assert fake.kinds()[-1] == "close"

    run(test)


# ----------------------------------------------------------------- back-pressure, timeouts


def test_a_thread_sender_waits_for_room_then_goes_on() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        await settle()
        fake.gate.clear()
        sending = asyncio.ensure_future(
            in_thread(lambda: [channel.send(text_event(str(i))) for i in range(OUTBOX_LIMIT + 5)])
        )
        await asyncio.sleep(0.05)  # not synchronization: a chance to wrongly finish early
        assert not sending.done()
        fake.gate.set()
        await asyncio.wait_for(sending, WAIT)
        await channel.finish()
        assert fake.texts() == [str(i) for i in range(OUTBOX_LIMIT + 5)]

    run(test)


def test_a_send_timeout_closes_a_client_that_stopped_reading() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        await settle()
        fake.gate.clear()  # the client reads nothing

        def flood() -> None:
            for i in range(OUTBOX_LIMIT + 5):
                channel.send(text_event(str(i)), timeout=0.05)

        with pytest.raises(ConnectionClosed) as closed:
            await in_thread(flood)
        assert (closed.value.code, closed.value.reason) == (1008, "send timed out")
        assert channel.state is State.CLOSING
        fake.gate.set()
        await channel.finish()
        assert fake.sent[-1] == close_event(1008, "send timed out")
        assert len(fake.texts()) <= 1  # the backlog was dropped (one may have been mid-send)

    run(test)


def test_the_channel_default_send_timeout_applies() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake, send_timeout=0.05)
        await channel.aaccept(ACCEPT)
        fake.gate.clear()  # the server's send waits: the client reads nothing
        with pytest.raises(ConnectionClosed) as closed:
            await channel.asend(text_event("never read"))
        assert closed.value.code == 1008
        fake.gate.set()
        await channel.finish()
        assert fake.sent[-1] == close_event(1008, "send timed out")

    run(test)


def test_a_send_waiting_when_the_app_closes_still_goes_out() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        await settle()
        fake.gate.clear()
        for i in range(OUTBOX_LIMIT + 5):  # fill past the limit without waiting (hub-style)
            channel.enqueue(text_event(str(i)), 1024)
        sending = asyncio.ensure_future(in_thread(lambda: channel.send(text_event("mine"))))
        while not channel._space_waiters:  # noqa: ASYNC110 - a thread's counter, no event to await
            await asyncio.sleep(0.001)
        channel.close(1000)
        await asyncio.wait_for(sending, WAIT)  # returned normally: its message will go out
        fake.gate.set()
        await channel.finish()
        assert fake.texts()[-1] == "mine"
        assert fake.kinds()[-1] == "close"

    run(test)


def test_the_hub_drops_a_member_too_far_behind() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        await settle()
        fake.gate.clear()
        for i in range(3):
            channel.enqueue(text_event(str(i)), 3)
        assert channel.enqueue(text_event("over"), 3) is Queued.TOO_SLOW
        assert channel.enqueue(text_event("after"), 3) is Queued.CLOSED
        fake.gate.set()
        await channel.finish()
        assert fake.sent[-1] == close_event(1008, "client too slow")

    run(test)


def test_a_send_on_the_loop_thread_past_the_limit_closes_1008() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        await settle()
        fake.gate.clear()
        for i in range(OUTBOX_LIMIT):
            channel.send(text_event(str(i)))
        with pytest.raises(ConnectionClosed) as closed:
            channel.send(text_event("one too many"))  # on the loop: never blocks
        assert closed.value.code == 1008
        fake.gate.set()
        await channel.finish()

    run(test)


# ----------------------------------------------------------------- the receive pump


def test_the_pump_stops_reading_while_the_inbox_is_full() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        channel.start_pump()
        for i in range(200):
            fake.client_sends(str(i))
        await settle()
        assert fake.unread() == 200 - 64  # paused at the inbox's 64 messages
        first = await in_thread(lambda: [channel.recv(WAIT) for _ in range(40)])
        await settle()
        assert fake.unread() < 200 - 64  # resumed once taken down to half
        rest = await in_thread(lambda: [channel.recv(WAIT) for _ in range(160)])
        texts = [m.text for m in first + rest if m is not None]
        assert texts == [str(i) for i in range(200)]
        await channel.finish()

    run(test)


def test_the_pump_stops_reading_at_the_byte_limit() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        channel.start_pump()
        big = "x" * (300 * 1024)
        for _ in range(10):
            fake.client_sends(big)
        await settle()
        assert fake.unread() == 10 - 4  # 4 x 300 KiB reach the 1 MiB bound
        await in_thread(lambda: [channel.recv(WAIT) for _ in range(10)])
        await channel.finish()

    run(test)


def test_an_app_close_releases_a_paused_pump() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        channel.start_pump()
        for i in range(100):
            fake.client_sends(str(i))
        fake.client_closes(1000)
        await settle()
        channel.close(1000)
        await settle()
        assert fake.unread() == 0  # read on to the client's close, dropping the rest
        assert channel.state in FINISHED
        await channel.finish()

    run(test)


def test_recv_timeout() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        channel.start_pump()
        with pytest.raises(TimeoutError):
            await in_thread(lambda: channel.recv(0.01))
        await channel.finish()

    run(test)


def test_abort_wakes_a_blocked_recv() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        channel.start_pump()
        receiving = asyncio.ensure_future(in_thread(lambda: channel.recv(WAIT)))
        await settle()
        channel.abort()
        assert await asyncio.wait_for(receiving, WAIT) is None
        assert channel.state is State.LOST
        await channel.finish()

    run(test)


def test_async_recv() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake, sync_reader=False)
        await channel.aaccept(ACCEPT)
        fake.client_sends("hi")
        fake.arrives({"type": "websocket.receive", "bytes": b"\x00"})
        fake.client_closes(1000, "bye")
        assert await channel.arecv() == WebSocketMessage("text", "hi")
        assert await channel.arecv() == WebSocketMessage.binary(b"\x00")
        assert await channel.arecv() == WebSocketMessage.close(1000, "bye")
        assert await channel.arecv() is None
        await channel.finish()
        quiet = channel_for(fake, sync_reader=False)
        await quiet.aaccept(ACCEPT)
        with pytest.raises(TimeoutError):
            await quiet.arecv(timeout=0.01)
        await quiet.finish()

    run(test)


def test_flush_gives_up_on_a_client_that_reads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from cello import _bridge

    monkeypatch.setattr(_bridge, "FLUSH_STALL_TIMEOUT", 0.05)

    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake)
        channel.accept(ACCEPT)
        await settle()
        fake.gate.clear()  # never opened: the send never completes
        channel.send(text_event("stuck"))
        await channel.finish()
        assert channel.state is State.LOST

    run(test)


# ----------------------------------------------------------------- a greenlet handler's recv


def greenlet_handler(channel: Channel, body: Callable[[], None]) -> asyncio.Task[None]:
    """Run `body` as a greenlet route's handler of `channel` (as `_connection` does)."""
    return asyncio.create_task(GreenletRun(body, channel, route="test").run())


def test_a_greenlet_recv_waits_for_each_message_and_the_close(path: str) -> None:
    """With a server link the handler parks in `recv` and the arriving message resumes
    it; through ASGI its task awaits `arecv`. Either way: each message, then the close."""

    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake, sync_reader=False)
        channel.accept(ACCEPT)
        await settle()
        got: list[WebSocketMessage | None] = []

        def body() -> None:
            while True:
                msg = channel.recv()
                got.append(msg)
                if msg is None or msg.is_close():
                    return
                channel.send(text_event(f"echo {msg.text}"))

        task = greenlet_handler(channel, body)
        await settle()
        assert channel._parked is not None if path == "link" else channel._parked is None
        for text in ("a", "b", "c"):
            fake.client_sends(text)
            await settle()
        fake.client_closes(1001, "bye")
        await asyncio.wait_for(task, WAIT)
        assert [m.text for m in got[:3] if m is not None] == ["a", "b", "c"]
        assert got[3] == WebSocketMessage.close(1001, "bye")
        assert fake.texts() == ["echo a", "echo b", "echo c"]
        await channel.finish()

    run(test)


def test_a_greenlet_recv_returns_none_when_the_app_closes_meanwhile() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake, sync_reader=False)
        channel.accept(ACCEPT)
        await settle()
        got: list[WebSocketMessage | None] = []
        task = greenlet_handler(channel, lambda: got.append(channel.recv()))
        await settle()
        await in_thread(lambda: channel.close(1000))  # from another thread, as a broadcast may
        await asyncio.wait_for(task, WAIT)
        assert got == [None]
        await channel.finish()
        assert channel.state is State.CLOSED

    run(test)


def test_a_greenlet_recv_closed_from_another_greenlet_handler() -> None:
    """One greenlet handler closes another's connection while that one waits in `recv`:
    the waiting one is resumed from the loop, not inside the closing handler (greenlets
    switch back to whoever resumed them, so that would run one inside the other)."""

    async def test(fake: FakeASGI) -> None:
        mine = channel_for(fake, sync_reader=False)
        other_fake = FakeASGI(linked=fake.linked)
        other = channel_for(other_fake, sync_reader=False)
        for channel in (mine, other):
            channel.accept(ACCEPT)
        await settle()
        order: list[str] = []

        def waiting() -> None:
            order.append(f"waiting got {other.recv()}")

        def closing() -> None:
            other.close(1000)
            order.append("closed it")
            channel_msg = mine.recv()
            order.append(f"closing got {channel_msg}")

        waiter = greenlet_handler(other, waiting)
        await settle()
        closer = greenlet_handler(mine, closing)
        await asyncio.wait_for(waiter, WAIT)
        assert order == ["closed it", "waiting got None"]
        fake.client_sends("done")
        await asyncio.wait_for(closer, WAIT)
        assert order[-1].startswith("closing got ")
        for channel in (mine, other):
            await channel.finish()

    run(test)


def test_cancelling_a_greenlet_handler_waiting_in_recv_unwinds_it() -> None:
    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake, sync_reader=False)
        channel.accept(ACCEPT)
        await settle()
        unwound: list[str] = []

        def body() -> None:
            try:
                channel.recv()
            finally:
                unwound.append("finally ran")

        task = greenlet_handler(channel, body)
        await settle()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT)
        assert unwound == ["finally ran"]
        assert channel._parked is None
        fake.client_sends("after")  # nobody is resumed by it
        await settle()
        await channel.finish()

    run(test)


def test_a_greenlet_handler_failing_after_a_message_raises_from_its_task() -> None:
    """The handler is resumed by the message (with a link, from a loop callback): what it
    raises then ends its task with that exception, as when its task resumed it."""

    async def test(fake: FakeASGI) -> None:
        channel = channel_for(fake, sync_reader=False)
        channel.accept(ACCEPT)
        await settle()

        def body() -> None:
            msg = channel.recv()
            raise ValueError(f"bad message {msg.text if msg else None}")

        task = greenlet_handler(channel, body)
        await settle()
        fake.client_sends("x")
        with pytest.raises(ValueError, match="bad message x"):
            await asyncio.wait_for(task, WAIT)
        await channel.finish()

    run(test)


@pytest.mark.parametrize("runner", ["greenlet", "async"])
def test_a_backlog_lets_the_loop_run_every_burst(path: str, runner: str) -> None:
    """With a link up to 64 messages may wait for a handler on the loop; taking them one
    after another without a wait would hold every other connection of the loop until the
    backlog is worked off. Every `BURST` messages the loop runs once."""
    if path == "asgi":
        pytest.skip("through ASGI the server's queue decides (uvicorn reads one at a time)")

    async def test(fake: FakeASGI) -> None:
        loop = asyncio.get_running_loop()
        channel = channel_for(fake, sync_reader=False)
        channel.accept(ACCEPT)
        await settle()
        turns = 0  # loop iterations so far, counted by a callback that renews itself
        seen: list[int] = []  # `turns` as each message was taken

        def tick() -> None:
            nonlocal turns
            turns += 1
            if len(seen) < 40:
                loop.call_soon(tick)

        for i in range(40):
            fake.client_sends(str(i))
        loop.call_soon(tick)
        if runner == "greenlet":

            def body() -> None:
                for _ in range(40):
                    channel.recv()
                    seen.append(turns)

            await asyncio.wait_for(greenlet_handler(channel, body), WAIT)
        else:
            for _ in range(40):
                await channel.arecv()
                seen.append(turns)
        runs = [len(list(group)) for _, group in itertools.groupby(seen)]
        assert max(runs) <= BURST, runs
        await channel.finish()

    run(test)
