"""Serving an `App` with uvicorn: `app.run()` and `cello.serving.run(app)`.

cello has no server of its own. This module only configures uvicorn, reads Cello's
command-line flags (`--host --port --workers --reload`), and makes a single-process
server's shutdown friendlier to long-lived clients: uvicorn itself closes open WebSockets
with 1012 ("service restart") and waits, without a signal, for streaming responses to
end; an app served here first closes its WebSockets with 1001 ("going away"), ends its
live SSE streams, and lets handlers return before uvicorn's own shutdown runs. With `--workers` or
`--reload` uvicorn runs the app in child processes it manages, importing it by name, and
its own shutdown (1012) applies.

The WebSocket backend is uvicorn's `websockets-sansio`: measured on the echo benchmark
(bench/results/), it costs 30 % less server CPU per message than `wsproto` with 50
connections, and uvicorn deprecates its older `websockets` backend. It is served through
`WebSocketProtocol`, a subclass that corrects two upstream defects (a close frame between
a message's fragments, a request line or header over 8 KiB): see `cello._uvicorn_ws`.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
from pathlib import Path
from typing import Any, Protocol

import uvicorn
from starlette.types import Receive, Scope, Send

from ._uvicorn_ws import WebSocketProtocol

__all__ = ["WS_PROTOCOL", "ServedApp", "Server", "WebSocketProtocol", "run"]


class ServedApp(Protocol):
    """What serving needs of an app (an `App` is one): an ASGI callable that can close its
    connections before the server shuts down."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...

    async def close_connections(self, timeout: float = 5.0) -> None: ...


#: uvicorn's `ws` option naming `WebSocketProtocol`, for `uvicorn --ws`, `uvicorn.Config`
#: and gunicorn's `UvicornWorker.CONFIG_KWARGS`: an import path, so worker processes
#: started by `--workers`, `--reload` or gunicorn import it themselves.
WS_PROTOCOL = "cello.serving:WebSocketProtocol"

#: uvicorn options cello chooses unless the caller does.
DEFAULTS: dict[str, Any] = {"lifespan": "on", "ws": WS_PROTOCOL}


class Server(uvicorn.Server):
    """A uvicorn server that closes the app's WebSockets with 1001 before shutting down."""

    def __init__(self, config: uvicorn.Config, app: ServedApp) -> None:
        super().__init__(config)
        self.cello_app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting first, so no connection arrives after the close sweep.
        for server in self.servers:
            server.close()
        await self.cello_app.close_connections(timeout=self.config.timeout_graceful_shutdown or 5.0)
        await super().shutdown(sockets)


def command_line(argv: list[str]) -> dict[str, Any]:
    """The serving flags Cello reads from the command line; unknown arguments are left."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--reload", action="store_true", default=None)
    known, _ = parser.parse_known_args(argv)
    return {key: value for key, value in vars(known).items() if value is not None}


def import_string(app: ServedApp) -> str:
    """`module:attribute` naming `app`, for uvicorn to import it in worker processes.

    Raises:
        RuntimeError: the app is not a global of the `__main__` module.
    """
    main = sys.modules.get("__main__")
    attr = next((name for name, value in vars(main).items() if value is app), None)
    if main is None or attr is None:
        raise RuntimeError(
            "--workers and --reload need the app as a global of the script that runs it; "
            "or serve it with `uvicorn module:app --workers N`"
        )
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:  # python -m package.module
        return f"{spec.name}:{attr}"
    # A script: its directory is on sys.path (workers inherit it), so its stem imports.
    script = Path(main.__file__ or "").resolve()
    if str(script.parent) not in sys.path:
        sys.path.insert(0, str(script.parent))
    return f"{script.stem}:{attr}"


def run(
    app: ServedApp,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    workers: int = 1,
    reload: bool = False,
    argv: list[str] | None = None,
    **options: Any,
) -> None:
    """Serve `app` with uvicorn until SIGINT or SIGTERM.

    Args:
        app: The application.
        host: Interface to bind (`--host` overrides).
        port: TCP port to bind (`--port` overrides).
        workers: Worker processes (`--workers` overrides); more than one needs the app
            importable by name (see `import_string`).
        reload: Restart when the code changes (`--reload`), for development.
        argv: The command line to read flags from (default `sys.argv[1:]`).
        **options: Any other `uvicorn.Config` option (`ws`, `ws_max_size`, `log_level`,
            `timeout_graceful_shutdown`, ...).
    """
    flags = command_line(sys.argv[1:] if argv is None else argv)
    host, port = flags.get("host", host), flags.get("port", port)
    workers, reload = flags.get("workers", workers), flags.get("reload", reload)
    settings = {**DEFAULTS, **options}
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a dev server ends
        if workers > 1 or reload:
            uvicorn.run(
                import_string(app), host=host, port=port, workers=workers, reload=reload, **settings
            )
        else:
            config = uvicorn.Config(app, host=host, port=port, **settings)
            Server(config, app).run()
