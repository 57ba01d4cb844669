"""Path patterns and the table that matches request paths against them.

HTTP and WebSocket routes share this one syntax and matcher: `{name}` matches one path
segment, and the typed forms `{name:int}`, `{name:float}`, `{name:uuid}` and `{name:path}`
(the rest of the path) convert the value. The pattern compiler and the convertors are
Starlette's, so paths mean the same thing in a cello app mounted inside Starlette.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from starlette._utils import get_route_path
from starlette.convertors import Convertor
from starlette.routing import compile_path
from starlette.types import Scope

__all__ = ["PathPattern", "RouteTable", "get_route_path"]

T = TypeVar("T")


class PathPattern:
    """A compiled route path such as `/ws/rooms/{room_id}` or `/items/{id:int}`."""

    __slots__ = ("_convertors", "_regex", "path")

    def __init__(self, path: str) -> None:
        if not path.startswith("/"):
            raise ValueError(f"Route path must start with '/': {path!r}")
        self.path = path
        regex, _format, convertors = compile_path(path)
        # Matched whole (`fullmatch`): Starlette's `^...$` with `match` also accepts a path
        # ending in a newline ("/items/42%0A" as id 42). DOTALL lets `{rest:path}` take any
        # rest, newlines included, where Starlette's `.*` would stop at one.
        self._regex: re.Pattern[str] = re.compile(regex.pattern, re.DOTALL)
        self._convertors: dict[str, Convertor[Any]] = convertors

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
    """Maps paths to endpoints; static paths by dict lookup, the rest in registration order."""

    def __init__(self) -> None:
        self._static: dict[str, T] = {}
        self._dynamic: list[tuple[PathPattern, T]] = []
        self._all: list[tuple[PathPattern, T]] = []

    def add(self, path: str, endpoint: T) -> None:
        pattern = PathPattern(path)
        if any(existing.path == path for existing, _ in self._all):
            raise ValueError(f"A route for {path!r} is already registered")
        self._all.append((pattern, endpoint))
        if pattern.is_static:
            self._static[path] = endpoint
        else:
            self._dynamic.append((pattern, endpoint))

    def exact(self, path: str) -> T | None:
        """The endpoint registered for exactly this route path, if any."""
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
