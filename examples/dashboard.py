"""A live dashboard: one app serving a page, Server-Sent Events and a WebSocket.

A background thread samples the server's metrics twice a second and pushes them to every
WebSocket client with plain `send_text` calls; the same figures stream as named SSE
events to browsers following `/events` with `EventSource`. The page at `/` shows both; its
WebSocket is cello's browser client (`/cello.js`), which reconnects by itself.

Run: python examples/dashboard.py   (or: uvicorn examples.dashboard:app)
Then open http://127.0.0.1:8000/
"""

import json
import os
import resource
import threading
import time
from pathlib import Path

from cello import App, ConnectionClosed, Response
from cello.sse import SseEvent

app = App()
app.enable_client()  # GET /cello.js, for the page's WebSocket
PAGE = Path(__file__).parent / "static" / "dashboard.html"
INTERVAL = 0.5

viewers = set()  # WebSockets watching the dashboard
viewers_lock = threading.Lock()
stop = threading.Event()


def sample(seq):
    """One reading of the server's own figures."""
    return {
        "seq": seq,
        "time": round(time.time(), 3),
        "load": os.getloadavg()[0],
        "rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "viewers": len(viewers),
    }


def push_metrics():
    """The background thread: every INTERVAL, send a reading to every viewer."""
    seq = 0
    while not stop.wait(INTERVAL):
        seq += 1
        message = json.dumps(sample(seq))
        with viewers_lock:
            targets = list(viewers)
        for ws in targets:
            try:
                ws.send_text(message)
            except ConnectionClosed:
                pass  # it left; its handler removes it


@app.on_startup
def start_pushing():
    stop.clear()
    threading.Thread(target=push_metrics, name="dashboard-metrics", daemon=True).start()


@app.on_shutdown
def stop_pushing():
    stop.set()


@app.get("/")
def page():
    return Response.html(PAGE.read_text())


@app.websocket("/ws/metrics")
def metrics_socket(ws):
    with viewers_lock:
        viewers.add(ws)
    try:
        for _ in ws:  # viewers only listen; wait here until they leave
            pass
    finally:
        with viewers_lock:
            viewers.discard(ws)


@app.get("/events")
def metrics_events(request):
    """Named SSE events, resuming after the browser's Last-Event-ID on reconnect."""
    start = int(request.headers.get("last-event-id", "0") or 0)

    def readings():
        seq = start
        while not stop.is_set():
            seq += 1
            yield SseEvent(json.dumps(sample(seq)), event="metrics", id=str(seq))
            time.sleep(INTERVAL)

    return Response.sse(readings())


if __name__ == "__main__":
    app.run()
