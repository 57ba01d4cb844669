"""`app.run()` reads Cello's command-line flags and serves with uvicorn."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from websockets.sync.client import connect

from cello.serving import command_line
from servers import ROOT, bound_socket, wait_for_port

WAIT = 10


def test_command_line_flags_are_read() -> None:
    """Cello's serving flags; the rest of the command line is in test_run_cli.py."""
    assert command_line(["--port", "9000", "--host", "0.0.0.0"]) == {
        "port": 9000,
        "host": "0.0.0.0",
    }
    assert command_line(["--workers", "3", "--reload"]) == {"workers": 3, "reload": True}
    assert command_line([]) == {}


@pytest.mark.parametrize("extra", [(), ("--workers", "2")], ids=["one process", "two workers"])
def test_script_serves_on_the_port_given_on_the_command_line(extra: tuple[str, ...]) -> None:
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    cmd = [sys.executable, "examples/quickstart.py", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for_port(port, proc, timeout=30)
        for _ in range(4):  # with two workers, connections spread over both
            with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                assert ws.recv(WAIT) == "Connected!"
                ws.send("flags")
                assert ws.recv(WAIT) == "Echo: flags"
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    if extra:
        # The parent's own lines for each worker: a worker still starting when SIGINT
        # comes (a busy machine) has not logged "Started server process" yet.
        assert output.count("Terminated child process") == 2, output
