"""Server-Sent Events: the wire format, and live streams through a real uvicorn and httpx."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from cello import App, Request, Response
from cello.sse import SseEvent, SseStream
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
