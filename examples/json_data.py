"""Sending JSON: a JSON greeting, then one JSON reply per JSON command.

Run: uvicorn examples.json_data:app   (or: python examples/json_data.py)
"""

import json

from cello import App

app = App()


def process_command(data):
    """The page leaves this to the application; here it acknowledges the command."""
    return {"ok": True, "command": data}


@app.websocket("/ws/data")
def data_stream(ws):
    ws.send_text(json.dumps({"type": "connected", "status": "ok"}))
    while True:
        msg = ws.recv()
        if msg is None or msg.is_close():
            break
        if not msg.is_text():
            ws.send_text(json.dumps({"error": "Send JSON as a text message"}))
            continue
        try:
            data = json.loads(msg.text)
            response = process_command(data)
            ws.send_text(json.dumps(response))
        except json.JSONDecodeError:
            ws.send_text(json.dumps({"error": "Invalid JSON"}))


if __name__ == "__main__":
    app.run()
