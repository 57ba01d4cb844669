"""Resumable delivery on the hub: broadcasts with ids, a bounded history per group, and
members (WebSocket and Server-Sent Events) that come back with the last id they saw.

Logic through the in-process `TestClient`, on both runners for sync handlers and on an
async handler; the SSE stream through a real uvicorn and httpx.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from typing import Any

import httpx
import pytest

from cello import App, AsyncWebSocket, Request, Response, WebSocket
from cello.hub import Hub
from cello.testing import TestClient
from servers import ThreadServer, wait_until
from sse_parsing import read_events

pytestmark = pytest.mark.usefixtures("websocket_runner")

WAIT = 10


def resumable_app(history: int = 100) -> App:
    """`/rooms/{room}?since=...` joins resumably; each text message is broadcast (JSON
    text as a dict); `/plain/{room}` joins without ids; `/async/{room}` is async."""
    app = App(hub=Hub(history=history))

    @app.websocket("/rooms/{room}")
    def room(ws: WebSocket, request: Request) -> None:
        app.hub.join(request.params["room"], ws, resumable=True, since=request.query.get("since"))
        for msg in ws:
            relay(app, request.params["room"], msg.text, msg.data)

    @app.websocket("/plain/{room}")
    def plain(ws: WebSocket, request: Request) -> None:
        app.hub.join(request.params["room"], ws)
        for msg in ws:
            relay(app, request.params["room"], msg.text, msg.data)

    @app.websocket("/async/{room}")
    async def async_room(ws: AsyncWebSocket, request: Request) -> None:
        since = request.query.get("since")
        app.hub.join(request.params["room"], ws, resumable=True, since=since)
        async for msg in ws:
            await app.hub.abroadcast(request.params["room"], msg.text or "")

    @app.get("/rooms/{room}/events")
    def events(request: Request) -> Response:
        since = request.headers.get("last-event-id")
        return Response.sse(app.hub.stream(request.params["room"], since=since))

    return app


def relay(app: App, room: str, text: str | None, data: bytes | None) -> None:
    if data is not None:
        app.hub.broadcast(room, data)
    elif text is not None and text.startswith("{"):
        app.hub.broadcast(room, json.loads(text))
    else:
        app.hub.broadcast(room, text or "")


def joined(ws: Any, group: str = "r") -> str:
    """Read the `joined` notice; the position it gives."""
    notice = ws.receive_json()
    assert (notice["hub"], notice["group"]) == ("joined", group), notice
    at: str = notice["at"]
    return at


def test_a_resumable_member_gets_ids_and_a_plain_one_the_message() -> None:
    app = resumable_app()
    with (
        TestClient(app) as client,
        client.websocket_connect("/rooms/r") as resuming,
        client.websocket_connect("/plain/r") as plain,
    ):
        joined(resuming)
        plain.send_text("hello")
        first = resuming.receive_json()
        assert first == {"id": first["id"], "group": "r", "data": "hello"}
        assert plain.receive_text() == "hello"
        plain.send_text('{"n": 1}')
        assert resuming.receive_json()["data"] == {"n": 1}
        assert plain.receive_json() == {"n": 1}
        plain.send_bytes(b"\x00\x01")
        assert base64.b64decode(resuming.receive_json()["binary"]) == b"\x00\x01"
        assert plain.receive_bytes() == b"\x00\x01"


def test_coming_back_with_the_last_id_gets_what_was_missed_once_in_order() -> None:
    app = resumable_app()
    with TestClient(app) as client, client.websocket_connect("/plain/r") as sender:
        with client.websocket_connect("/rooms/r") as first:
            joined(first)
            sender.send_text("one")
            last = first.receive_json()["id"]
            sender.receive_text()
        for word in ("two", "three"):  # while it is away
            sender.send_text(word)
            sender.receive_text()
        with client.websocket_connect(f"/rooms/r?since={last}") as back:
            replayed = [back.receive_json() for _ in range(2)]
            assert [m["data"] for m in replayed] == ["two", "three"]
            assert joined(back) > ""
            sender.send_text("four")  # live, after the replay
            assert back.receive_json()["data"] == "four"
            # The `joined` position resumes too: nothing missed since, nothing again.
        with client.websocket_connect(f"/rooms/r?since={replayed[-1]['id']}") as again:
            assert again.receive_json()["data"] == "four"
            joined(again)


def test_a_position_with_nothing_after_it_gives_nothing_but_the_notice() -> None:
    app = resumable_app()
    with TestClient(app) as client:
        with client.websocket_connect("/rooms/r") as ws:
            at = joined(ws)
        with client.websocket_connect(f"/rooms/r?since={at}") as ws:
            assert joined(ws) == at
            ws.send_text("mine")
            assert ws.receive_json()["data"] == "mine"


def test_too_old_a_position_is_told_as_a_gap_then_what_is_kept() -> None:
    app = resumable_app(history=3)
    with TestClient(app) as client, client.websocket_connect("/plain/r") as sender:
        with client.websocket_connect("/rooms/r") as ws:
            at = joined(ws)
        for i in range(5):
            sender.send_text(str(i))
            sender.receive_text()
        with client.websocket_connect(f"/rooms/r?since={at}") as ws:
            assert ws.receive_json() == {"hub": "gap", "group": "r"}
            assert [ws.receive_json()["data"] for _ in range(3)] == ["2", "3", "4"]
            joined(ws)


@pytest.mark.parametrize("since", ["nonsense", "1-1", "%00", "9" * 5000])
def test_a_made_up_position_is_a_gap_and_harms_nothing(since: str) -> None:
    app = resumable_app()
    with TestClient(app) as client, client.websocket_connect("/plain/r") as sender:
        sender.send_text("kept")
        sender.receive_text()
        query = str(httpx.QueryParams(since=since))
        with client.websocket_connect(f"/rooms/r?{query}") as ws:
            assert ws.receive_json() == {"hub": "gap", "group": "r"}
            assert ws.receive_json()["data"] == "kept"
            joined(ws)
            ws.send_text("still fine")
            assert ws.receive_json()["data"] == "still fine"


def test_an_async_handler_resumes_the_same_way() -> None:
    app = resumable_app()
    with TestClient(app) as client:
        with client.websocket_connect("/async/r") as ws:
            at = joined(ws)
            ws.send_text("a")
            assert ws.receive_json()["data"] == "a"
        with client.websocket_connect(f"/async/r?since={at}") as ws:
            assert ws.receive_json()["data"] == "a"
            joined(ws)


def test_resuming_on_a_hub_without_history_is_a_clear_error() -> None:
    app = App()
    errors: list[str] = []

    @app.websocket("/r")
    def room(ws: WebSocket) -> None:
        try:
            app.hub.join("r", ws, since="1-1")
        except ValueError as exc:
            errors.append(str(exc))
        ws.send_text("done")

    with TestClient(app) as client, client.websocket_connect("/r") as ws:
        assert ws.receive_text() == "done"
    assert "Hub(history=N)" in errors[0]


def test_members_joining_while_a_thread_broadcasts_see_every_id_once_in_order() -> None:
    """A thread broadcasts while members come and go with `since`: each member's ids,
    replay and live together, are consecutive, with no repeat and no hole. (The thread
    keeps at most 300 broadcasts unread, so no member falls `max_queue` behind.)"""
    app = resumable_app(history=500)
    stop = threading.Event()
    credit = threading.Semaphore(300)

    def broadcast() -> None:
        n = 0
        while not stop.is_set():
            if credit.acquire(timeout=0.1):
                app.hub.broadcast("r", str(n))
                n += 1

    with TestClient(app) as client:
        with client.websocket_connect("/rooms/r") as ws:
            since = joined(ws)
        broadcaster = threading.Thread(target=broadcast)
        broadcaster.start()
        try:
            for _ in range(5):
                with client.websocket_connect(f"/rooms/r?since={since}") as ws:
                    seen: list[int] = []
                    while len(seen) < 200:
                        message = ws.receive_json()
                        if "id" in message:
                            seen.append(int(message["id"].rsplit("-", 1)[1]))
                            credit.release()
                    assert seen == list(range(seen[0], seen[0] + len(seen)))
                    if since.endswith("-0"):
                        assert seen[0] == 1
                    else:
                        assert seen[0] == int(since.rsplit("-", 1)[1]) + 1
                    since = since.rsplit("-", 1)[0] + f"-{seen[-1]}"
        finally:
            stop.set()
            broadcaster.join(WAIT)


def test_an_sse_stream_resumes_from_last_event_id() -> None:
    app = resumable_app()

    with ThreadServer(app) as server, httpx.Client(timeout=WAIT) as http:
        url = server.http_url("/rooms/r/events")
        with http.stream("GET", url) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            [first] = read_events(lines, 1)
            assert first["event"] == "joined"
            assert json.loads(first["data"]) == {"group": "r", "at": first["id"]}
            assert wait_until(lambda: app.hub.local_count("r") == 1)
            app.hub.broadcast("r", "line one\nline two")
            app.hub.broadcast("r", {"n": 1})
            app.hub.broadcast("r", b"\xff")
            text, data, blob = read_events(lines, 3)
            assert text["data"] == "line one\nline two"
            assert "event" not in text
            assert json.loads(data["data"]) == {"n": 1}
            assert blob["event"] == "binary"
            assert base64.b64decode(blob["data"]) == b"\xff"
        assert wait_until(lambda: app.hub.local_count("r") == 0)
        assert app.hub.count("r") == 0  # a stream is not in the roster
        app.hub.broadcast("r", "while away")
        with http.stream("GET", url, headers={"Last-Event-ID": blob["id"]}) as response:
            missed, notice = read_events(response.iter_lines(), 2)
            assert missed["data"] == "while away"
            assert notice["event"] == "joined"
        with http.stream("GET", url, headers={"Last-Event-ID": "bogus"}) as response:
            gap = read_events(response.iter_lines(), 1)[0]
            assert gap["event"] == "gap"


def test_a_stream_too_far_behind_is_ended_and_leaves_the_group(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = Hub(history=2, max_queue=4)

    async def scenario() -> list[object]:
        stream = hub.stream("g")
        first = await anext(stream)
        assert first.event == "joined"
        assert hub.local_count("g") == 1
        for i in range(10):  # nobody reads: the fifth is one too many
            hub.broadcast("g", str(i))
        rest = [event async for event in stream]
        assert hub.local_count("g") == 0
        return rest

    assert asyncio.run(scenario()) == []
    assert "1008" in caplog.text


def test_a_stream_on_a_hub_without_history_is_refused() -> None:
    async def scenario() -> None:
        with pytest.raises(ValueError, match="history"):
            await anext(Hub().stream("g"))

    asyncio.run(scenario())


def test_history_must_leave_room_in_the_queue() -> None:
    with pytest.raises(ValueError, match="half of max_queue"):
        Hub(history=600)
    assert Hub(history=512).max_queue == 1024
