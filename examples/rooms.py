"""Path parameters: `/ws/rooms/{room_id}` greets with the room and tags every reply.

Run: uvicorn examples.rooms:app   (or: python examples/rooms.py)
"""

from cello import App

app = App()


@app.websocket("/ws/rooms/{room_id}")
def room_handler(ws, request):
    room_id = request.params["room_id"]
    ws.send_text(f"Joined room: {room_id}")
    while True:
        msg = ws.recv()
        if msg is None or msg.is_close():
            break
        # Broadcast to room members
        text = msg.text if msg.is_text() else f"{len(msg.data)} bytes"
        ws.send_text(f"[{room_id}] {text}")


if __name__ == "__main__":
    app.run()
