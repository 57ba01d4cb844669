"""`Response.file(name, directory=...)`: a client-chosen name served from a directory.

Through a real uvicorn with raw HTTP requests: httpx (like browsers) removes `..`
segments before sending, and these tests need the server to see exactly what an attacker
sends. Each hostile request is also sent to a route using the naive pattern
(`Response.file(root / name)`), to show what the `directory` form prevents.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from cello import App, Request, Response
from servers import ThreadServer

SECRET = "the secret outside the served directory\n"


@dataclass
class Site:
    server: ThreadServer
    root: Path
    secret: Path


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def build_app(root: Path) -> App:
    app = App()

    @app.get("/safe/{name:path}")
    def safe(request: Request) -> Response:
        return Response.file(request.params["name"], directory=root)

    @app.get("/download/{name:path}")
    def download(request: Request) -> Response:
        name = request.params["name"]
        return Response.file(name, filename=f"copy-of-{name}", directory=str(root))

    @app.get("/naive/{name:path}")
    def naive(request: Request) -> Response:
        # What the directory form replaces. (`f"{root}/{name}"` is as open to `..`;
        # `Path /` and `os.path.join` also follow an absolute name out of `root`.)
        return Response.file(root / request.params["name"])

    return app


def make_tree(base: Path) -> tuple[Path, Path]:
    """`base/public` (served) and `base/secret.txt` (must never be served)."""
    root = base / "public"
    (root / "sub").mkdir(parents=True)
    (root / "hello.txt").write_text("hello\n")
    (root / "sub" / "style.css").write_text("body {}\n")
    secret = base / "secret.txt"
    secret.write_text(SECRET)
    (root / "escape.txt").symlink_to(secret)  # a file symlink leading out
    (root / "outside").symlink_to(base, target_is_directory=True)  # a directory one
    (root / "alias.txt").symlink_to(root / "hello.txt")  # stays inside: served
    (root / "loop.txt").symlink_to(root / "loop.txt")
    # A sibling whose name starts like the root's: a string-prefix check would allow it.
    (base / "public-private").mkdir()
    (base / "public-private" / "key.txt").write_text(SECRET)
    return root, secret


@pytest.fixture(scope="module", params=["h11", "httptools"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    root, secret = make_tree(tmp_path_factory.mktemp("site"))
    with ThreadServer(build_app(root), ws="websockets-sansio", http=request.param) as server:
        yield Site(server, root, secret)


def raw_get(port: int, target: str, method: str = "GET") -> Answer:
    """One request with `target` sent byte for byte, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body)


def hostile(site: Site) -> dict[str, str | None]:
    """Paths below the route prefix, each with what the naive route does with it:
    `"leak"` (serves the secret), `"500"`, or `None` (already a 404 there, on POSIX)."""
    to_top = "..%2F" * (len(site.root.parts) - 1)  # from the root up to `/`
    return {
        quote(str(site.secret), safe=""): "leak",  # %2F...: an absolute path
        "..%2Fsecret.txt": "leak",  # percent-encoded slashes
        to_top + quote(str(site.secret)[1:], safe=""): "leak",  # ..%2F..%2F..%2Ftmp%2F...
        "../secret.txt": "leak",  # a raw `..` segment the client did not remove
        "sub/../../secret.txt": "leak",
        "escape.txt": "leak",  # a symlink in the root to a file outside it
        "outside/secret.txt": "leak",  # through a symlinked directory
        "..%2Fpublic-private%2Fkey.txt": "leak",  # a sibling sharing the root's prefix
        "x" * 300: "500",  # a name too long for the file system
        "..%5Csecret.txt": None,  # a backslash: a separator on Windows
        "..\\secret.txt": None,
        "hello.txt%00.png": None,  # a NUL byte
        "secret.txt%00": None,
        "sub": None,  # a directory
        "sub/": None,
        "": None,  # the root itself
        "missing.txt": None,
        "loop.txt": None,  # a symlink loop
    }


def test_every_hostile_name_is_a_plain_404(site: Site) -> None:
    for path in hostile(site):
        for method in ("GET", "HEAD"):
            answer = raw_get(site.server.port, f"/safe/{path}", method)
            assert answer.status == 404, (path, method, answer)
            if method == "GET":
                assert json.loads(answer.body) == {"detail": "Not Found"}, path
                assert answer.headers["content-type"] == "application/json"


def test_the_naive_pattern_leaks_or_fails_on_the_same_names(site: Site) -> None:
    """What the directory form prevents: each case here is served or crashes naively."""
    for path, naive in hostile(site).items():
        if naive is None:
            continue
        answer = raw_get(site.server.port, f"/naive/{path}")
        if naive == "leak":
            assert answer.status == 200, (path, answer)
            assert answer.body == SECRET.encode(), path
        else:
            assert answer.status == 500, (path, answer)


def test_files_inside_the_directory_are_served(site: Site) -> None:
    served = {
        "hello.txt": ("text/plain; charset=utf-8", b"hello\n"),
        "sub/style.css": ("text/css; charset=utf-8", b"body {}\n"),
        "sub/../hello.txt": ("text/plain; charset=utf-8", b"hello\n"),
        "sub%2Fstyle.css": ("text/css; charset=utf-8", b"body {}\n"),
        "alias.txt": ("text/plain; charset=utf-8", b"hello\n"),  # a symlink kept inside
    }
    for path, (content_type, body) in served.items():
        answer = raw_get(site.server.port, f"/safe/{path}")
        assert answer.status == 200, (path, answer)
        assert answer.headers["content-type"] == content_type, path
        assert answer.headers["content-length"] == str(len(body)), path
        assert answer.body == body, path


def test_download_name_with_a_directory(site: Site) -> None:
    answer = raw_get(site.server.port, "/download/hello.txt")
    assert answer.status == 200
    assert answer.headers["content-disposition"] == 'attachment; filename="copy-of-hello.txt"'
    assert answer.body == b"hello\n"


def test_a_file_changed_into_an_escaping_symlink_is_refused(site: Site) -> None:
    """The check runs on every response, not once: no result is cached."""
    moving = site.root / "moving.txt"
    moving.write_text("inside\n")
    try:
        assert raw_get(site.server.port, "/safe/moving.txt").body == b"inside\n"
        moving.unlink()
        moving.symlink_to(site.secret)
        assert raw_get(site.server.port, "/safe/moving.txt").status == 404
    finally:
        moving.unlink()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_a_404(site: Site) -> None:
    locked = site.root / "locked.txt"
    locked.write_text("no\n")
    locked.chmod(0)
    try:
        assert raw_get(site.server.port, "/safe/locked.txt").status == 404
    finally:
        locked.unlink()
