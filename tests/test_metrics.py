"""`app.metrics`: scraped from a real uvicorn, in Prometheus' text format, while clients
connect, talk, fall behind and leave."""

from __future__ import annotations

import re

import httpx
import pytest
from websockets.sync.client import connect

from cello import App, Hub, Response
from cello.metrics import CONTENT_TYPE
from cello.testing import TestClient, WebSocketUpgradeError
from servers import ThreadServer, raw_upgrade, wait_until

pytestmark = pytest.mark.usefixtures("websocket_runner")

WAIT = 5
SAMPLE = re.compile(r"^([a-z_]+)(?:\{([^}]*)\})? (\d+)$")


def parse(text: str) -> dict[str, float]:
    """The samples of a text-format scrape, keyed `name` or `name{labels}`; every metric
    has its HELP and TYPE lines, and every line is well formed."""
    samples: dict[str, float] = {}
    declared: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge"), line
            assert kind != "counter" or name.endswith("_total"), line
            declared[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match is not None, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        assert name in declared, f"{name} has no TYPE line"
        samples[f"{name}{{{labels}}}" if labels else name] = float(value)
    return samples


def metrics_app() -> App:
    app = App()
    app.enable_metrics()

    @app.websocket("/echo")
    def echo(ws):  # type: ignore[no-untyped-def]
        for msg in ws:
            ws.send_text(msg.text)

    @app.websocket("/room")
    def room(ws):  # type: ignore[no-untyped-def]
        app.hub.join("room", ws)
        for msg in ws:
            app.hub.broadcast("room", msg.text)

    @app.get("/boom")
    def boom(request):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    @app.get("/hello")
    def hello(request):  # type: ignore[no-untyped-def]
        return Response.text("hi")

    return app


def scrape(client: httpx.Client) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    return parse(response.text)


def test_a_scrape_counts_connections_messages_and_requests() -> None:
    app = metrics_app()
    with ThreadServer(app) as server, httpx.Client(base_url=server.http_url("")) as client:
        first = scrape(client)
        assert first["cello_websocket_connections"] == 0
        assert first["cello_websocket_connections_total"] == 0
        assert first["cello_hub_groups"] == 0
        assert "cello_hub_relay_connected" not in first  # in-memory hub

        with connect(server.url("/echo")) as a, connect(server.url("/room")) as b:
            for n in range(3):
                a.send(f"m{n}")
                assert a.recv(WAIT) == f"m{n}"
            b.send("to the room")
            assert b.recv(WAIT) == "to the room"
            live = scrape(client)
            assert live["cello_websocket_connections"] == 2
            assert live["cello_websocket_connections_total"] == 2
            assert live["cello_websocket_messages_received_total"] == 4
            assert live["cello_websocket_messages_sent_total"] == 4
            assert live["cello_hub_groups"] == 1
            b.close(4000)
        assert wait_until(lambda: len(app.live_channels) == 0)

        assert client.get("/hello").status_code == 200
        assert client.get("/boom").status_code == 500
        assert client.get("/nowhere").status_code == 404
        assert client.get("/echo").status_code == 426
        done = scrape(client)
        assert done["cello_websocket_connections"] == 0
        assert done["cello_websocket_connections_total"] == 2
        assert done['cello_websocket_closes_total{code="1000"}'] == 1
        assert done['cello_websocket_closes_total{code="4000"}'] == 1
        assert done["cello_websocket_messages_received_total"] == 4
        assert done["cello_websocket_messages_sent_total"] == 4
        assert done["cello_websocket_queued_messages"] == 0
        assert done["cello_websocket_dropped_slow_total"] == 0
        assert done['cello_http_requests_total{status="200"}'] >= 3  # /hello and the scrapes
        assert done['cello_http_requests_total{status="500"}'] == 1
        assert done['cello_http_requests_total{status="404"}'] == 1
        assert done['cello_http_requests_total{status="426"}'] == 1


def test_refused_upgrades_are_not_connections() -> None:
    app = App()

    @app.websocket("/closed", guard=lambda request: False)
    def closed(ws):  # type: ignore[no-untyped-def]
        pass

    with TestClient(app) as client:
        with pytest.raises(WebSocketUpgradeError):
            client.websocket_connect("/closed").__enter__()
        samples = parse(app.metrics.render())
    assert samples["cello_websocket_connections_total"] == 0
    assert not any(key.startswith("cello_websocket_closes_total{") for key in samples)


def test_a_member_dropped_as_too_slow_is_counted() -> None:
    app = App(hub=Hub(max_queue=64))

    @app.websocket("/slow")
    def slow(ws):  # type: ignore[no-untyped-def]
        app.hub.join("g", ws)
        for _ in ws:
            pass

    with ThreadServer(app, ws="websockets-sansio") as server:
        stuck = raw_upgrade(server.port, "/slow", rcvbuf=4096)  # never reads
        assert wait_until(lambda: app.hub.count("g") == 1)
        payload = "x" * 8192
        for _ in range(5000):  # fills its socket, then its queue past max_queue
            app.hub.broadcast("g", payload)
            if not app.hub.count("g"):
                break
        assert wait_until(lambda: not app.live_channels)
        stuck.close()
        samples = parse(app.metrics.render())
    assert samples["cello_websocket_dropped_slow_total"] == 1
    assert samples['cello_websocket_closes_total{code="1008"}'] == 1


def test_async_handlers_messages_are_counted() -> None:
    app = App()

    @app.websocket("/aecho")
    async def aecho(ws):  # type: ignore[no-untyped-def]
        async for msg in ws:
            await ws.send_text(msg.text)

    with TestClient(app) as client:
        with client.websocket_connect("/aecho") as ws:
            for text in ("a", "b"):
                ws.send_text(text)
                assert ws.receive_text() == text
            live = parse(app.metrics.render())
            assert live["cello_websocket_connections"] == 1
            assert live["cello_websocket_messages_received_total"] == 2
            assert live["cello_websocket_messages_sent_total"] == 2
        assert wait_until(lambda: not app.live_channels)
        done = parse(app.metrics.render())
    assert done['cello_websocket_closes_total{code="1000"}'] == 1
    assert done["cello_websocket_messages_sent_total"] == 2
