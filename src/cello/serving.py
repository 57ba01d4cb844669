"""Serving an `App` with uvicorn: `app.run()` and `cello.serving.run(app)`.

cello has no server of its own. This module only configures uvicorn, reads the script's
command line (Cello's `--host --port --workers --reload` and uvicorn's usual flags, see
`FLAGS`; a misspelled flag is an error, not ignored), and makes a single-process
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
import difflib
import inspect
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol

import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.config import LOG_LEVELS

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


class Flag(NamedTuple):
    """A command-line flag of `run`, named as the `uvicorn.Config` option it sets.

    `kind` converts its value; it is `bool` for a flag with a `--no-` form, and `None` for
    a flag that only turns something on.
    """

    name: str
    kind: Any
    metavar: str | None
    help: str
    choices: tuple[str, ...] | None = None

    @property
    def dest(self) -> str:
        return self.name[2:].replace("-", "_")


#: The flags `run` reads, uvicorn's usual ones, spelled as uvicorn's own command line.
FLAGS: Final = (
    Flag("--host", str, "ADDRESS", "interface to bind"),
    Flag("--port", int, "PORT", "TCP port to bind"),
    Flag("--workers", int, "N", "worker processes (each imports the app by name)"),
    Flag("--reload", None, None, "restart when the code changes (development)"),
    Flag("--log-level", str.lower, "LEVEL", "uvicorn's log level: " + ", ".join(LOG_LEVELS),
         tuple(LOG_LEVELS)),
    Flag("--access-log", bool, None, "log a line per HTTP request and WebSocket"),
    Flag("--proxy-headers", bool, None, "take the client's address and scheme from "
         "X-Forwarded-For/-Proto sent by --forwarded-allow-ips"),
    Flag("--forwarded-allow-ips", str, "IPS", "comma-separated addresses trusted to send "
         "proxy headers (default: $FORWARDED_ALLOW_IPS, else 127.0.0.1)"),
    Flag("--root-path", str, "PATH", "the path prefix a proxy serves the app under"),
    Flag("--ws-ping-interval", float, "SECONDS", "time between WebSocket pings"),
    Flag("--ws-ping-timeout", float, "SECONDS", "time a WebSocket ping waits for its pong"),
    Flag("--ws-max-size", int, "BYTES", "largest WebSocket message"),
    Flag("--ssl-keyfile", str, "FILE", "TLS private key (serves https and wss)"),
    Flag("--ssl-certfile", str, "FILE", "TLS certificate"),
    Flag("--timeout-graceful-shutdown", int, "SECONDS", "how long shutdown waits for open "
         "connections"),
)  # fmt: skip


def parser(defaults: Mapping[str, Any] | None = None) -> argparse.ArgumentParser:
    """The command line of a script that calls `app.run()`. `--help` shows `defaults` (what
    `run` uses without the flag), else uvicorn's own defaults."""
    config = inspect.signature(uvicorn.Config).parameters
    shown = {name: param.default for name, param in config.items()} | dict(defaults or {})
    cli = argparse.ArgumentParser(
        description="Serve this cello app with uvicorn until Ctrl-C or SIGTERM.",
        epilog="The flags override the arguments of app.run(); uvicorn's other options are "
        "keywords of app.run() (app.run(ws_max_queue=64)).",
        allow_abbrev=False,  # `--po 80` must not be taken for --port
    )
    for flag in FLAGS:
        text, value = flag.help, shown.get(flag.dest)
        if isinstance(value, bool) and flag.kind is bool:
            text += f" (default: {'on' if value else 'off'})"
        elif value not in (None, "", False):
            text += f" (default: {value})"
        if flag.kind is None:
            cli.add_argument(
                flag.name, dest=flag.dest, action="store_true", default=None, help=text
            )
        elif flag.kind is bool:
            action = argparse.BooleanOptionalAction
            cli.add_argument(flag.name, dest=flag.dest, action=action, default=None, help=text)
        else:
            cli.add_argument(
                flag.name,
                dest=flag.dest,
                type=flag.kind,
                choices=flag.choices,
                metavar=flag.metavar,
                help=text,
            )
    return cli


def command_line(argv: Sequence[str], defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `uvicorn.Config` options given in `argv`, only those given.

    As a command line does: `--help` prints the usage and exits with status 0; an unknown
    argument or a bad value prints the usage and the error, naming the close flag for a
    misspelled one, and exits with status 2. `defaults` are shown by `--help`.
    """
    cli = parser(defaults)
    known, unknown = cli.parse_known_args(argv)
    if unknown:
        cli.error(f"unrecognized arguments: {' '.join(unknown)}{_suggestion(unknown)}")
    return {key: value for key, value in vars(known).items() if value is not None}


def _suggestion(unknown: list[str]) -> str:
    """` (did you mean --port?)` for the first unknown flag close to a real one (argparse
    itself suggests nothing for an unknown flag)."""
    flags = ["--help"]
    for flag in FLAGS:
        flags += [flag.name, f"--no-{flag.name[2:]}"] if flag.kind is bool else [flag.name]
    for argument in unknown:
        if argument.startswith("--"):
            close = difflib.get_close_matches(argument.partition("=")[0], flags, n=1)
            if close:
                return f" (did you mean {close[0]}?)"
    return ""


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
    argv: Sequence[str] | None = None,
    **options: Any,
) -> None:
    """Serve `app` with uvicorn until SIGINT or SIGTERM.

    The command line is read as the script's own (see `FLAGS`, or `python app.py --help`):
    its flags override these arguments, `--help` prints the usage and exits, and an
    unknown argument exits with status 2 naming it. Code that calls `run` under a command
    line of its own (pytest, a `python -m tool` wrapper) passes `argv=[]` to read nothing.

    Args:
        app: The application.
        host: Interface to bind (`--host` overrides).
        port: TCP port to bind (`--port` overrides).
        workers: Worker processes (`--workers` overrides); more than one needs the app
            importable by name (see `import_string`).
        reload: Restart when the code changes (`--reload`), for development.
        argv: The command line to read flags from, without the program name (default
            `sys.argv[1:]`); `[]` reads nothing.
        **options: Any other `uvicorn.Config` option (`ws`, `ws_max_size`, `log_level`,
            `timeout_graceful_shutdown`, ...); the flags of the same name override them.
    """
    given = {"host": host, "port": port, "workers": workers, "reload": reload}
    settings = {**DEFAULTS, **given, **options}
    settings.update(command_line(sys.argv[1:] if argv is None else argv, settings))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a dev server ends
        if settings["workers"] > 1 or settings["reload"]:
            uvicorn.run(import_string(app), **settings)
        else:
            del settings["workers"], settings["reload"]
            Server(uvicorn.Config(app, **settings), app).run()
