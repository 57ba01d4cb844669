"""The in-memory hub: groups, broadcasts, exclusion, leaving on close, slow members.

Logic through the in-process `TestClient`; the slow-member policy under a real uvicorn,
where a client that never reads really stops the socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time

import greenlet
import pytest
from websockets.sync.client import connect

from cello import App, AsyncWebSocket, ConnectionClosed, WebSocket
from cello.hub import Hub
from cello.testing import TestClient, WebSocketDisconnect
from servers import BufferedClient, ThreadServer, raw_upgrade

pytestmark = pytest.mark.usefixtures("websocket_runner")

WAIT = 10


def room_app() -> App:
    """A chat room per path: every message goes to the room, the sender included."""
    app = App(hub=None)

    @app.websocket("/rooms/{name}")
    def room(ws: WebSocket, request: object) -> None:
        name = ws.request.params["name"]
        app.hub.join(name, ws)
        ws.send_text(f"joined {name}")
        for msg in ws:
            if msg.text == "count":
                ws.send_text(str(app.hub.count(name)))
            elif msg.text == "others":
                app.hub.broadcast(name, "from a neighbour", exclude=ws)
            elif msg.text == "leave":
                app.hub.leave(name, ws)
                ws.send_text("left")
            elif msg.is_binary():
                app.hub.broadcast(name, msg.data or b"")
            elif msg.text and msg.text.startswith("{"):
                app.hub.broadcast(name, json.loads(msg.text))
            else:
                app.hub.broadcast(name, msg.text or "")

    return app


def wait_until(predicate: object, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_hub_defaults_to_memory_and_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CELLO_HUB_URL", raising=False)
    assert App().hub.backend == "memory"
    monkeypatch.setenv("CELLO_HUB_URL", "redis://127.0.0.1:1/0")
    assert App().hub.backend == "redis"
    monkeypatch.setenv("CELLO_HUB_URL", "")
    assert App().hub.backend == "memory"
    hub = Hub()
    assert App(hub=hub).hub is hub


def test_a_hub_url_must_be_redis() -> None:
    with pytest.raises(ValueError, match="redis://"):
        App(hub="http://127.0.0.1:6379")


def test_broadcast_reaches_every_member_of_the_group_only() -> None:
    app = room_app()
    with (
        TestClient(app) as client,
        client.websocket_connect("/rooms/a") as a1,
        client.websocket_connect("/rooms/a") as a2,
        client.websocket_connect("/rooms/b") as b1,
    ):
        for ws, room in ((a1, "a"), (a2, "a"), (b1, "b")):
            assert ws.receive_text() == f"joined {room}"
        a1.send_text("hello a")
        assert a1.receive_text() == "hello a"
        assert a2.receive_text() == "hello a"
        b1.send_text("hello b")
        assert b1.receive_text() == "hello b"  # and nothing from room a before it
        a2.send_text("count")
        assert a2.receive_text() == "2"


def test_str_bytes_and_json_become_text_binary_and_json_frames() -> None:
    app = room_app()
    with TestClient(app) as client, client.websocket_connect("/rooms/r") as ws:
        ws.receive_text()
        ws.send_bytes(b"\x00\xff")
        assert ws.receive_bytes() == b"\x00\xff"
        ws.send_text('{"n": [1, 2]}')
        assert ws.receive_json() == {"n": [1, 2]}


def test_exclude_skips_the_sender() -> None:
    app = room_app()
    with (
        TestClient(app) as client,
        client.websocket_connect("/rooms/x") as sender,
        client.websocket_connect("/rooms/x") as other,
    ):
        sender.receive_text()
        other.receive_text()
        sender.send_text("others")
        assert other.receive_text() == "from a neighbour"
        sender.send_text("count")
        assert sender.receive_text() == "2"  # the broadcast did not come first


def test_leave_and_closing_remove_members() -> None:
    app = room_app()
    with TestClient(app) as client, client.websocket_connect("/rooms/y") as stays:
        stays.receive_text()
        with client.websocket_connect("/rooms/y") as goes:
            goes.receive_text()
            assert app.hub.count("y") == 2
            goes.send_text("leave")
            assert goes.receive_text() == "left"
            assert app.hub.count("y") == 1
            goes.send_text("from a former member")  # a broadcast needs no membership
            assert stays.receive_text() == "from a former member"
            goes.send_text("count")
            assert goes.receive_text() == "1"  # it did not hear its own broadcast
        with client.websocket_connect("/rooms/y") as closes:
            closes.receive_text()
            assert app.hub.count("y") == 2
        wait_until(lambda: app.hub.count("y") == 1)
        stays.send_text("still here")
        assert stays.receive_text() == "still here"
    assert app.hub.groups() == []


def test_joining_a_closed_connection_raises() -> None:
    app = App()
    outcome: list[BaseException] = []

    @app.websocket("/late")
    def late(ws: WebSocket) -> None:
        ws.close()
        try:
            app.hub.join("g", ws)
        except ConnectionClosed as exc:
            outcome.append(exc)

    with (
        TestClient(app) as client,
        client.websocket_connect("/late") as ws,
        pytest.raises(WebSocketDisconnect),
    ):
        ws.receive_text()
    wait_until(lambda: bool(outcome))
    assert isinstance(outcome[0], ConnectionClosed)
    assert app.hub.count("g") == 0


def test_bad_arguments_are_clear_errors() -> None:
    hub = Hub()
    with pytest.raises(TypeError, match="non-empty str"):
        hub.broadcast("", "x")
    with pytest.raises(TypeError, match="not int"):
        hub.broadcast("g", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a WebSocket"):
        hub.join("g", object())  # type: ignore[arg-type]
    hub.broadcast("nobody", "goes nowhere")  # an empty group is not an error


def test_async_handlers_join_and_broadcast_with_the_awaitable_form() -> None:
    app = App()

    @app.websocket("/async")
    async def room(ws: AsyncWebSocket) -> None:
        app.hub.join("mixed", ws)
        await ws.send_text("joined")
        async for msg in ws:
            await app.hub.abroadcast("mixed", f"async: {msg.text}")

    @app.websocket("/sync")
    def sync_room(ws: WebSocket) -> None:
        app.hub.join("mixed", ws)
        ws.send_text("joined")
        for msg in ws:
            app.hub.broadcast("mixed", f"sync: {msg.text}")

    with (
        TestClient(app) as client,
        client.websocket_connect("/async") as a,
        client.websocket_connect("/sync") as s,
    ):
        assert a.receive_text() == s.receive_text() == "joined"
        a.send_text("1")
        assert a.receive_text() == s.receive_text() == "async: 1"
        s.send_text("2")
        assert a.receive_text() == s.receive_text() == "sync: 2"


def test_a_plain_thread_broadcasts_in_order_with_direct_sends() -> None:
    app = App()
    joined = threading.Event()

    @app.websocket("/feed")
    def feed(ws: WebSocket) -> None:
        app.hub.join("feed", ws)
        joined.set()
        for _ in ws:
            pass

    def pusher(ws_holder: list[WebSocket]) -> None:
        for i in range(200):
            app.hub.broadcast("feed", str(i))

    with TestClient(app) as client, client.websocket_connect("/feed") as ws:
        assert joined.wait(WAIT)
        thread = threading.Thread(target=pusher, args=([],))
        thread.start()
        thread.join(WAIT)
        assert [ws.receive_text() for _ in range(200)] == [str(i) for i in range(200)]


def test_a_broadcast_then_a_direct_send_arrive_in_that_order() -> None:
    app = App()

    @app.websocket("/order")
    def order(ws: WebSocket) -> None:
        app.hub.join("o", ws)
        for i in range(50):
            app.hub.broadcast("o", f"b{i}")
            ws.send_text(f"d{i}")

    with TestClient(app) as client, client.websocket_connect("/order") as ws:
        got = [ws.receive_text() for _ in range(100)]
    assert got == [x for i in range(50) for x in (f"b{i}", f"d{i}")]


def test_a_member_that_never_reads_is_disconnected_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under a real uvicorn: a client that stops reading fills its socket, then the hub's
    queue; it is closed with 1008 and the room keeps receiving everything."""
    app = App(hub=Hub(max_queue=256))
    closed_codes: list[int | None] = []

    @app.websocket("/room")
    def room(ws: WebSocket) -> None:
        app.hub.join("room", ws)
        ws.send_text("joined")
        for _ in ws:
            pass
        closed_codes.append(ws.close_code)

    payload = "x" * 8192
    total = 2000
    with ThreadServer(app, ws="websockets-sansio") as server:
        stuck = raw_upgrade(server.port, "/room", rcvbuf=4096)  # never reads past here
        with connect(server.url("/room"), open_timeout=WAIT) as reader:
            assert reader.recv(WAIT) == "joined"
            wait_until(lambda: app.hub.count("room") == 2)
            got: list[int] = []

            def read_all() -> None:
                for _ in range(total):
                    got.append(int(str(reader.recv(WAIT)).split()[0]))

            reading = threading.Thread(target=read_all)
            reading.start()
            with caplog.at_level(logging.WARNING, logger="cello.hub"):
                for i in range(total):
                    app.hub.broadcast("room", f"{i} {payload}")
                    while i - len(got) > 100:  # a publisher the reader keeps up with
                        time.sleep(0.001)
                reading.join(WAIT * 3)
            assert got == list(range(total))
            wait_until(lambda: app.hub.count("room") == 1)
            wait_until(lambda: closed_codes == [1008])
        stuck.close()
    assert "1008" in caplog.text


def test_the_handler_of_a_member_the_hub_drops_gets_connection_closed() -> None:
    """The member's own handler floods a client that reads nothing; once the hub finds the
    member too far behind it drops the backlog and closes it with 1008, and the handler's
    send (waiting for room, or the next one) raises `ConnectionClosed(1008)`."""
    app = App(hub=Hub(max_queue=64))
    returned: list[int] = []
    outcome: queue.Queue[int] = queue.Queue()

    @app.websocket("/member")
    def member(ws: WebSocket) -> None:
        app.hub.join("g", ws)
        try:
            for i in range(100_000):
                ws.send_text(f"{i} " + "x" * 4096)
                returned.append(i)
        except ConnectionClosed as exc:
            outcome.put(exc.code)

    with ThreadServer(app, ws="websockets-sansio") as server:
        sock = raw_upgrade(server.port, "/member", rcvbuf=65536)  # reads nothing
        try:
            last = -1
            while len(returned) != last:  # until the handler waits for room
                last = len(returned)
                time.sleep(0.3)
            deadline = time.monotonic() + WAIT
            while outcome.empty() and time.monotonic() < deadline:
                app.hub.broadcast("g", "one more")  # drops the member once it is behind
                time.sleep(0.05)
            assert outcome.get(timeout=WAIT) == 1008
        finally:
            sock.close()


def listening_room(hub: Hub) -> App:
    """An app whose `/member` (a greenlet handler) joins "room", says `joined`, and only
    listens: the members the loop-thread broadcasting tests watch."""
    app = App(hub=hub)

    @app.websocket("/member", runner="greenlet")
    def member(ws: WebSocket) -> None:
        app.hub.join("room", ws)
        ws.send_text("joined")
        for _ in ws:
            pass

    return app


@pytest.mark.parametrize("handler", ["greenlet", "async"])
def test_a_loop_handler_broadcasting_its_clients_backlog_lets_members_keep_up(
    handler: str,
) -> None:
    """A greenlet or async handler relaying what its client already sent never waits
    (each `recv` returns at once), so the members' writers, on the same loop, could not
    run: they fell `max_queue` behind and were dropped as too slow (1008). The hub lets
    the loop run once some member gets behind."""
    app = listening_room(Hub(max_queue=100))
    total = 1000

    if handler == "greenlet":

        @app.websocket("/publish", runner="greenlet")
        def publish(ws: WebSocket) -> None:
            for msg in ws:
                app.hub.broadcast("room", msg.text or "")

    else:

        @app.websocket("/publish")
        async def apublish(ws: AsyncWebSocket) -> None:
            async for msg in ws:
                await app.hub.abroadcast("room", msg.text or "")

    async def scenario() -> None:
        reader = BufferedClient("/member", [])
        reading = asyncio.create_task(app(reader.scope, reader.receive, reader.send))
        await reader.wait_for_texts(1)  # joined
        publisher = BufferedClient("/publish", [str(i) for i in range(total)])
        publisher.leave.set()
        await app(publisher.scope, publisher.receive, publisher.send)
        reader.leave.set()
        await reading
        assert reader.texts() == ["joined", *(str(i) for i in range(total))]
        assert [e["type"] for e in reader.sent if e["type"] != "websocket.send"] == [
            "websocket.accept"  # and no close: the client left first
        ]

    asyncio.run(asyncio.wait_for(scenario(), WAIT))


def test_a_greenlet_handler_never_parks_inside_broadcast() -> None:
    """A greenlet handler broadcasting under one of the app's locks while a member is far
    behind: `broadcast` used to park it to let the loop run, lock held, and the next
    handler taking the lock would block the loop for good. It never switches away now;
    its next `recv` lets the loop run instead."""
    app = listening_room(Hub(max_queue=1000))
    lock = threading.Lock()
    switched_in_broadcast: list[bool] = []

    @app.websocket("/publish", runner="greenlet")
    def publish(ws: WebSocket) -> None:
        me = greenlet.getcurrent()
        switches: list[object] = []

        def trace(event: str, args: tuple[object, object]) -> None:
            if args[0] is me:  # switching away from this handler
                switches.append(event)

        previous = greenlet.settrace(trace)
        try:
            with lock:
                for i in range(200):  # the member's writer is stuck: it falls behind
                    app.hub.broadcast("room", str(i))
        finally:
            greenlet.settrace(previous)
        switched_in_broadcast.append(bool(switches))

    async def scenario() -> None:
        reader = BufferedClient("/member", [])
        stuck = asyncio.Event()
        send = reader.send

        async def slow_send(event: dict[str, object]) -> None:
            await send(event)
            if event["type"] == "websocket.send" and event.get("text") != "joined":
                await stuck.wait()  # the client stopped reading

        reading = asyncio.create_task(app(reader.scope, reader.receive, slow_send))
        await reader.wait_for_texts(1)
        publisher = BufferedClient("/publish", [])
        publisher.leave.set()
        await app(publisher.scope, publisher.receive, publisher.send)
        stuck.set()
        reader.leave.set()
        await reading

    asyncio.run(asyncio.wait_for(scenario(), WAIT))
    assert switched_in_broadcast == [False]
