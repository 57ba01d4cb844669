"""The page's chat room on the broadcast hub: the same messages, none of its pitfalls.

`examples/chat.py` keeps a shared list and sends to each client from the sender's thread,
so one slow client stalls everyone and a second worker process splits the room. Here the
hub keeps the room: a broadcast is queued for every member at once, a member that falls
far behind is disconnected (1008) instead of holding up the others, and with
`CELLO_HUB_URL=redis://127.0.0.1:6379/0` the room spans every process and host sharing
that Redis (`uvicorn examples.hub_chat:app --workers 4`).

Run: python examples/hub_chat.py   (or: uvicorn examples.hub_chat:app)
Then open examples/clients/browser_client.html in two browser tabs.
"""

from cello import App

app = App()  # the hub's backend comes from CELLO_HUB_URL; in memory when unset

ROOM = "chat"


@app.websocket("/ws/chat")
def chat(ws):
    app.hub.join(ROOM, ws).wait()  # on Redis: until other processes' messages reach it
    online = app.hub.count(ROOM)  # the whole room, every process's members on Redis
    ws.send_json({"type": "system", "message": "Welcome to the chat!", "users_online": online})
    app.hub.broadcast(
        ROOM,
        {"type": "system", "message": "A new user joined", "users_online": online},
        exclude=ws,
    )

    for msg in ws:
        if not msg.is_text():
            ws.send_json({"type": "error", "message": "messages are text"})
            continue
        app.hub.broadcast(ROOM, {"type": "message", "text": msg.text})

    # Leaving happens by itself when the connection closes; leave first here so the
    # count the others see no longer includes this client.
    app.hub.leave(ROOM, ws)
    app.hub.broadcast(
        ROOM,
        {"type": "system", "message": "A user left", "users_online": app.hub.count(ROOM)},
    )


if __name__ == "__main__":
    app.run()
