"""Server-Sent Events: the wire format, and live streams through a real uvicorn and httpx."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from cello import App, Request, Response
from cello.sse import SseEvent, SseResponse, SseStream, sse_response
from servers import ThreadServer

WAIT = 10


def test_event_wire_format() -> None:
    assert SseEvent.data("hello").to_sse_string() == "data: hello\n\n"
    assert SseEvent.data("x").data == "x"
    named = SseEvent.with_event("tick", "1")
    assert named.to_sse_string() == "event: tick\ndata: 1\n\n"
    full = SseEvent("line one\nline two", event="update", id="7", retry=3000)
    assert full.to_sse_string() == (
        "event: update\nid: 7\nretry: 3000\ndata: line one\ndata: line two\n\n"
    )
    with pytest.raises(ValueError, match="line break"):
        SseEvent("x", event="bad\nname")


def test_stream_collects_events() -> None:
    stream = SseStream()
    assert stream.is_empty()
    stream.add(SseEvent.data("a"))
    stream.add_data("b")
    stream.add_event("named", "c")
    assert stream.len() == len(stream) == 3
    assert not stream.is_empty()
    assert [e.data for e in stream] == ["a", "b", "c"]


class Probe:
    """What a live source did: when each event was produced, and whether it was closed."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.produced: list[float] = []


def sse_app(probe: Probe) -> App:
    app = App()

    @app.get("/whole")
    def whole() -> Response:
        stream = SseStream()
        stream.add_data("first")
        stream.add_event("second", "2")
        return Response.sse(stream)

    @app.get("/sync")
    def sync_source(request: Request) -> Response:
        count = int(request.query.get("count", "3"))

        def ticks() -> Iterator[SseEvent]:
            try:
                for n in range(count):
                    probe.produced.append(time.monotonic())
                    yield SseEvent(str(n), event="tick", id=str(n))
                    time.sleep(0.3)
            finally:
                probe.closed.set()

        return Response.sse(ticks())

    @app.get("/async")
    async def async_source(request: Request) -> Response:
        count = int(request.query.get("count", "3"))

        async def ticks() -> AsyncIterator[object]:
            try:
                for n in range(count):
                    probe.produced.append(time.monotonic())
                    yield {"n": n}
                    await asyncio.sleep(0.3)
            finally:
                probe.closed.set()

        return Response.sse(ticks())

    @app.get("/idle")
    async def idle() -> Response:
        async def nothing_for_a_while() -> AsyncIterator[str]:
            await asyncio.sleep(0.7)
            yield "finally"

        return Response.sse(nothing_for_a_while(), keepalive=0.2)

    @app.get("/resume")
    def resume(request: Request) -> Response:
        last = int(request.headers.get("last-event-id", "0"))
        return Response.sse(SseStream([SseEvent(str(n), id=str(n)) for n in (last + 1, last + 2)]))

    return app


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def base(probe: Probe) -> Iterator[str]:
    with ThreadServer(sse_app(probe), ws="websockets-sansio") as server:
        yield server.http_url("")


def read_events(response: httpx.Response, count: int) -> list[tuple[float, str]]:
    """The first `count` events' text, each with the time its last line arrived."""
    events: list[tuple[float, str]] = []
    lines: list[str] = []
    for line in response.iter_lines():
        if line:
            lines.append(line)
            continue
        if lines:
            events.append((time.monotonic(), "\n".join(lines)))
            lines = []
            if len(events) == count:
                break
    return events


def test_headers_and_a_whole_stream(base: str) -> None:
    with httpx.Client(timeout=WAIT) as http:
        response = http.get(f"{base}/whole")
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.text == "data: first\n\nevent: second\ndata: 2\n\n"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_live_events_arrive_as_produced(base: str, probe: Probe, kind: str) -> None:
    with httpx.Client(timeout=WAIT) as http, http.stream("GET", f"{base}/{kind}") as response:
        events = read_events(response, 3)
    expected = (
        [
            "event: tick\nid: 0\ndata: 0",
            "event: tick\nid: 1\ndata: 1",
            "event: tick\nid: 2\ndata: 2",
        ]
        if kind == "sync"
        else ['data: {"n": 0}', 'data: {"n": 1}', 'data: {"n": 2}']
    )
    assert [text for _, text in events] == expected
    # Incremental: each event arrived about when it was produced, not all at the end.
    arrivals = [at for at, _ in events]
    assert arrivals[2] - arrivals[0] > 0.4
    assert all(at - made < 0.25 for at, made in zip(arrivals, probe.produced, strict=False))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_source_is_closed_when_the_client_leaves(base: str, probe: Probe, kind: str) -> None:
    with (
        httpx.Client(timeout=WAIT) as http,
        http.stream("GET", f"{base}/{kind}", params={"count": "1000"}) as response,
    ):
        read_events(response, 2)
        left = time.monotonic()
    assert probe.closed.wait(5), "the generator's finally did not run"
    assert time.monotonic() - left < 3
    produced = len(probe.produced)
    time.sleep(0.8)
    assert len(probe.produced) == produced  # and it produces nothing more


def test_keepalive_comments_on_an_idle_stream(base: str) -> None:
    with httpx.Client(timeout=WAIT) as http:
        body = http.get(f"{base}/idle").text
    assert body.count(": keepalive\n\n") >= 2
    assert body.endswith("data: finally\n\n")


def test_last_event_id_lets_a_client_resume(base: str) -> None:
    with httpx.Client(timeout=WAIT) as http:
        body = http.get(f"{base}/resume", headers={"Last-Event-ID": "41"}).text
    assert body == "id: 42\ndata: 42\n\nid: 43\ndata: 43\n\n"


def test_the_in_process_client_reads_a_stream() -> None:
    from cello.testing import TestClient

    with TestClient(sse_app(Probe())) as client:
        response = client.get("/whole")
    assert response.text == "data: first\n\nevent: second\ndata: 2\n\n"


# ----------------------------------------------------------------- hostile text


def parse_stream(body: str) -> list[dict[str, str]]:
    """The events a browser's `EventSource` dispatches from `body`, following the spec's
    parsing rules: lines end at CRLF, CR or LF; `field: value` with one leading space
    dropped; a blank line dispatches the event; events with no data are not dispatched."""
    events: list[dict[str, str]] = []
    data: list[str] = []
    event_type = ""
    last_id = ""
    for line in re.split(r"\r\n|\r|\n", body):
        if not line:
            if data:
                events.append(
                    {"type": event_type or "message", "data": "\n".join(data), "id": last_id}
                )
            data, event_type = [], ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and not value.isdigit():
            raise AssertionError(f"a retry field a browser would ignore: {line!r}")
        elif name not in ("id", "retry"):
            raise AssertionError(f"an unknown field a browser would ignore: {line!r}")
    return events


#: Chat text a client could get echoed into an event: every kind of line break.
HOSTILE = "hi\revent: admin\rid: 666\r\nretry: 1\ndata: x\r\rtab\x0bff\x0cls\u2028end\r"


def test_data_line_breaks_never_make_fields() -> None:
    wire = SseEvent(HOSTILE, event="chat", id="7").to_sse_string()
    # Every line the spec sees (CR, LF and CRLF all end one) is a data line but the two set.
    lines = re.split(r"\r\n|\r|\n", wire)
    assert lines[:2] == ["event: chat", "id: 7"]
    assert all(line.startswith("data: ") for line in lines[2:-2]), lines
    assert lines[-2:] == ["", ""]
    # A browser gets one event, its text intact but for line breaks, each now "\n";
    # \x0b, \x0c and U+2028 are not SSE line ends and stay as they are.
    expected = "hi\nevent: admin\nid: 666\nretry: 1\ndata: x\n\ntab\x0bff\x0cls\u2028end\n"
    assert parse_stream(wire) == [{"type": "chat", "data": expected, "id": "7"}]
    assert parse_stream(SseEvent("a\r\nb\rc\nd").to_sse_string())[0]["data"] == "a\nb\nc\nd"


def test_hostile_data_through_a_real_server() -> None:
    """What a client reading the wire bytes of a live stream sees."""
    app = App()

    @app.get("/echo")
    async def echo() -> Response:
        async def said() -> AsyncIterator[object]:
            yield HOSTILE
            yield SseEvent(HOSTILE, event="chat", id="1")
            yield {"text": HOSTILE}

        return Response.sse(said())

    with ThreadServer(app, ws="websockets-sansio") as server, httpx.Client(timeout=WAIT) as http:
        body = http.get(server.http_url("/echo")).content.decode()
    as_seen = "hi\nevent: admin\nid: 666\nretry: 1\ndata: x\n\ntab\x0bff\x0cls\u2028end\n"
    assert parse_stream(body) == [
        {"type": "message", "data": as_seen, "id": ""},
        {"type": "chat", "data": as_seen, "id": "1"},
        {"type": "message", "data": json.dumps({"text": HOSTILE}), "id": "1"},
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event", "a\nb"),
        ("event", "a\rb"),
        ("event", "a\r\nb"),
        ("id", "a\nb"),
        ("id", "x\ry"),
        ("id", "x\0y"),
    ],
)
def test_fields_refuse_line_breaks_however_set(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        SseEvent("x", **{field: value})  # type: ignore[arg-type]
    event = SseEvent("x", event="ok", id="1")
    with pytest.raises(ValueError, match=field):
        setattr(event, field, value)
    assert (event.event, event.id) == ("ok", "1")  # unchanged
    assert event.to_sse_string() == "event: ok\nid: 1\ndata: x\n\n"


def test_retry_is_a_non_negative_int() -> None:
    assert SseEvent("x", retry=0).to_sse_string() == "retry: 0\ndata: x\n\n"
    event = SseEvent("x")
    for bad in (-1, "5\nevent: admin", 1.5, True):
        with pytest.raises((ValueError, TypeError)):
            SseEvent("x", retry=bad)  # type: ignore[arg-type]
        with pytest.raises((ValueError, TypeError)):
            event.retry = bad  # type: ignore[assignment]
    assert event.retry is None
    event.retry = 2500
    assert event.to_sse_string() == "retry: 2500\ndata: x\n\n"


# ----------------------------------------------------------------- each app's live streams


def test_finished_streams_are_not_kept() -> None:
    from cello.testing import TestClient

    app = App()
    sent: list[weakref.ref[SseResponse]] = []

    @app.get("/events")
    def events(request: Request) -> SseResponse:
        source = SseStream([SseEvent("a")]) if "whole" in request.query else iter(["b"])
        response = sse_response(source)
        sent.append(weakref.ref(response))
        return response

    with TestClient(app) as client:
        for n in range(200):
            query = "whole" if n % 2 else "live"
            assert client.get(f"/events?{query}").text in ("data: a\n\n", "data: b\n\n")
        assert len(app.live_streams) == 0
    assert len(sent) == 200
    gc.collect()
    assert [ref for ref in sent if ref() is not None] == []  # nothing else holds them


class Ticker:
    """An app whose `/ticks` streams an event every 50 ms until the client or server ends it."""

    def __init__(self) -> None:
        self.app = App()
        self.produced = 0
        self.closed = threading.Event()

        @self.app.get("/ticks")
        async def ticks() -> Response:
            async def forever() -> AsyncIterator[str]:
                try:
                    for n in itertools.count():
                        self.produced = n + 1
                        yield str(n)
                        await asyncio.sleep(0.05)
                finally:
                    self.closed.set()

            return Response.sse(forever())


def next_data(lines: Iterator[str]) -> str | None:
    """The data of the next event from a stream's lines; `None` once the stream has ended."""
    return next((line.removeprefix("data: ") for line in lines if line.startswith("data:")), None)


def test_shutting_down_one_app_ends_only_its_own_streams() -> None:
    one, other = Ticker(), Ticker()
    with (
        ThreadServer(other.app, ws="websockets-sansio") as other_server,
        ThreadServer(one.app, ws="websockets-sansio", timeout_graceful_shutdown=10) as server,
        httpx.Client(timeout=WAIT) as http,
        http.stream("GET", other_server.http_url("/ticks")) as staying,
        http.stream("GET", server.http_url("/ticks")) as leaving,
    ):
        staying_lines, leaving_lines = staying.iter_lines(), leaving.iter_lines()
        assert next_data(staying_lines) == next_data(leaving_lines) == "0"
        assert len(one.app.live_streams) == len(other.app.live_streams) == 1
        stopping = time.monotonic()
        server.server.should_exit = True  # shut one server down, both clients still reading
        server.thread.join(WAIT)
        assert not server.thread.is_alive()
        assert time.monotonic() - stopping < 5, "shutdown waited for its stream to time out"
        assert one.closed.is_set()
        assert len(one.app.live_streams) == 0
        for _ in leaving_lines:  # ends: the server ended the response cleanly
            pass
        # The other app's stream goes on, its source open: five events later, still there.
        last = str(other.produced + 5)
        while (data := next_data(staying_lines)) not in (last, None):
            pass
        assert data == last, "the other app's stream ended"
        assert not other.closed.is_set()
        assert len(other.app.live_streams) == 1
    assert other.closed.wait(WAIT)
    assert len(other.app.live_streams) == 0
