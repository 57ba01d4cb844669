from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import WS_BACKENDS


@pytest.fixture(params=WS_BACKENDS)
def ws_backend(request: pytest.FixtureRequest) -> str:
    """Each uvicorn WebSocket backend in turn."""
    backend: str = request.param
    return backend
