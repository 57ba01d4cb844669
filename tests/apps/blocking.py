"""An app whose handlers block in recv() until the client or the server ends them."""

from cello import App, WebSocket

app = App()


@app.websocket("/ws")
def wait_forever(ws: WebSocket) -> None:
    ws.send_text("ready")
    while True:
        msg = ws.recv()
        if msg is None or msg.is_close():
            break
    print(f"handler returned: {ws.close_code}", flush=True)
