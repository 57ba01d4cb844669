"""Serving an `App` with uvicorn: `app.run()` and `cello.serving.run(app)`.

cello has no server of its own. This module only configures uvicorn and makes its
shutdown friendlier to WebSocket clients: uvicorn itself closes open WebSockets with 1012
("service restart"); an app served here first closes them with 1001 ("going away") and
lets handlers return before uvicorn's own shutdown runs.
"""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    from .app import App

__all__ = ["Server", "run"]


class Server(uvicorn.Server):
    """A uvicorn server that closes the app's WebSockets with 1001 before shutting down."""

    def __init__(self, config: uvicorn.Config, app: App) -> None:
        super().__init__(config)
        self.cello_app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting first, so no connection arrives after the close sweep.
        for server in self.servers:
            server.close()
        await self.cello_app.close_websockets(timeout=self.config.timeout_graceful_shutdown or 5.0)
        await super().shutdown(sockets)


def run(app: App, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Serve `app` with uvicorn until SIGINT or SIGTERM.

    Args:
        app: The application.
        host: Interface to bind.
        port: TCP port to bind.
        **options: Any other `uvicorn.Config` option (`ws`, `ws_max_size`, `log_level`,
            `timeout_graceful_shutdown`, ...).
    """
    options.setdefault("lifespan", "on")
    config = uvicorn.Config(app, host=host, port=port, **options)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a dev server ends
        Server(config, app).run()
