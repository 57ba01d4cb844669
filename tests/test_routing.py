"""Path patterns and the route table: one syntax for HTTP and WebSocket routes."""

from __future__ import annotations

import uuid

import pytest

from cello.routing import PathPattern, RouteTable

pytestmark = pytest.mark.usefixtures("websocket_runner")


def test_static_and_parameter_paths() -> None:
    table: RouteTable[str] = RouteTable()
    table.add("/ws", "static")
    table.add("/ws/rooms/{room_id}", "room")
    assert table.match("/ws") == ("static", {})
    assert table.match("/ws/rooms/lobby") == ("room", {"room_id": "lobby"})
    assert table.match("/ws/rooms/") is None
    assert table.match("/ws/rooms/a/b") is None
    assert table.match("/other") is None


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/items/{id:int}", "/items/42", {"id": 42}),
        ("/items/{id:int}", "/items/x", None),
        ("/price/{p:float}", "/price/2.5", {"p": 2.5}),
        (
            "/u/{key:uuid}",
            "/u/6ba7b810-9dad-11d1-80b4-00c04fd430c8",
            {"key": uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")},
        ),
        ("/files/{rest:path}", "/files/a/b/c.txt", {"rest": "a/b/c.txt"}),
        ("/{a}/{b}", "/x/y", {"a": "x", "b": "y"}),
    ],
)
def test_typed_parameters(pattern: str, path: str, expected: dict[str, object] | None) -> None:
    assert PathPattern(pattern).match(path) == expected


def test_first_registered_dynamic_route_wins() -> None:
    table: RouteTable[str] = RouteTable()
    table.add("/r/{id:int}", "int")
    table.add("/r/{name}", "str")
    assert table.match("/r/7") == ("int", {"id": 7})
    assert table.match("/r/seven") == ("str", {"name": "seven"})


def test_mounted_scope_matches_below_root_path() -> None:
    table: RouteTable[str] = RouteTable()
    table.add("/ws", "ws")
    scope = {"type": "websocket", "path": "/rt/ws", "root_path": "/rt"}
    assert table.match_scope(scope) == ("ws", {})


def test_bad_routes_are_refused_at_registration() -> None:
    table: RouteTable[str] = RouteTable()
    table.add("/ws", "a")
    with pytest.raises(ValueError, match="already registered"):
        table.add("/ws", "b")
    with pytest.raises(ValueError, match="must start with '/'"):
        table.add("ws", "c")
    with pytest.raises(ValueError, match="Unknown path parameter type 'nope'"):
        table.add("/x/{id:nope}", "d")


def test_routes_taking_the_rest_of_the_path_match_after_the_others() -> None:
    table: RouteTable[str] = RouteTable()
    table.add("/users/{*path}", "rest")
    table.add("/users/{id:int}", "int")
    table.add("/users/{name}", "name")
    table.add("/users/me", "me")
    assert table.match("/users/me") == ("me", {})
    assert table.match("/users/7") == ("int", {"id": 7})
    assert table.match("/users/ada") == ("name", {"name": "ada"})
    assert table.match("/users/7/posts/9") == ("rest", {"path": "7/posts/9"})
