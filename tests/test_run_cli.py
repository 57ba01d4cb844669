"""`app.run()`'s command line: uvicorn's usual flags, `--help`, and errors for the rest.

The parser is driven directly for the parsing rules; a script run as a child process
shows what its user sees.
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import uvicorn

from cello import App
from cello.serving import FLAGS, command_line, run
from servers import bound_socket, child_server

WAIT = 30

SCRIPT = """\
from cello import App

app = App()


@app.get("/")
def home():
    return {"served": True}


if __name__ == "__main__":
    app.run(port=1, log_level="critical")
"""

#: Every flag with a value, and what `uvicorn.Config` receives for it.
EVERY_FLAG = {
    "--host": ("0.0.0.0", "0.0.0.0"),
    "--port": ("9000", 9000),
    "--workers": ("3", 3),
    "--log-level": ("debug", "debug"),
    "--forwarded-allow-ips": ("10.0.0.1,10.0.0.2", "10.0.0.1,10.0.0.2"),
    "--root-path": ("/api", "/api"),
    "--ws-ping-interval": ("2.5", 2.5),
    "--ws-ping-timeout": ("7", 7.0),
    "--ws-max-size": ("1048576", 1048576),
    "--ssl-keyfile": ("key.pem", "key.pem"),
    "--ssl-certfile": ("cert.pem", "cert.pem"),
    "--timeout-graceful-shutdown": ("10", 10),
}


def script(tmp_path: Path) -> Path:
    path = tmp_path / "app.py"
    path.write_text(SCRIPT)
    return path


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The error `command_line(argv)` exits with (status 2), from stderr."""
    with pytest.raises(SystemExit) as exited:
        command_line(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ")
    return err.splitlines()[-1]


# ----------------------------------------------------------------- parsing


def test_every_flag_names_a_uvicorn_option() -> None:
    options = inspect.signature(uvicorn.Config).parameters
    assert {flag.dest for flag in FLAGS} <= set(options)


def test_flags_with_values_are_converted_for_uvicorn() -> None:
    argv = [part for flag, (text, _) in EVERY_FLAG.items() for part in (flag, text)]
    expected = {flag[2:].replace("-", "_"): value for flag, (_, value) in EVERY_FLAG.items()}
    assert command_line(argv) == expected


def test_switches_and_their_no_forms() -> None:
    assert command_line(["--reload"]) == {"reload": True}
    assert command_line(["--no-access-log", "--proxy-headers"]) == {
        "access_log": False,
        "proxy_headers": True,
    }
    assert command_line(["--access-log", "--no-proxy-headers"]) == {
        "access_log": True,
        "proxy_headers": False,
    }


def test_only_the_flags_given_are_returned() -> None:
    assert command_line([]) == {}
    assert command_line(["--port=9000", "--log-level", "WARNING"]) == {
        "port": 9000,
        "log_level": "warning",
    }


@pytest.mark.parametrize(
    ("argv", "unrecognized"),
    [
        (["--prot", "9000"], "--prot 9000 (did you mean --port?)"),
        (["--log-lvl", "debug"], "--log-lvl debug (did you mean --log-level?)"),
        (["--no-acces-log"], "--no-acces-log (did you mean --no-access-log?)"),
        (["--port", "80", "serve"], "serve"),
        (["--po", "80"], "--po 80 (did you mean --port?)"),
    ],
    ids=["typo", "typo of a long flag", "typo of a no- form", "stray word", "abbreviation"],
)
def test_an_unknown_argument_exits_2_naming_it(
    argv: list[str], unrecognized: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refused(argv, capsys).endswith(f"error: unrecognized arguments: {unrecognized}")


def test_a_flag_with_nothing_close_gets_no_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    assert refused(["--zzzzzz"], capsys).endswith("error: unrecognized arguments: --zzzzzz")


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--port", "eighty"], "argument --port: invalid int value: 'eighty'"),
        (["--log-level", "loud"], "argument --log-level: invalid choice: 'loud'"),
        (["--workers"], "argument --workers: expected one argument"),
    ],
)
def test_a_bad_value_exits_2_naming_the_flag(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert f"error: {error}" in refused(argv, capsys)


def test_help_lists_the_flags_with_the_values_run_would_use(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line per flag
    with pytest.raises(SystemExit) as exited:
        command_line(["--help"], {"port": 9000, "access_log": False})
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ")
    for flag in FLAGS:
        assert flag.name in out
    assert "--no-proxy-headers" in out
    assert "TCP port to bind (default: 9000)" in out  # the caller's value
    assert "log a line per HTTP request and WebSocket (default: off)" in out
    assert "largest WebSocket message (default: 16777216)" in out  # uvicorn's own


def test_run_reads_the_argv_it_is_given_and_not_sys_argv(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under a command line of its own (here pytest's), `argv` says what `run` reads."""
    monkeypatch.setattr(sys, "argv", ["pytest", "-q", "tests/test_run_cli.py"])
    with pytest.raises(SystemExit) as exited:
        App().run()  # reads sys.argv[1:]: pytest's arguments are not serving flags
    assert exited.value.code == 2
    assert "unrecognized arguments: -q tests/test_run_cli.py" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        run(App(), argv=["--help"])
    assert exited.value.code == 0
    assert "--ws-max-size" in capsys.readouterr().out


# ----------------------------------------------------------------- as a script


def test_script_help_prints_the_usage_and_exits_0(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script(tmp_path)), "--help"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: app.py [-h] [--host ADDRESS] [--port PORT]")
    assert "TCP port to bind (default: 1)" in done.stdout  # app.run(port=1)
    assert "--timeout-graceful-shutdown SECONDS" in done.stdout


def test_script_with_a_misspelled_flag_exits_2_and_says_which(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script(tmp_path)), "--prot", "1"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("usage: app.py")
    assert done.stderr.endswith(
        "app.py: error: unrecognized arguments: --prot 1 (did you mean --port?)\n"
    )


def test_script_flags_override_the_arguments_of_app_run(tmp_path: Path) -> None:
    """The script says `app.run(port=1, log_level="critical")`; the command line's port is
    served, and its log level shows uvicorn's startup and access lines."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    cmd = [sys.executable, str(script(tmp_path)), "--port", str(port), "--log-level", "debug"]
    with child_server(cmd, port) as proc:
        response = httpx.get(f"http://127.0.0.1:{port}/", timeout=WAIT)
        assert response.json() == {"served": True}
        proc.send_signal(signal.SIGINT)
        assert proc.stdout is not None
        output = proc.stdout.read()  # to the end: the server has stopped
        assert proc.wait(WAIT) == 0, output
    assert f"Uvicorn running on http://127.0.0.1:{port}" in output
    assert '"GET / HTTP/1.1" 200' in output
