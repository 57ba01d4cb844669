"""A presence app for the cross-process tests: its hub is on the Redis of `CELLO_HUB_URL`,
with the heartbeat timing of `CELLO_TEST_PRESENCE` (`interval,ttl` in seconds).

A client of `/ws/{group}?nick=...` joins the group under that nickname (watching its joins
and leaves with `&watch=1`) and is greeted with the worker's pid and the group's members;
any message it sends asks for them again. `GET /members/{group}` answers the same.
"""

import os

from cello import App, Hub, Request, WebSocket

interval, ttl = (float(x) for x in os.environ.get("CELLO_TEST_PRESENCE", "0.2,1").split(","))
app = App(hub=Hub(os.environ["CELLO_HUB_URL"], presence_interval=interval, presence_ttl=ttl))


def roster(group: str) -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "members": app.hub.members(group),
        "count": app.hub.count(group),
        "local": app.hub.local_count(group),
    }


@app.websocket("/ws/{group}")
def member(ws: WebSocket, request: Request) -> None:
    group = request.params["group"]
    watch = request.query.get("watch") == "1"
    app.hub.join(group, ws, member=request.query.get("nick"), presence=watch)
    ws.send_json(roster(group))
    for _ in ws:
        ws.send_json(roster(group))


@app.get("/members/{group}")
async def members(request: Request) -> dict[str, object]:
    return roster(request.params["group"])
