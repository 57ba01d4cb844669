"""Serve an ASGI app with uvicorn, profiling every thread's CPU time with yappi on demand.

SIGUSR1 starts the profiler (on all threads, CPU clock), SIGUSR2 stops it and writes each
function's calls, self time and total time to the file given, as tab-separated lines, so
the profile covers exactly the window between the two signals.

    python bench/yappi_serve.py bench.apps:cello_sync PORT WS OUT.tsv
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import uvicorn
import yappi


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.apps` imports
    target, port, ws, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])

    def start(signum: int, frame: FrameType | None) -> None:
        yappi.set_clock_type("cpu")
        yappi.start(builtins=True, profile_threads=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        yappi.stop()
        with out.open("w") as file:
            for f in yappi.get_func_stats():
                file.write(f"{f.module}\t{f.name}\t{f.ncall}\t{f.tsub}\t{f.ttot}\n")
        yappi.clear_stats()

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    uvicorn.run(
        target, host="127.0.0.1", port=port, ws=ws, log_level="warning", access_log=False,
        lifespan="auto",
    )  # fmt: skip


if __name__ == "__main__":
    main()
