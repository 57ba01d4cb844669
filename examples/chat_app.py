"""A chat app: rooms, nicknames, join/leave notices and a member list, on the hub.

The app serves its own page (`static/chat.html`, with `chat.js` and `chat.css`) and cello's
browser client (`app.enable_client()`: `/cello.js`). The page asks for a nickname and
opens `ws://…/ws/rooms/{room}?nick=…&client=…`; every message and notice of a room goes to
its members as one `app.hub.broadcast`. When the socket drops (the server restarts, the
network blinks), the browser client reconnects with growing delays and the page joins
again under the same nickname.

Run: python examples/chat_app.py   (or: uvicorn examples.chat_app:app)
Then open http://127.0.0.1:8000/ in two browser tabs.

The protocol, all JSON text messages:

* client → server: `{"type": "message", "data": {"text": "..."}}` (what the page's
  browser client, `/cello.js`, sends with `send("message", {text})`), or
  `{"type": "message", "text": "..."}`.
* server → client: `welcome` (to the newcomer: `room`, `nick`, `members`), then `joined`
  and `left` (`nick`) and `message` (`nick`, `text`, `time` in ms since the epoch) as
  they happen, and `error` (to one client; after a bad message the connection stays
  open). A bad room name or nickname gets an `error`, then a close with code 4000.

Who is in a room comes from the hub's presence (`app.hub.join(room, ws, member=...)`,
`app.hub.members(room)`), so with `CELLO_HUB_URL=redis://127.0.0.1:6379/0` set and
several processes the `welcome`'s member list, the taken-nickname check and the
`joined`/`left` notices cover every process, as do the messages. `GET
/rooms/{room}/members` lists a room's nicknames (and counts its sockets).

Across processes a nickname is checked, then taken, in two steps: two tabs asking for the
same one in two processes within a few milliseconds can both get it. The members of a
process that dies without shutting down (killed, its host lost) leave the member list
within the hub's presence bound (20 s by default), but the pages are not sent a `left`
notice for them.
"""

import json
import re
import threading
import time
from pathlib import Path

from cello import App, ConnectionClosed, Response

app = App()
app.enable_client()  # GET /cello.js: the page's connection
STATIC = Path(__file__).parent / "static"
#: Content types not left to a guess (`mimetypes` reads the system's tables).
TYPES = {".js": "text/javascript", ".css": "text/css"}

NAME = re.compile(r"[A-Za-z0-9_-]{1,24}")
MAX_TEXT = 500
#: Close codes of our own (4000-4999 belong to the application): a join refused, and a
#: connection replaced by the same page's newer one (neither is retried by the page).
REFUSED = 4000
REPLACED = 4001

#: room -> nick -> (client id, connection): this process's connections, so a page that
#: reconnects to the same process can close its stale one. Who is in a room, in every
#: process, is the hub's `members(room)`: {"nick": ..., "client": ...} each.
rooms = {}
rooms_lock = threading.Lock()


@app.get("/")
def home():
    return Response.redirect("/rooms/lobby")


@app.get("/rooms/{room}")
def chat_page(request):
    if not NAME.fullmatch(request.params["room"]):
        return Response.json({"detail": "a room name is 1-24 letters, digits, - or _"}, 404)
    return Response.html((STATIC / "chat.html").read_text())


@app.get("/rooms/{room}/members")
def room_members(request):
    """The room's nicknames, and how many sockets they have open (a page may have two)."""
    room = request.params["room"]
    return {"room": room, "members": members_of(room), "connections": app.hub.count(room)}


@app.get("/static/{name}")
def asset(request):
    # `directory=`: the client picks the name, so only files inside static/ are served
    # (`..`, an absolute path or a symlink out of it gets a 404).
    name = request.params["name"]
    return Response.file(name, directory=STATIC, content_type=TYPES.get(Path(name).suffix))


def members_of(room):
    """The nicknames in the room, in every process (a page's two sockets count once)."""
    return sorted({member["nick"] for member in app.hub.members(room)})


def join_error(room, nick, client):
    """Why this nickname may not join this room, or `None`."""
    if not NAME.fullmatch(room):
        return "a room name is 1-24 letters, digits, - or _"
    if not NAME.fullmatch(nick):
        return "a nickname is 1-24 letters, digits, - or _"
    for member in app.hub.members(room):
        if member["nick"] == nick and member["client"] != client:
            return f"{nick} is already in {room}"
    return None


def read_text(msg):
    """The text of a client's chat message and `None`, or `None` and why it is refused."""
    if not msg.is_text():
        return None, "messages are JSON text"
    try:
        message = json.loads(msg.text)
    except ValueError:
        return None, "messages are JSON text"
    if not isinstance(message, dict) or message.get("type") != "message":
        return None, 'send {"type": "message", "text": "..."}'
    data = message.get("data")  # cello.js sends {"type", "data"}; a plain client may not
    text = data.get("text") if isinstance(data, dict) else message.get("text")
    if not isinstance(text, str) or not text.strip():
        return None, "a message needs some text"
    if len(text) > MAX_TEXT:
        return None, f"a message is at most {MAX_TEXT} characters"
    return text, None


def enter(room, nick, client, ws):
    """Add `ws` to the room as `nick`, welcome it and tell the others; or say why not."""
    with rooms_lock:
        error = join_error(room, nick, client)
        if error is not None:
            return error
        # The same page may still be here under an older socket (the network blinked, in
        # this process or another): then nobody is told of a join.
        returning = nick in members_of(room)
        here = rooms.setdefault(room, {})
        previous = here.get(nick)
        if previous is not None:  # in this process: close the stale socket now
            app.hub.leave(room, previous[1])
            previous[1].close(REPLACED, "replaced by a new connection")
        # Welcome first, then join the group: notices from this process are sent under
        # this lock, so the welcome is the newcomer's first message and its list is current.
        everyone = sorted({*members_of(room), nick})
        ws.send_json({"type": "welcome", "room": room, "nick": nick, "members": everyone})
        app.hub.join(room, ws, member={"nick": nick, "client": client})
        here[nick] = (client, ws)
        if not returning:
            app.hub.broadcast(room, {"type": "joined", "nick": nick}, exclude=ws)
        return None


def leave(room, nick, ws):
    """Take `ws` out of the room, and tell the others if its nickname is gone from it (not
    when a newer connection of the same page took over, here or in another process)."""
    with rooms_lock:
        app.hub.leave(room, ws)
        here = rooms.get(room, {})
        if here.get(nick, (None, None))[1] is not ws:
            return  # it never entered, or a newer connection replaced it
        del here[nick]
        if not here:
            del rooms[room]
        if nick not in members_of(room):
            app.hub.broadcast(room, {"type": "left", "nick": nick})


@app.websocket("/ws/rooms/{room}")
def chat(ws, request):
    room = request.params["room"]
    nick = request.query.get("nick", "")
    client = request.query.get("client", "")
    try:
        error = enter(room, nick, client, ws)
        if error is not None:
            ws.send_json({"type": "error", "error": error})
            ws.close(REFUSED, error)
            return
        # With the hub on Redis, other processes' messages reach a room's first member
        # here once Redis confirms the subscription: wait for that, outside the lock (a
        # thread's `join` has waited already; a greenlet waits only where it asks to).
        app.hub.join(room, ws).wait()
        for msg in ws:
            text, problem = read_text(msg)
            if problem is not None:
                ws.send_json({"type": "error", "error": problem})
                continue
            message = {
                "type": "message",
                "nick": nick,
                "text": text,
                "time": time.time_ns() // 10**6,
            }
            app.hub.broadcast(room, message)
    except ConnectionClosed:
        pass  # the client left while being answered
    finally:
        leave(room, nick, ws)


if __name__ == "__main__":
    app.run()
