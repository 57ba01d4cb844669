"""Pages in a real browser: headless Chromium (the system's, driven by Playwright).

Skipped where Chromium or Playwright is missing; CI installs both.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from browsers import ARTIFACTS, CHROMIUM, launched_chromium
from cello import App, ConnectionClosed, Response, WebSocket, ack
from proxy import TcpProxy
from redis_server import RedisServer
from servers import ThreadServer, bound_socket, child_server, subprocess_server

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="the system has no chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    yield from launched_chromium()


def test_dashboard_follows_sse_and_websocket(browser: object, tmp_path: Path) -> None:
    with subprocess_server("examples.dashboard:app") as (_, port):
        page = browser.new_page()  # type: ignore[attr-defined]
        try:
            page.goto(f"http://127.0.0.1:{port}/")
            # Three named `metrics` events through EventSource, three WebSocket pushes.
            page.wait_for_function(
                "Number(document.getElementById('sse').dataset.readings || 0) >= 3",
                timeout=15_000,
            )
            page.wait_for_function(
                "Number(document.getElementById('ws').dataset.readings || 0) >= 3",
                timeout=15_000,
            )
            assert page.inner_text("#sse .status") == "live"
            assert page.inner_text("#ws .status") == "live"
            assert int(page.inner_text("#sse .seq")) >= 3
            assert page.inner_text("#ws .viewers") == "1"
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            page.close()


def feed_server(redis_url: str) -> Any:
    """`examples.live_feed` in a child uvicorn on a free port, on the shared Redis hub."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    cmd = [
        sys.executable, "-m", "uvicorn", "examples.live_feed:app", "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip
    return child_server(cmd, port, env={"CELLO_HUB_URL": redis_url}), port


def test_the_feed_page_misses_nothing_through_a_network_drop_and_a_server_restart(
    browser: object, redis: RedisServer
) -> None:
    """The page (cello.js) is connected to one server through a proxy; posts go to a
    second server; the network drops (the proxy resets every connection), then the first
    server restarts (on another port, the proxy following it). The page reconnects by
    itself each time and shows every post once, in order, without a gap."""
    total = 300
    publisher_cm, publisher_port = feed_server(redis.url)
    viewer_cm, viewer_port = feed_server(redis.url)
    with (
        publisher_cm,
        contextlib.ExitStack() as viewer,
        TcpProxy(viewer_port) as proxy,
        httpx.Client(timeout=10) as http,
    ):
        viewer.enter_context(viewer_cm)
        page = browser.new_page()  # type: ignore[attr-defined]
        try:
            page.goto(f"http://127.0.0.1:{proxy.port}/")
            page.wait_for_function("window.feed && window.feed.opens === 1", timeout=15_000)
            for n in range(total):
                posted = http.post(f"http://127.0.0.1:{publisher_port}/feed", json={"text": str(n)})
                posted.raise_for_status()
                if n == total // 3:
                    proxy.cut()  # the network drops; posts go on while the page is away
                if n == total // 2:
                    page.wait_for_function("window.feed.opens === 2", timeout=15_000)
                if n == 2 * total // 3:
                    viewer.close()  # the viewer's server stops (SIGTERM)...
                    restarted_cm, restarted_port = feed_server(redis.url)
                    viewer.enter_context(restarted_cm)  # ...and starts again elsewhere
                    proxy.upstream = restarted_port
                if n == 5 * total // 6:
                    page.wait_for_function("window.feed.opens === 3", timeout=15_000)
            page.wait_for_function(f"window.feed.texts.length >= {total}", timeout=30_000)
            feed = page.evaluate("window.feed")
        finally:
            page.close()
    assert feed["texts"] == [str(n) for n in range(total)]
    assert len(set(feed["ids"])) == total
    assert feed["gaps"] == 0
    # The drop (1006), then the restart (1012, "service restart"), then one or more
    # attempts while the server was down (1006); reconnected after each.
    assert feed["closes"][:2] == [1006, 1012], feed["log"]
    assert feed["opens"] == 3, feed["log"]


def requests_app() -> App:
    """`/ws` answers `echo` requests, refuses `fail` ones, ignores `silent` ones and
    closes on `leave` with the code asked for; `/` is an empty page that can import."""
    app = App()
    app.enable_client()

    @app.get("/")
    def page() -> Response:
        return Response.html("<!doctype html><title>requests</title>")

    @app.websocket("/ws")
    def handler(ws: WebSocket) -> None:
        while True:
            try:
                message = ws.recv_json()
            except ConnectionClosed:
                return
            if message.get("type") == "echo":
                ws.send_json(ack(message, message.get("data")))
            elif message.get("type") == "fail":
                ws.send_json(ack(message, error="refused: " + str(message.get("data"))))
            elif message.get("type") == "leave":
                ws.close(message["data"])
                return
            else:
                ws.send_text("plain text")

    return app


REQUESTS = """async () => {
  const { connect } = await import("/cello.js");
  const client = connect("/ws", { backoff: { initial: 50, max: 100 } });
  const events = [];
  client.on("open", () => events.push("open"));
  client.on("close", ({ code, reconnect }) => events.push(`close ${code} ${reconnect}`));
  client.on("message", ({ data }) => events.push(`message ${data}`));
  const queued = client.request("echo", { n: 1 });  // sent once connected
  const echoed = await queued;
  let failed = null;
  try { await client.request("fail", "nope"); } catch (e) { failed = e.message; }
  let late = null;
  try { await client.request("silent", {}, { timeout: 200 }); } catch (e) { late = e.message; }
  client.send("leave", 4001);  // an application's code: not reconnected
  await new Promise((resolve) => client.on("close", resolve));
  await new Promise((resolve) => setTimeout(resolve, 300));
  return { echoed, failed, late, events, connected: client.connected };
}"""


def test_the_client_makes_requests_and_stops_on_an_application_close(browser: object) -> None:
    with ThreadServer(requests_app()) as server:
        page = browser.new_page()  # type: ignore[attr-defined]
        try:
            page.goto(server.http_url("/"))
            result = page.evaluate(REQUESTS)
        finally:
            page.close()
    assert result["echoed"] == {"n": 1}
    assert result["failed"] == "refused: nope"
    assert result["late"] == "no answer to silent within 200 ms"
    assert result["events"] == ["open", "message plain text", "close 4001 false"]
    assert result["connected"] is False
