"""gunicorn settings for a cello app: gunicorn runs the processes, uvicorn serves in each.

Run: CELLO_HUB_URL=redis://127.0.0.1:6379/0 gunicorn -c examples/gunicorn.conf.py examples.chat_app:app
(needs `pip install gunicorn uvicorn-worker`; the Redis URL lets a broadcast in one worker
reach the members connected to the others).

gunicorn's master restarts workers that die and hands out the listening socket; each worker
is a uvicorn server, as `uvicorn --workers N` would start. On SIGTERM every worker stops
accepting, closes its WebSockets with 1012 ("service restart"), waits for its handlers to
return, and then runs the app's shutdown (hooks, the hub's Redis connections).
"""

import os
from typing import ClassVar

from uvicorn_worker import UvicornWorker


class CelloWorker(UvicornWorker):
    """The uvicorn worker with the options cello's `app.run()` chooses, and a shutdown limit.

    uvicorn waits for open streaming responses (Server-Sent Events) to end before the app's
    shutdown runs; a stream never ends by itself, so without a limit gunicorn would kill the
    worker after `graceful_timeout` with the shutdown hooks not run. Ten seconds after
    SIGTERM uvicorn cancels what is still open instead, and shuts the app down cleanly.
    """

    CONFIG_KWARGS: ClassVar[dict] = {
        **UvicornWorker.CONFIG_KWARGS,
        "ws": "cello.serving:WebSocketProtocol",
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,
    }


bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = CelloWorker
# Longer than the worker's own limit above, so gunicorn only kills a worker that is stuck.
graceful_timeout = 20
# A worker that has not reported to the master for this long is restarted.
timeout = 30
