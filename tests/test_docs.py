"""Every Python block of the documentation runs, so the docs cannot drift from the code.

A page's blocks run in order, each as a fresh module. A block that talks to a server at
`127.0.0.1:8000` and defines no app (a client script) runs against the app of the latest
block that defined one, served by uvicorn on a free port. The `test_*` functions a block
defines are called.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from cello import App
from servers import ROOT, ThreadServer

PAGES = sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
SERVER = re.compile(r"(127\.0\.0\.1|localhost):8000")


def run_block(source: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        exec(compile(source, name, "exec"), module.__dict__)
        for attr, value in list(vars(module).items()):
            if attr.startswith("test_") and callable(value):
                value()
    finally:
        sys.modules.pop(name, None)
    return module


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_python_block_runs(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # blocks may import the examples
    blocks = BLOCK.findall(page.read_text())
    latest_app: App | None = None
    for index, source in enumerate(blocks):
        name = f"docs_{page.stem.replace('-', '_')}_{index}"
        if SERVER.search(source) and "App(" not in source:
            assert latest_app is not None, f"{name} is a client with no app before it"
            with ThreadServer(latest_app, ws="websockets-sansio") as server:
                run_block(SERVER.sub(f"127.0.0.1:{server.port}", source), name)
            continue
        module = run_block(source, name)
        if isinstance(getattr(module, "app", None), App):
            latest_app = module.app
