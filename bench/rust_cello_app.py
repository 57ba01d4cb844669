"""The benchmark routes on the Rust Cello framework (PyPI `cello-framework`), sync handlers.

Runs only in the separate Python 3.12 virtualenv `peer_venv.py` makes: that package
installs a top-level `cello` module of its own, so it never shares an interpreter with
this project. The same three routes as `apps.py`: `/` echoes, `/greet` greets and waits
for the close, `/fanout` is the chat room (greet on joining, every message to everyone).
Its sync handlers each hold a thread of its blocking pool (64 unless raised), so the pool
is sized by `--threads` for the largest workload.

    python bench/rust_cello_app.py --port 8000 --threads 1100
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from cello import App, ThreadPoolConfig  # the Rust Cello's, in its own virtualenv

app = App()
_room: list[Any] = []


@app.websocket("/")
def echo(ws: Any) -> None:
    while (msg := ws.recv()) is not None:
        ws.send_text(msg.content)


@app.websocket("/greet")
def greet(ws: Any) -> None:
    ws.send_text("hi")
    while ws.recv() is not None:
        pass


@app.websocket("/fanout")
def fanout(ws: Any) -> None:
    _room.append(ws)
    ws.send_text("hi")
    try:
        while (msg := ws.recv()) is not None:
            for member in list(_room):
                with contextlib.suppress(Exception):  # that member has gone
                    member.send_text(msg.content)
    finally:
        _room.remove(ws)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=64)
    args, _ = parser.parse_known_args()
    app.set_threadpool(ThreadPoolConfig(size=args.threads))
    app.run(host="127.0.0.1", port=args.port, env="production", workers=1, logs=False)
