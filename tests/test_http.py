"""HTTP routes, requests and responses through a real uvicorn and a real httpx client."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx
import pytest

from cello import App, Blueprint, HTTPException, Request, Response
from servers import ThreadServer


def build_app(tmp_path: Path) -> App:
    app = App(max_body_size=1024)
    download = tmp_path / "report.txt"
    download.write_text("quarterly numbers\n")

    @app.get("/json")
    def as_json() -> dict[str, object]:
        return {"kind": "json", "items": [1, 2]}

    @app.get("/list")
    def as_list() -> list[int]:
        return [1, 2, 3]

    @app.get("/text")
    def as_text() -> str:
        return "plain words"

    @app.get("/bytes")
    def as_bytes() -> bytes:
        return b"\x00\x01"

    @app.get("/none")
    def as_none() -> None:
        return None

    @app.get("/response/json")
    def response_json() -> Response:
        return Response.json({"created": True}, status=201, headers={"X-Extra": "yes"})

    @app.get("/response/html")
    def response_html() -> Response:
        return Response.html("<h1>hi</h1>")

    @app.get("/response/text")
    def response_text() -> Response:
        return Response.text("teapot", status=418)

    @app.get("/response/binary")
    def response_binary() -> Response:
        return Response.binary(b"PNG", content_type="image/png")

    @app.get("/response/redirect")
    def response_redirect() -> Response:
        return Response.redirect("/json")

    @app.get("/response/moved")
    def response_moved() -> Response:
        return Response.redirect("/json", permanent=True)

    @app.get("/response/file")
    def response_file() -> Response:
        return Response.file(download, filename="report.txt")

    @app.get("/response/missing-file")
    def response_missing_file() -> Response:
        return Response.file(tmp_path / "nope.txt")

    @app.get("/response/empty")
    def response_empty() -> Response:
        return Response.no_content()

    @app.get("/response/cookie")
    def response_cookie() -> Response:
        response = Response.text("cookie set")
        response.set_cookie("session", "abc", httponly=True)
        return response

    @app.route("/echo/{name}/{n:int}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def echo(request: Request) -> dict[str, object]:
        return {
            "method": request.method,
            "path": request.path,
            "params": request.params,
            "query": dict(request.query),
            "tags": request.query_params.getlist("tag"),
            "header": request.headers.get("x-custom"),
            "cookie": request.cookies.get("flavour"),
            "client": request.client is not None and request.client.host,
            "body": request.body().decode(),
            "is_json": request.is_json(),
        }

    @app.post("/json-body")
    def json_body(request: Request) -> dict[str, object]:
        return {"received": request.json()}

    @app.post("/form")
    def form(request: Request) -> dict[str, object]:
        data = request.form()
        return {"name": data["name"], "tags": data.getlist("tag")}

    @app.post("/text-body")
    def text_body(request: Request) -> str:
        return request.text().upper()

    @app.get("/async")
    async def async_handler(request: Request) -> dict[str, object]:
        await asyncio.sleep(0)
        return {"async": True, "q": request.query.get("q")}

    @app.get("/crash")
    def crash() -> str:
        raise RuntimeError("database password is hunter2")

    @app.get("/teapot")
    def teapot() -> str:
        raise HTTPException(418, "I'm a teapot", headers={"X-Brew": "earl grey"})

    @app.get("/bad-return")
    def bad_return() -> object:
        return object()

    api = Blueprint("/api")
    v1 = Blueprint("/v1")

    @v1.get("/users/{user_id:int}")
    def user(request: Request) -> dict[str, object]:
        return {"user": request.params["user_id"]}

    api.register_blueprint(v1)
    app.register_blueprint(api)
    return app


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> object:
    app = build_app(tmp_path_factory.mktemp("files"))
    with ThreadServer(app, ws="websockets-sansio") as running:
        yield running


@pytest.fixture
def client(server: ThreadServer) -> object:
    with httpx.Client(base_url=server.http_url(""), timeout=10) as http:
        yield http


def test_return_values(client: httpx.Client) -> None:
    response = client.get("/json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"kind": "json", "items": [1, 2]}
    assert client.get("/list").json() == [1, 2, 3]
    response = client.get("/text")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == "plain words"
    response = client.get("/bytes")
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == b"\x00\x01"
    response = client.get("/none")
    assert response.status_code == 204
    assert response.content == b""


def test_response_factories(client: httpx.Client) -> None:
    response = client.get("/response/json")
    assert (response.status_code, response.json()) == (201, {"created": True})
    assert response.headers["x-extra"] == "yes"
    response = client.get("/response/html")
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.text == "<h1>hi</h1>"
    assert client.get("/response/text").status_code == 418
    response = client.get("/response/binary")
    assert (response.headers["content-type"], response.content) == ("image/png", b"PNG")
    response = client.get("/response/redirect")
    assert (response.status_code, response.headers["location"]) == (302, "/json")
    assert client.get("/response/moved").status_code == 301
    assert client.get("/response/redirect", follow_redirects=True).json()["kind"] == "json"
    response = client.get("/response/file")
    assert response.text == "quarterly numbers\n"
    assert 'filename="report.txt"' in response.headers["content-disposition"]
    assert client.get("/response/missing-file").status_code == 404
    assert client.get("/response/empty").status_code == 204
    response = client.get("/response/cookie")
    assert "session=abc" in response.headers["set-cookie"]
    assert "HttpOnly" in response.headers["set-cookie"]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_request_accessors(client: httpx.Client, method: str) -> None:
    response = client.request(
        method,
        "/echo/widget/42",
        params=[("tag", "a"), ("tag", "b"), ("page", "3")],
        headers={"X-Custom": "value", "Cookie": "flavour=mint"},
        content=b"" if method == "GET" else b'{"x": 1}',
    )
    assert response.status_code == 200
    data = response.json()
    assert data["method"] == method
    assert data["path"] == "/echo/widget/42"
    assert data["params"] == {"name": "widget", "n": 42}
    assert data["query"]["page"] == "3"
    assert data["tags"] == ["a", "b"]
    assert data["header"] == "value"
    assert data["cookie"] == "mint"
    assert data["client"] == "127.0.0.1"
    assert data["body"] == ("" if method == "GET" else '{"x": 1}')


def test_head_answers_get_routes_without_a_body(client: httpx.Client) -> None:
    response = client.head("/json")
    assert response.status_code == 200
    assert response.content == b""


def test_json_body_and_malformed_json(client: httpx.Client) -> None:
    response = client.post("/json-body", json={"a": [1, "two"]})
    assert response.json() == {"received": {"a": [1, "two"]}}
    response = client.post(
        "/json-body", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Malformed JSON in the request body")


def test_form_and_text_bodies(client: httpx.Client) -> None:
    response = client.post("/form", data={"name": "Ann", "tag": ["x", "y"]})
    assert response.json() == {"name": "Ann", "tags": ["x", "y"]}
    response = client.post("/form", json={"name": "Ann"})
    assert response.status_code == 415
    response = client.post("/text-body", content="h\u00e9llo".encode())
    assert response.text == "H\u00c9LLO"


def test_async_handler(client: httpx.Client) -> None:
    assert client.get("/async", params={"q": "x"}).json() == {"async": True, "q": "x"}


def test_unknown_path_is_a_json_404(client: httpx.Client) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_wrong_method_is_a_json_405_with_allow(client: httpx.Client) -> None:
    response = client.post("/json")
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}
    assert response.headers["allow"] == "GET, HEAD"


def test_oversized_body_is_a_413(client: httpx.Client) -> None:
    response = client.post("/json-body", content=b"x" * 2048)
    assert response.status_code == 413
    assert "larger than 1024 bytes" in response.json()["detail"]

    def chunks() -> object:  # no Content-Length: counted while reading
        for _ in range(8):
            yield b"y" * 256

    response = client.post("/json-body", content=chunks())  # type: ignore[arg-type]
    assert response.status_code == 413


def test_crash_is_a_500_without_the_traceback(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="cello"):
        response = client.get("/crash")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal Server Error"}
    assert "hunter2" not in response.text
    crash_logs = [r for r in caplog.records if r.exc_info and r.exc_info[0] is RuntimeError]
    assert len(crash_logs) == 1
    assert client.get("/json").status_code == 200  # and the server keeps serving


def test_bad_return_value_is_a_500(client: httpx.Client) -> None:
    assert client.get("/bad-return").status_code == 500


def test_http_exception(client: httpx.Client) -> None:
    response = client.get("/teapot")
    assert response.status_code == 418
    assert response.json() == {"detail": "I'm a teapot"}
    assert response.headers["x-brew"] == "earl grey"


def test_nested_blueprints(client: httpx.Client) -> None:
    assert client.get("/api/v1/users/7").json() == {"user": 7}
    assert client.get("/v1/users/7").status_code == 404


def test_sixty_concurrent_blocking_requests_run_in_parallel() -> None:
    app = App()

    @app.get("/slow")
    def slow() -> str:
        time.sleep(1)
        return "done"

    async def sixty(url: str) -> list[int]:
        async with httpx.AsyncClient(timeout=30) as http:
            responses = await asyncio.gather(*(http.get(url) for _ in range(60)))
        return [r.status_code for r in responses]

    with ThreadServer(app, ws="websockets-sansio") as server:
        started = time.monotonic()
        statuses = asyncio.run(sixty(server.http_url("/slow")))
        elapsed = time.monotonic() - started
    assert statuses == [200] * 60
    assert elapsed < 5, f"60 one-second requests took {elapsed:.1f} s"


def test_duplicate_routes_and_bad_handlers_are_refused() -> None:
    app = App()

    @app.get("/x")
    def first() -> str:
        return "1"

    with pytest.raises(ValueError, match="GET /x is already registered"):
        app.get("/x")(first)
    with pytest.raises(TypeError, match=r"must take \(request\) or \(\)"):
        app.post("/y")(lambda a, b: None)
    with pytest.raises(ValueError, match="prefix"):
        Blueprint("api/")
