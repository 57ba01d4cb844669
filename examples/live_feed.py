"""A live feed that nothing is lost from: the hub's history and the browser client.

Everyone on the page sees the same feed. Posts go out to every open page; a page whose
connection drops (Wi-Fi, a laptop lid, the server restarting) reconnects by itself and
gets what was posted meanwhile, once and in order, from the last id it saw.

Run: python examples/live_feed.py   (or: uvicorn examples.live_feed:app)
Then open http://127.0.0.1:8000/ in a few tabs, post, stop and start the server.

With `CELLO_HUB_URL=redis://127.0.0.1:6379/0` the feed's history is kept in Redis and
shared by every process, so a page may reconnect to another one (or to this one after a
restart) and still miss nothing.

* `GET /cello.js`: the browser client (`app.enable_client()`).
* `WS /ws/feed`: joins the feed resumably (`?since=` from the client); a `post` request
  (`{"type": "post", "data": {"text": ...}, "ack": n}`) is broadcast and acknowledged.
* `POST /feed` with `{"text": ...}`: posts from anywhere else (a script, a webhook).
"""

import os
from pathlib import Path

from cello import App, ConnectionClosed, Hub, Response, ack

STATIC = Path(__file__).parent / "static"
MAX_TEXT = 500

app = App(hub=Hub(os.environ.get("CELLO_HUB_URL") or None, history=1000, max_queue=4096))
app.enable_client()  # GET /cello.js


@app.get("/")
def page():
    return Response.html((STATIC / "feed.html").read_text())


@app.websocket("/ws/feed")
def feed(ws, request):
    app.hub.join("feed", ws, resumable=True, since=request.query.get("since"))
    while True:
        try:
            message = ws.recv_json()
            if isinstance(message, dict) and message.get("type") == "post":
                post_from_page(ws, message)
        except ValueError:
            continue  # not JSON, or not a request (no `ack` number): not from the page
        except ConnectionClosed:
            break


def post_from_page(ws, message):
    """A `post` request: broadcast it and answer (`ack` raises ValueError for a message
    that is not a request)."""
    data = message.get("data")
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        ws.send_json(ack(message, error=f"a post is 1-{MAX_TEXT} characters of text"))
        return
    answer = ack(message, {"posted": True})  # before broadcasting: a request, or nothing
    app.hub.broadcast("feed", {"text": text})
    ws.send_json(answer)


@app.post("/feed")
def post(request):
    body = request.json()
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        return Response.json({"detail": f'send {{"text": ...}}, at most {MAX_TEXT}'}, 400)
    app.hub.broadcast("feed", {"text": text})
    return {"posted": True}


if __name__ == "__main__":
    app.run()
