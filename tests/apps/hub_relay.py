"""A hub app for the cross-process tests: its hub comes from `CELLO_HUB_URL`.

A client of `/ws/{group}` joins the group and is greeted with the worker's pid; every
text it sends is broadcast to the group.
"""

import os
import time

from cello import App, Request, WebSocket

app = App()


@app.websocket("/ws/{group}")
def member(ws: WebSocket, request: Request) -> None:
    group = request.params["group"]
    app.hub.join(group, ws).wait()  # other processes' broadcasts reach it from here
    ws.send_json({"pid": os.getpid(), "backend": app.hub.backend})
    for msg in ws:
        app.hub.broadcast(group, msg.text or "")


@app.get("/hold")
async def hold() -> dict[str, int]:
    """Block this worker's event loop for half a second (a test aid): connections opened
    meanwhile can only be accepted by the other workers."""
    time.sleep(0.5)  # noqa: ASYNC251 - blocking the loop is the point
    return {"pid": os.getpid()}
