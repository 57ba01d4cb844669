"""Property-based tests (hypothesis): path matching and parameter conversion for any value,
and messages of any content round-tripping through a real uvicorn on every backend."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.routing import PARAM_REGEX
from websockets.sync.client import ClientConnection, connect

from cello import App, Request, WebSocket
from cello.routing import PathPattern, RouteTable
from cello.runners import RUNNER_VARIABLE, RUNNERS
from servers import WS_BACKENDS, ThreadServer

#: The largest message the round-trip server accepts (its `ws_max_size`).
LIMIT = 256 * 1024
WAIT = 10

#: One path segment: any text without "/", and not "." or ".." (which URLs resolve away).
segments = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda s: "/" not in s and s.strip(".") != ""
)
#: Text as WebSocket carries it: any code point but lone surrogates (not valid UTF-8).
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=2000)


# ----------------------------------------------------------------- path matching


@given(segments)
def test_a_str_parameter_matches_any_segment(segment: str) -> None:
    assert PathPattern("/rooms/{room}/join").match(f"/rooms/{segment}/join") == {"room": segment}


@given(segments, segments)
def test_a_str_parameter_never_spans_two_segments(first: str, second: str) -> None:
    assert PathPattern("/rooms/{room}").match(f"/rooms/{first}/{second}") is None


@given(st.integers(min_value=0, max_value=10**30))
def test_int_parameters_round_trip(number: int) -> None:
    assert PathPattern("/items/{id:int}").match(f"/items/{number}") == {"id": number}


@given(segments.filter(lambda s: not (s.isascii() and s.isdigit())))
def test_int_parameters_refuse_anything_but_ascii_digits(segment: str) -> None:
    assert PathPattern("/items/{id:int}").match(f"/items/{segment}") is None


@given(st.integers(max_value=-1))
def test_int_parameters_refuse_negative_numbers(number: int) -> None:
    assert PathPattern("/items/{id:int}").match(f"/items/{number}") is None


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False))
def test_float_parameters_round_trip(number: float) -> None:
    text = f"{number:.6f}"
    assert PathPattern("/price/{p:float}").match(f"/price/{text}") == {"p": float(text)}


@given(st.uuids())
def test_uuid_parameters_round_trip(value: uuid.UUID) -> None:
    assert PathPattern("/u/{key:uuid}").match(f"/u/{value}") == {"key": value}


@given(st.lists(segments, min_size=1, max_size=6))
def test_a_path_parameter_takes_the_rest(parts: list[str]) -> None:
    rest = "/".join(parts)
    assert PathPattern("/files/{rest:path}").match(f"/files/{rest}") == {"rest": rest}


@given(segments.filter(lambda s: "{" not in s and "}" not in s))  # braces: parameters
def test_a_static_route_wins_over_a_parameter_whatever_the_order(segment: str) -> None:
    table: RouteTable[str] = RouteTable()
    table.add("/r/{name}", "dynamic")
    table.add(f"/r/{segment}", "static")
    assert table.match(f"/r/{segment}") == ("static", {})


#: Path segments with braces in them: placeholders, broken ones, and stray braces.
braced = st.builds(
    lambda before, braces, after: before + braces + after,
    st.text(st.characters(exclude_characters="/", exclude_categories=("Cs",)), max_size=8),
    st.sampled_from(["{", "}", "{a}", "{a:int}", "{*a}", "{a:*}", "{a:x}", "{}", "{a b}"])
    | st.text("{}:*ab_1 ", min_size=1, max_size=8).filter(lambda t: "{" in t or "}" in t),
    st.text(st.characters(exclude_characters="/", exclude_categories=("Cs",)), max_size=8),
)


@given(braced)
@example("{")
@example("{id:integer}")
@example("{*}")
@example("{_}{_}")
def test_a_brace_is_a_parameter_or_refused_never_literal(segment: str) -> None:
    table: RouteTable[str] = RouteTable()
    try:
        table.add(f"/r/{segment}", "x")
    except ValueError as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        known = ("brace", "Unknown path parameter type", "Duplicated param name")
        assert any(reason in refusal for reason in known), refusal
        return
    (pattern,) = [path for path, _ in table]
    assert not PathPattern(pattern).is_static
    assert "{" not in PARAM_REGEX.sub("", pattern)
    assert "}" not in PARAM_REGEX.sub("", pattern)


# ----------------------------------------------------------------- through a real server


def param_app() -> App:
    app = App()

    @app.get("/rooms/{room}")
    def room(request: Request) -> dict[str, object]:
        return {"room": request.params["room"]}

    @app.get("/items/{id:int}")
    def item(request: Request) -> dict[str, object]:
        return {"id": request.params["id"]}

    @app.websocket("/echo")
    def echo(ws: WebSocket) -> None:
        for msg in ws:
            if msg.is_text():
                ws.send_text(msg.text or "")
            else:
                ws.send_binary(msg.data or b"")

    return app


@pytest.fixture(scope="module", params=RUNNERS)
def servers(request: pytest.FixtureRequest) -> Iterator[dict[str, ThreadServer]]:
    """One server per backend for the whole module (hypothesis runs many examples), on
    each runner in turn: the app reads the runner when a client connects."""
    running = {}
    env = pytest.MonkeyPatch()
    env.setenv(RUNNER_VARIABLE, request.param)
    try:
        for backend in WS_BACKENDS:
            running[backend] = ThreadServer(param_app(), ws=backend, ws_max_size=LIMIT)
            running[backend].__enter__()
        yield running
    finally:
        for server in running.values():
            server.__exit__(None, None, None)
        env.undo()


@pytest.fixture(scope="module")
def clients(servers: dict[str, ThreadServer]) -> Iterator[dict[str, ClientConnection]]:
    with contextlib.ExitStack() as stack:
        yield {
            backend: stack.enter_context(connect(server.url("/echo"), max_size=None))
            for backend, server in servers.items()
        }


FIXTURE_OK = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FIXTURE_OK
@given(segment=segments)
def test_an_encoded_segment_arrives_decoded_as_the_parameter(
    servers: dict[str, ThreadServer], segment: str
) -> None:
    server = servers["websockets-sansio"]  # the HTTP path is the same for every backend
    response = httpx.get(server.http_url(f"/rooms/{quote(segment, safe='')}"), timeout=WAIT)
    assert response.status_code == 200
    assert response.json() == {"room": segment}


def test_a_trailing_newline_is_part_of_the_path(servers: dict[str, ThreadServer]) -> None:
    """`/rooms/lobby%0A` names the room "lobby\\n", and `/items/42%0A` is no item."""
    server = servers["websockets-sansio"]
    assert httpx.get(server.http_url("/rooms/lobby%0A")).json() == {"room": "lobby\n"}
    assert httpx.get(server.http_url("/items/42%0A")).status_code == 404
    assert httpx.get(server.http_url("/items/42")).json() == {"id": 42}


@pytest.mark.parametrize("backend", WS_BACKENDS)
@FIXTURE_OK
@given(text=texts)
@example(text="\U0001f600\U00010348\U0010ffff")  # astral planes only
@example(text="")
def test_any_text_round_trips(
    clients: dict[str, ClientConnection], backend: str, text: str
) -> None:
    client = clients[backend]
    client.send(text)
    assert client.recv(WAIT) == text


@pytest.mark.parametrize("backend", WS_BACKENDS)
@FIXTURE_OK
@given(data=st.binary(max_size=LIMIT))
@example(data=b"")
@example(data=bytes(range(256)) * (LIMIT // 256))  # exactly the limit
def test_any_bytes_up_to_the_limit_round_trip(
    clients: dict[str, ClientConnection], backend: str, data: bytes
) -> None:
    client = clients[backend]
    client.send(data)
    assert client.recv(WAIT) == data
