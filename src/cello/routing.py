"""Path patterns and the table that matches request paths against them.

HTTP and WebSocket routes share this one syntax and matcher: `{name}` matches one path
segment, and the typed forms `{name:int}`, `{name:float}`, `{name:uuid}` and `{name:path}`
(the rest of the path) convert the value. Cello's wildcard spellings `{*name}` and
`{name:*}` mean `{name:path}`. The pattern compiler and the convertors are Starlette's, so
paths mean the same thing in a cello app mounted inside Starlette.

Static paths match first; then parameter routes in the order they were declared, except
that routes taking the rest of the path come after the others, so `/users/{*path}` never
hides `/users/{id}` (Cello matches by specificity; Starlette, in order).

A brace that is not one of these placeholders is refused when the route is declared: a
route taking `{id:integer}` or `{*}` literally would never match, and say nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from starlette._utils import get_route_path
from starlette.convertors import CONVERTOR_TYPES, Convertor, PathConvertor
from starlette.routing import PARAM_REGEX, compile_path
from starlette.types import Scope

__all__ = ["PathPattern", "RouteTable", "get_route_path"]

T = TypeVar("T")

#: Cello's wildcard placeholders, `{*name}` and `{name:*}`, as Starlette spells them.
_WILDCARD = re.compile(r"\{\*([a-zA-Z_][a-zA-Z0-9_]*)\}|\{([a-zA-Z_][a-zA-Z0-9_]*):\*\}")


def normalize_path(path: str) -> str:
    """`path` in Starlette's placeholder syntax, or `ValueError` naming what is wrong.

    Wildcards become `{name:path}`; any other brace must belong to a `{name}` or
    `{name:type}` placeholder with a known type.
    """
    if not path.startswith("/"):
        raise ValueError(f"Route path must start with '/': {path!r}")
    path = _WILDCARD.sub(lambda m: "{%s:path}" % (m.group(1) or m.group(2)), path)
    known = ", ".join(f"{{name:{kind}}}" for kind in CONVERTOR_TYPES)
    for placeholder in PARAM_REGEX.finditer(path):
        kind = (placeholder.group(2) or ":str")[1:]
        if kind not in CONVERTOR_TYPES:
            raise ValueError(
                f"Unknown path parameter type {kind!r} in {placeholder.group(0)} of route "
                f"{path!r}; the types are: {{name}}, {known}, and {{*name}} for the rest of "
                "the path"
            )
    leftover = PARAM_REGEX.sub("", path)
    if "{" in leftover or "}" in leftover:
        raise ValueError(
            f"Route {path!r} has a brace that is not a path parameter; write {{name}}, "
            f"{known}, or {{*name}} for the rest of the path"
        )
    return path


class PathPattern:
    """A compiled route path such as `/ws/rooms/{room_id}` or `/items/{id:int}`."""

    __slots__ = ("_convertors", "_regex", "path")

    def __init__(self, path: str) -> None:
        self.path = path = normalize_path(path)
        regex, _format, convertors = compile_path(path)
        # Matched whole (`fullmatch`): Starlette's `^...$` with `match` also accepts a path
        # ending in a newline ("/items/42%0A" as id 42). DOTALL lets `{rest:path}` take any
        # rest, newlines included, where Starlette's `.*` would stop at one.
        self._regex: re.Pattern[str] = re.compile(regex.pattern, re.DOTALL)
        self._convertors: dict[str, Convertor[Any]] = convertors

    @property
    def takes_rest(self) -> bool:
        """True when a parameter takes the rest of the path (`{name:path}`, `{*name}`)."""
        return any(isinstance(c, PathConvertor) for c in self._convertors.values())

    @property
    def is_static(self) -> bool:
        """True when the path has no parameters, so it matches by plain equality."""
        return not self._convertors

    def match(self, path: str) -> dict[str, Any] | None:
        """The converted path parameters if `path` matches, else `None`."""
        found = self._regex.fullmatch(path)
        if found is None:
            return None
        return {
            name: self._convertors[name].convert(value) for name, value in found.groupdict().items()
        }


class RouteTable(Generic[T]):
    """Maps paths to endpoints: static paths by dict lookup, then parameter routes in
    registration order, those taking the rest of the path last."""

    def __init__(self) -> None:
        self._static: dict[str, T] = {}
        self._dynamic: list[tuple[PathPattern, T]] = []
        self._all: list[tuple[PathPattern, T]] = []

    def add(self, path: str, endpoint: T) -> None:
        pattern = PathPattern(path)
        path = pattern.path
        if any(existing.path == path for existing, _ in self._all):
            raise ValueError(f"A route for {path!r} is already registered")
        self._all.append((pattern, endpoint))
        if pattern.is_static:
            self._static[path] = endpoint
        else:
            self._dynamic.append((pattern, endpoint))
            self._dynamic.sort(key=lambda entry: entry[0].takes_rest)  # stable: order kept

    def exact(self, path: str) -> T | None:
        """The endpoint registered for exactly this route path, if any."""
        path = normalize_path(path)
        for pattern, endpoint in self._all:
            if pattern.path == path:
                return endpoint
        return None

    def match(self, path: str) -> tuple[T, dict[str, Any]] | None:
        """The endpoint for `path` and its converted parameters, or `None`."""
        endpoint = self._static.get(path)
        if endpoint is not None:
            return endpoint, {}
        for pattern, candidate in self._dynamic:
            params = pattern.match(path)
            if params is not None:
                return candidate, params
        return None

    def match_scope(self, scope: Scope) -> tuple[T, dict[str, Any]] | None:
        """Match the scope's path below its `root_path` (the app may be mounted)."""
        return self.match(get_route_path(scope) or "/")

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return ((pattern.path, endpoint) for pattern, endpoint in self._all)

    def __len__(self) -> int:
        return len(self._all)
