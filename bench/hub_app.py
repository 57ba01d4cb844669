"""The hub fan-out benchmark's server: every connection joins one room, every message from
a member is broadcast to the room through `app.hub` (its backend from `CELLO_HUB_URL`)."""

from __future__ import annotations

from cello import App, WebSocket

app = App()


@app.websocket("/fanout")
def member(ws: WebSocket) -> None:
    app.hub.join("room", ws)
    ws.send_text("joined")  # the greeting: the member is in the room
    for msg in ws:
        app.hub.broadcast("room", msg.text or "")


@app.websocket("/greet")
def greet(ws: WebSocket) -> None:
    ws.send_text("hi")
    for _ in ws:
        pass


@app.websocket("/member/{group}")
def group_member(ws: WebSocket) -> None:
    """A member of one group that only listens (the 100-group benchmark's receivers)."""
    app.hub.join(ws.request.params["group"], ws)
    ws.send_text("joined")
    for _ in ws:
        pass
