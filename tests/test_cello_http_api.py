"""The request and response API of Cello's requests/responses pages, on cello.

First each behaviour in-process (`cello.testing.TestClient`), edge cases included; then
handlers written the way those pages write them, served by uvicorn and driven by httpx.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.datastructures import URL, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from cello import App, Request, Response, SseEvent, SseStream
from cello.sse import SseResponse
from cello.testing import TestClient
from servers import ThreadServer
from sse_parsing import sse_events


def serve(handler: Callable[..., Any], path: str = "/", methods: tuple[str, ...] = ("GET",)) -> App:
    """An app answering `path` with `handler`."""
    app = App()
    app.route(path, methods=list(methods))(handler)
    return app


def call(app: ASGIApp, method: str = "GET", url: str = "/", **options: Any) -> httpx.Response:
    with TestClient(app) as client:
        return client.request(method, url, **options)


# ------------------------------------------------------------------ the request


def test_get_header_is_case_insensitive_and_has_a_default() -> None:
    def handler(request: Request) -> dict[str, object]:
        return {
            "exact": request.get_header("X-Api-Version"),
            "other_case": request.get_header("x-API-version", "1"),
            "missing": request.get_header("X-Missing"),
            "missing_with_default": request.get_header("X-Missing", "1"),
        }

    answer = call(serve(handler), headers={"X-Api-Version": "2"}).json()
    assert answer == {
        "exact": "2",
        "other_case": "2",
        "missing": None,
        "missing_with_default": "1",
    }


def test_query_parameters_single_repeated_and_missing() -> None:
    def handler(request: Request) -> dict[str, object]:
        assert request.query is request.query_params
        assert isinstance(request.query, QueryParams)  # Starlette's API still works
        return {
            "page": request.get_query_param("page"),
            "limit": request.get_query_param("limit", "10"),
            "missing": request.get_query_param("sort"),
            "tags": request.query.get_all("tag"),
            "same": request.query_params.getlist("tag"),
            "none": request.query.get_all("nothing"),
            "blank": request.get_query_param("blank"),
        }

    answer = call(serve(handler), url="/?tag=a&page=3&tag=b&blank=").json()
    assert answer == {
        "page": "3",
        "limit": "10",
        "missing": None,
        "tags": ["a", "b"],
        "same": ["a", "b"],
        "none": [],
        "blank": "",
    }


def content_kinds(request: Request) -> dict[str, object]:
    return {
        "property": request.content_type,
        "method": request.content_type(),
        "json": request.is_json(),
        "form": request.is_form(),
        "multipart": request.is_multipart(),
    }


@pytest.mark.parametrize(
    ("header", "media_type", "kind"),
    [
        ("application/json", "application/json", "json"),
        ("Application/JSON; charset=utf-8", "application/json", "json"),
        ("application/problem+json", "application/problem+json", "json"),
        ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded", "form"),
        ("multipart/form-data; boundary=xyz", "multipart/form-data", "multipart"),
        ("text/plain", "text/plain", None),
        (None, "", None),
    ],
)
def test_content_type_is_a_property_and_a_method(
    header: str | None, media_type: str, kind: str | None
) -> None:
    headers = {} if header is None else {"Content-Type": header}
    answer = call(serve(content_kinds, methods=("POST",)), "POST", headers=headers).json()
    assert answer == {
        "property": media_type,
        "method": media_type,
        "json": kind == "json",
        "form": kind == "form",
        "multipart": kind == "multipart",
    }


def lengths(request: Request) -> dict[str, object]:
    return {"length": request.content_length}


@pytest.mark.parametrize(
    ("header", "expected"),
    [("5", 5), ("0", 0), ("abc", None), ("-5", None), ("1e3", None), ("5.0", None)],
)
def test_content_length_is_an_int_or_none_when_malformed(header: str, expected: int | None) -> None:
    # The header is sent as given, whatever the body (the app reads the body to its end).
    body = b"hello" if expected == 5 else b""
    response = call(
        serve(lengths, methods=("POST",)), "POST", content=body, headers={"Content-Length": header}
    )
    assert response.json() == {"length": expected}


def test_content_length_is_none_without_the_header() -> None:
    assert call(serve(lengths)).json() == {"length": None}


def test_url_client_ip_host_and_scheme() -> None:
    def handler(request: Request) -> dict[str, object]:
        url = request.url
        assert isinstance(url, str)
        assert isinstance(url, URL)
        return {
            "url": url,  # serialized as the string it is
            "parts": [url.scheme, url.netloc, url.hostname, url.port, url.path, url.query],
            "replaced": str(url.replace(query="")),  # Starlette's URL.replace
            "str_replaced": url.replace("http:", "https:"),  # str.replace
            "base_url": str(request.base_url),  # Starlette's own use of the scope
            "client_ip": request.client_ip,
            "host": request.host,
            "scheme": request.scheme,
        }

    with TestClient(serve(handler, "/where/{name}"), base_url="http://example.com:8080") as client:
        answer = client.get("/where/here?x=1&y=two").json()
    assert answer == {
        "url": "http://example.com:8080/where/here?x=1&y=two",
        "parts": ["http", "example.com:8080", "example.com", 8080, "/where/here", "x=1&y=two"],
        "replaced": "http://example.com:8080/where/here",
        "str_replaced": "https://example.com:8080/where/here?x=1&y=two",
        "base_url": "http://example.com:8080/",
        "client_ip": "127.0.0.1",
        "host": "example.com:8080",
        "scheme": "http",
    }


def test_client_ip_and_host_are_empty_strings_when_unknown() -> None:
    app = serve(lambda request: {"ip": request.client_ip, "host": request.host})

    async def anonymous(scope: Scope, receive: Receive, send: Send) -> None:
        """What a server that knows no client address, and a Host-less client, send."""
        if scope["type"] == "http":
            scope = {**scope, "client": None}
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"host"]
        await app(scope, receive, send)

    assert call(anonymous).json() == {"ip": "", "host": ""}


def test_context_is_a_dict_per_request_that_middleware_can_fill() -> None:
    def handler(request: Request) -> dict[str, object]:
        before = dict(request.context)
        request.context["handled"] = True
        return {"before": before, "user": request.context.get("user")}

    app = serve(handler)

    async def who(scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI middleware naming the user, as an authentication middleware would."""
        for name, value in scope.get("headers", ()):
            if name == b"x-user":
                scope.setdefault("cello.context", {})["user"] = value.decode()
        await app(scope, receive, send)

    with TestClient(who) as client:
        assert client.get("/", headers={"X-User": "ann"}).json() == {
            "before": {"user": "ann"},
            "user": "ann",
        }
        # The next request starts with its own, empty, context.
        assert client.get("/").json() == {"before": {}, "user": None}


def test_form_is_a_dict_of_last_values_with_getlist() -> None:
    def handler(request: Request) -> dict[str, object]:
        form = request.form()
        assert isinstance(form, dict)
        assert request.form() is form  # parsed once
        return {
            "data": form,
            "name": form["name"],
            "missing": form.get("missing", ""),
            "tags": form.getlist("tag"),
            "all": form.get_all("tag"),
            "pairs": form.multi_items(),
        }

    answer = call(
        serve(handler, methods=("POST",)),
        "POST",
        content=b"name=Ann+Lee&tag=x&tag=y&empty=&amp=%26%3D",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ).json()
    assert answer == {
        "data": {"name": "Ann Lee", "tag": "y", "empty": "", "amp": "&="},
        "name": "Ann Lee",
        "missing": "",
        "tags": ["x", "y"],
        "all": ["x", "y"],
        "pairs": [["name", "Ann Lee"], ["tag", "x"], ["tag", "y"], ["empty", ""], ["amp", "&="]],
    }


def test_multipart_form_is_refused_with_a_clear_415() -> None:
    app = serve(lambda request: request.form(), methods=("POST",))
    response = call(app, "POST", data={"a": "1"}, files={"f": ("a.txt", b"hi")})
    assert response.status_code == 415
    assert "multipart/form-data is not supported" in response.json()["detail"]


# ----------------------------------------------------------------- the response


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: Response.json({"a": 1}),
        lambda tmp: Response.text("hi"),
        lambda tmp: Response.html("<p>hi</p>"),
        lambda tmp: Response.xml({"a": 1}),
        lambda tmp: Response.binary(b"\x00"),
        lambda tmp: Response.created({"id": 1}, location="/1"),
        lambda tmp: Response.created(),
        lambda tmp: Response.redirect("/x"),
        lambda tmp: Response.no_content(),
        lambda tmp: Response.file(tmp / "f.txt"),
        lambda tmp: Response.file("f.txt", directory=tmp),
        lambda tmp: Response.sendfile(tmp / "f.txt"),
        lambda tmp: Response.sse(SseStream()),
        lambda tmp: Response("raw", status_code=201),
    ],
)
def test_every_factory_makes_a_cello_response(
    make: Callable[[Path], Response], tmp_path: Path
) -> None:
    assert isinstance(make(tmp_path), Response)


def test_an_sse_response_is_still_an_sse_response() -> None:
    # cello's HTTP serving finds the streams to end at shutdown by this class.
    assert isinstance(Response.sse(SseStream()), SseResponse)


def test_a_response_can_be_changed_after_it_is_made() -> None:
    def handler() -> Response:
        response = Response.json({"ok": True})
        response.set_header("X-Custom", "first")
        response.set_header("x-custom", "second")  # replaces, whatever the case
        response.set_header("Cache-Control", "no-store")
        response.set_cookie("session", "abc", httponly=True)
        assert response.status == 200
        response.status = 202
        return response

    response = call(serve(handler))
    assert response.status_code == 202
    assert response.headers.get_list("x-custom") == ["second"]
    assert response.headers["cache-control"] == "no-store"
    assert "session=abc" in response.headers["set-cookie"]
    assert response.json() == {"ok": True}


@pytest.mark.parametrize("value", ["a\r\nSet-Cookie: evil=1", "a\nb", "a\rb", "a\0b"])
def test_set_header_refuses_line_breaks(value: str) -> None:
    response = Response.text("hi")
    with pytest.raises(ValueError, match="cannot contain CR, LF or NUL"):
        response.set_header("X-Note", value)
    with pytest.raises(ValueError, match="cannot contain CR, LF or NUL"):
        response.set_header(value, "x")


def test_the_constructor_still_works() -> None:
    def handler() -> Response:
        response = Response("made by hand", status_code=201, media_type="text/plain")
        assert response.status == 201
        return response

    response = call(serve(handler))
    assert (response.status_code, response.text) == (201, "made by hand")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_created_with_data_and_location() -> None:
    app = serve(lambda: Response.created({"id": 42}, location="/items/42", headers={"X-A": "1"}))
    response = call(app)
    assert response.status_code == 201
    assert response.json() == {"id": 42}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["location"] == "/items/42"
    assert response.headers["x-a"] == "1"


def test_created_without_data_has_an_empty_body_and_no_location() -> None:
    response = call(serve(lambda: Response.created()))
    assert response.status_code == 201
    assert response.content == b""
    assert "location" not in response.headers


def test_xml_from_a_dict_nests_repeats_and_escapes() -> None:
    data = {
        "name": 'Tom & "Jerry" <cat>',
        "version": 1.5,
        "stable": True,
        "owner": None,
        "tags": ["a", "b"],
        "author": {"first": "Ann", "langs": ["py", "rs"]},
    }
    response = call(serve(lambda: Response.xml(data, root_name="framework", status=203)))
    assert response.status_code == 203
    assert response.headers["content-type"] == "application/xml"
    assert response.text.startswith('<?xml version="1.0" encoding="utf-8"?>')
    assert "<cat>" not in response.text
    assert "Tom &amp;" in response.text
    root = ET.fromstring(response.content)
    assert root.tag == "framework"
    assert root.findtext("name") == 'Tom & "Jerry" <cat>'
    assert root.findtext("version") == "1.5"
    assert root.findtext("stable") == "true"
    owner = root.find("owner")
    assert owner is not None
    assert owner.text is None
    assert len(owner) == 0
    assert [t.text for t in root.findall("tags")] == ["a", "b"]
    assert root.findtext("author/first") == "Ann"
    assert [t.text for t in root.findall("author/langs")] == ["py", "rs"]


def test_xml_keeps_carriage_returns_and_lists_at_the_top() -> None:
    root = ET.fromstring(Response.xml({"text": "a\r\nb"}).body)
    assert root.findtext("text") == "a\r\nb"  # a raw CR would be read back as LF
    root = ET.fromstring(Response.xml([1, [2, 3]], root_name="numbers").body)
    assert root.tag == "numbers"
    assert [item.text for item in root] == ["1", None]
    assert [item.text for item in root[1]] == ["2", "3"]


def test_xml_from_a_string_is_sent_as_it_is() -> None:
    document = "<root><item>1</item></root>"
    response = call(serve(lambda: Response.xml(document)))
    assert response.text == document
    assert response.headers["content-type"] == "application/xml"


@pytest.mark.parametrize("name", ["1st", "a b", "x:y", "", "<a>", "-dash", "a&b"])
def test_xml_refuses_names_that_are_not_xml_names(name: str) -> None:
    with pytest.raises(ValueError, match="is not an XML element name"):
        Response.xml({name: 1})
    with pytest.raises(ValueError, match="is not an XML element name"):
        Response.xml({"a": 1}, root_name=name)


def test_xml_refuses_what_xml_cannot_carry() -> None:
    with pytest.raises(ValueError, match=r"XML 1\.0 cannot carry"):
        Response.xml({"a": "bell \x07"})
    with pytest.raises(TypeError, match="cannot write set as XML"):
        Response.xml({"a": {1, 2}})


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda: Response.redirect("/to"), 302),
        (lambda: Response.redirect("/to", permanent=True), 301),
        (lambda: Response.redirect("/to", True), 301),  # Cello's positional `permanent`
        (lambda: Response.redirect("/to", status=301), 301),
        (lambda: Response.redirect("/to", status=303), 303),
        (lambda: Response.redirect("/to", 307), 307),
        (lambda: Response.redirect("/to", status=308, permanent=True), 308),
    ],
)
def test_redirect_statuses(make: Callable[[], Response], status: int) -> None:
    response = call(serve(make))
    assert (response.status_code, response.headers["location"]) == (status, "/to")


@pytest.mark.parametrize("status", [200, 204, 300, 304, 404, 500])
def test_redirect_refuses_a_status_that_is_not_a_redirect(status: int) -> None:
    with pytest.raises(ValueError, match="a redirect status is one of 301, 302, 303, 307, 308"):
        Response.redirect("/to", status=status)


def test_redirect_refuses_a_temporary_status_called_permanent() -> None:
    with pytest.raises(ValueError, match="permanent=True asks for 301 or 308"):
        Response.redirect("/to", status=307, permanent=True)


def test_binary_names_a_misplaced_content_type() -> None:
    with pytest.raises(TypeError, match="content_type='image/png'"):
        Response.binary(b"PNG", "image/png")  # type: ignore[arg-type]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "report.txt").write_text("quarterly numbers\n")
    (tmp_path / "clip.mp4").write_bytes(b"0123456789")
    return tmp_path


def file_app(root: Path) -> App:
    app = App()

    @app.get("/own-name")
    def own_name() -> Response:
        return Response.file(root / "report.txt")

    @app.get("/renamed")
    def renamed() -> Response:
        return Response.file(str(root / "report.txt"), filename="q3.txt")

    @app.get("/static/{name}")
    def static(request: Request) -> Response:
        return Response.file(request.params["name"], directory=root)

    @app.get("/download/{name}")
    def download(request: Request) -> Response:
        name = request.params["name"]
        return Response.file(name, filename=name, directory=root)

    @app.get("/inline/{name}")
    def inline(request: Request) -> Response:
        content_type = request.get_query_param("type")
        return Response.sendfile(root / request.params["name"], content_type=content_type)

    return app


def test_file_is_a_download_named_after_the_file(files: Path) -> None:
    with TestClient(file_app(files)) as client:
        response = client.get("/own-name")
        assert response.text == "quarterly numbers\n"
        assert response.headers["content-disposition"] == 'attachment; filename="report.txt"'
        response = client.get("/renamed")
        assert response.headers["content-disposition"] == 'attachment; filename="q3.txt"'


def test_file_from_a_directory_is_inline_unless_named(files: Path) -> None:
    with TestClient(file_app(files)) as client:
        response = client.get("/static/report.txt")
        assert response.text == "quarterly numbers\n"
        assert "content-disposition" not in response.headers
        response = client.get("/download/report.txt")
        assert response.headers["content-disposition"] == 'attachment; filename="report.txt"'


def test_sendfile_serves_inline(files: Path) -> None:
    with TestClient(file_app(files)) as client:
        response = client.get("/inline/report.txt")
        assert response.text == "quarterly numbers\n"
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert "content-disposition" not in response.headers
        response = client.get("/inline/clip.mp4", params={"type": "video/mp4"})
        assert response.headers["content-type"] == "video/mp4"
        response = client.get("/inline/clip.mp4", headers={"Range": "bytes=2-4"})
        assert (response.status_code, response.content) == (206, b"234")
        assert client.get("/inline/missing.txt").status_code == 404


# ----------------------------------------------- SSE events returned as they are


def events(*names: str) -> list[SseEvent]:
    return [SseEvent(f"data of {name}", event=name, id=str(n)) for n, name in enumerate(names)]


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (lambda: SseStream(events("a", "b")), ["a", "b"]),
        (lambda: events("one")[0], ["one"]),
        (lambda: events("a", "b", "c"), ["a", "b", "c"]),
        (lambda: tuple(events("a", "b")), ["a", "b"]),
    ],
    ids=["stream", "event", "list", "tuple"],
)
def test_returned_events_are_an_sse_response(
    result: Callable[[], object], expected: list[str]
) -> None:
    response = call(serve(result))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert sse_events(response.text) == [
        {"event": name, "id": str(n), "data": f"data of {name}"} for n, name in enumerate(expected)
    ]


def test_an_empty_list_is_still_json() -> None:
    response = call(serve(lambda: []))
    assert (response.headers["content-type"], response.json()) == ("application/json", [])


def test_a_list_mixing_events_and_other_values_is_a_500() -> None:
    response = call(serve(lambda: [SseEvent("x"), "y"]))
    assert response.status_code == 500


# ----------------------------------- Cello's pages' handlers, on a real server


def docs_style_app(root: Path) -> App:
    """Handlers written as Cello's requests/responses pages write them (same calls)."""
    app = App()
    (root / "sales.csv").write_text("region,total\nnorth,9\n")
    (root / "badge.png").write_bytes(b"\x89PNG not really")

    class BearerSubject:
        """ASGI middleware putting the token's subject where the handlers look for it."""

        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            for name, value in scope.get("headers", ()):
                if name == b"authorization" and value.startswith(b"Bearer "):
                    claims = {"sub": value.removeprefix(b"Bearer ").decode()}
                    scope.setdefault("cello.context", {})["jwt_claims"] = claims
            await self.app(scope, receive, send)

    app.add_middleware(BearerSubject)

    @app.get("/books")
    def books(request):  # type: ignore[no-untyped-def]
        title = request.get_query_param("title", "")
        page = int(request.get_query_param("page", "1"))
        order = request.query.get("order", "title")
        return {"title": title, "page": page, "order": order, "genres": request.query.get_all("g")}

    @app.get("/features")
    def features(request):  # type: ignore[no-untyped-def]
        return {"client_version": request.get_header("Client-Version", "0")}

    @app.post("/ingest")
    def ingest(request):  # type: ignore[no-untyped-def]
        if request.is_json():
            return {"kind": "json", "payload": request.json()}
        elif request.is_form():
            return {"kind": "form", "payload": request.form()}
        elif request.is_multipart():
            return {"kind": "upload"}
        else:
            return {"kind": "other", "content_type": request.content_type()}

    @app.post("/signin")
    def signin(request):  # type: ignore[no-untyped-def]
        form = request.form()
        return {"email": form.get("email", ""), "remember": form.get("remember") == "on"}

    @app.get("/me")
    def me(request):  # type: ignore[no-untyped-def]
        claims = request.context.get("jwt_claims")
        if not claims:
            return Response.json({"error": "no token"}, status=401)
        return {"subject": claims["sub"]}

    @app.post("/echo-meta")
    def echo_meta(request):  # type: ignore[no-untyped-def]
        return {
            "ip": request.client_ip,
            "url": request.url,
            "scheme": request.scheme,
            "host": request.host,
            "content_type": request.content_type,
            "content_length": request.content_length,
        }

    @app.post("/notes")
    def add_note(request):  # type: ignore[no-untyped-def]
        note = request.json()
        return Response.created({"id": 7, **note}, location="/notes/7")

    @app.get("/build")
    def build(request):  # type: ignore[no-untyped-def]
        response = Response.json({"build": "ok"})
        response.set_header("X-Build", "2024.1")
        response.set_header("X-Trace", "t-19")
        return response

    @app.get("/catalog.xml")
    def catalog(request):  # type: ignore[no-untyped-def]
        return Response.xml({"title": "Dune", "year": 1965}, root_name="book")

    @app.get("/archive")
    def archive(request):  # type: ignore[no-untyped-def]
        return Response.redirect("/posts")

    @app.get("/v1")
    def v1(request):  # type: ignore[no-untyped-def]
        return Response.redirect("/v2", permanent=True)

    @app.get("/gone")
    def gone(request):  # type: ignore[no-untyped-def]
        return Response.redirect("/elsewhere", status=301)

    @app.get("/reports/q3")
    def q3(request):  # type: ignore[no-untyped-def]
        return Response.file(str(root / "sales.csv"), filename="q3-sales.csv")

    @app.get("/reports/raw")
    def raw_report(request):  # type: ignore[no-untyped-def]
        return Response.file(str(root / "sales.csv"))

    @app.get("/badge")
    def badge(request):  # type: ignore[no-untyped-def]
        data = (root / "badge.png").read_bytes()
        return Response.binary(data, content_type="image/png")

    @app.get("/badge-file")
    def badge_file(request):  # type: ignore[no-untyped-def]
        return Response.sendfile(str(root / "badge.png"))

    @app.delete("/notes/{id}")
    def delete_note(request):  # type: ignore[no-untyped-def]
        return Response.no_content()

    @app.get("/alerts")
    def alerts(request):  # type: ignore[no-untyped-def]
        return [SseEvent("disk 91% full", event="warning"), SseEvent.data("first\nsecond")]

    return app


@pytest.fixture(scope="module")
def docs_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    app = docs_style_app(tmp_path_factory.mktemp("docs-style"))
    with (
        ThreadServer(app) as server,
        httpx.Client(base_url=server.http_url(""), timeout=10) as client,
    ):
        yield client


def test_docs_style_query_and_headers(docs_client: httpx.Client) -> None:
    answer = docs_client.get("/books", params=[("title", "dune"), ("g", "sf"), ("g", "epic")])
    assert answer.json() == {"title": "dune", "page": 1, "order": "title", "genres": ["sf", "epic"]}
    assert docs_client.get("/features").json() == {"client_version": "0"}
    answer = docs_client.get("/features", headers={"client-version": "3"})
    assert answer.json() == {"client_version": "3"}


def test_docs_style_content_type_detection(docs_client: httpx.Client) -> None:
    answer = docs_client.post("/ingest", json={"a": 1}).json()
    assert answer == {"kind": "json", "payload": {"a": 1}}
    answer = docs_client.post("/ingest", data={"a": "1", "b": ["x", "y"]}).json()
    assert answer == {"kind": "form", "payload": {"a": "1", "b": "y"}}
    answer = docs_client.post("/ingest", files={"f": ("f.txt", b"hi")}).json()
    assert answer == {"kind": "upload"}
    answer = docs_client.post("/ingest", content=b"a,b", headers={"Content-Type": "text/csv"})
    assert answer.json() == {"kind": "other", "content_type": "text/csv"}


def test_docs_style_form_and_context(docs_client: httpx.Client) -> None:
    answer = docs_client.post("/signin", data={"email": "a@b.c", "remember": "on"}).json()
    assert answer == {"email": "a@b.c", "remember": True}
    assert docs_client.post("/signin", data={}).json() == {"email": "", "remember": False}
    assert docs_client.get("/me").status_code == 401
    answer = docs_client.get("/me", headers={"Authorization": "Bearer u-7"}).json()
    assert answer == {"subject": "u-7"}


def test_docs_style_connection_facts(docs_client: httpx.Client) -> None:
    base = str(docs_client.base_url).rstrip("/")
    answer = docs_client.post(
        "/echo-meta?x=1", content=b"12345", headers={"Content-Type": "text/plain"}
    )
    assert answer.json() == {
        "ip": "127.0.0.1",
        "url": f"{base}/echo-meta?x=1",
        "scheme": "http",
        "host": base.removeprefix("http://"),
        "content_type": "text/plain",
        "content_length": 5,
    }


def test_docs_style_responses(docs_client: httpx.Client) -> None:
    response = docs_client.post("/notes", json={"text": "buy milk"})
    assert (response.status_code, response.json()) == (201, {"id": 7, "text": "buy milk"})
    assert response.headers["location"] == "/notes/7"
    response = docs_client.get("/build")
    assert response.headers["x-build"] == "2024.1"
    assert response.headers["x-trace"] == "t-19"
    response = docs_client.get("/catalog.xml")
    assert response.headers["content-type"] == "application/xml"
    assert response.text.endswith("<book><title>Dune</title><year>1965</year></book>")
    for path, status, location in [
        ("/archive", 302, "/posts"),
        ("/v1", 301, "/v2"),
        ("/gone", 301, "/elsewhere"),
    ]:
        response = docs_client.get(path)
        assert (response.status_code, response.headers["location"]) == (status, location)
    assert docs_client.delete("/notes/3").status_code == 204


def test_docs_style_files(docs_client: httpx.Client) -> None:
    response = docs_client.get("/reports/q3")
    assert response.text == "region,total\nnorth,9\n"
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="q3-sales.csv"'
    response = docs_client.get("/reports/raw")
    assert response.headers["content-disposition"] == 'attachment; filename="sales.csv"'
    expected = ("image/png", b"\x89PNG not really")
    response = docs_client.get("/badge")
    assert (response.headers["content-type"], response.content) == expected
    response = docs_client.get("/badge-file")
    assert (response.headers["content-type"], response.content) == expected
    assert "content-disposition" not in response.headers


def test_docs_style_returned_events(docs_client: httpx.Client) -> None:
    response = docs_client.get("/alerts")
    assert response.headers["content-type"] == "text/event-stream"
    assert sse_events(response.text) == [
        {"event": "warning", "data": "disk 91% full"},
        {"data": "first\nsecond"},
    ]


def test_the_websocket_upgrade_request_has_the_same_api() -> None:
    app = App()

    @app.websocket("/ws")
    def facts(ws: Any) -> None:
        request = ws.request
        ws.send_json(
            {
                "token": request.get_header("X-Token", "none"),
                "room": request.get_query_param("room"),
                "url": request.url,
                "path": request.url.path,
                "scheme": request.scheme,
                "client_ip": request.client_ip,
                "content_length": request.content_length,
                "context": request.context,
            }
        )

    with (
        TestClient(app) as client,
        client.websocket_connect("/ws?room=lobby", headers={"X-Token": "t"}) as ws,
    ):
        assert ws.receive_json() == {
            "token": "t",
            "room": "lobby",
            "url": "ws://testserver/ws?room=lobby",
            "path": "/ws",
            "scheme": "ws",
            "client_ip": "127.0.0.1",
            "content_length": None,
            "context": {},
        }


def test_the_requests_mappings_can_be_returned_as_json() -> None:
    """Cello's docs treat headers, query and cookies as dicts: returning them works."""

    def handler(request: Request) -> dict[str, object]:
        return {"headers": request.headers, "query": request.query, "cookies": request.cookies}

    answer = call(
        serve(handler),
        url="/?tag=a&tag=b&q=x",
        headers={"X-Trace": "t1", "Cookie": "session=abc"},
    ).json()
    assert answer["headers"]["x-trace"] == "t1"
    assert answer["query"] == {"tag": "b", "q": "x"}  # as request.query["tag"] gives
    assert answer["cookies"] == {"session": "abc"}
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        Response.json({"tags": {"a"}})
