"""Which web origins may open a WebSocket: the defence against cross-site WebSocket hijacking.

Browsers send cookies with a WebSocket upgrade from any page, and the same-origin policy
does not apply to WebSockets: a page on another site can open a socket to the app with the
user's session and read everything it sends. What the server has is the `Origin` header,
which browsers always set and pages cannot forge. `OriginPolicy` says which origins an
app or a route accepts; the connection code refuses the others with 403 before any guard
or handler runs.

An upgrade with no `Origin` header is allowed: browsers always send one, so its absence
means a non-browser client (a script, a service), which cross-site hijacking cannot use.
Such clients are refused, if need be, by a guard that checks a token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

from starlette.types import Scope

__all__ = ["OriginPolicy"]

_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}

#: `scheme://host[:port]`, where host may start with `*.` and port may be `*`.
_ENTRY = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://"
    r"(?P<host>\[[0-9a-f:.]+\]|(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*)"
    r"(:(?P<port>\d+|\*))?"
)
_LABEL = r"[a-z0-9_-]+(\.[a-z0-9_-]+)*"


def normalize(origin: str) -> str:
    """An origin as browsers serialize it: lower case, no default port, no trailing `/`."""
    origin = origin.strip().lower().rstrip("/")
    found = _ENTRY.fullmatch(origin)
    if found is None:
        return origin  # not an origin a browser sends: it matches no entry but an exact one
    scheme, host, port = found["scheme"], found["host"], found["port"]
    if port is None or _DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _compile(entry: str) -> re.Pattern[str] | str:
    """An exact origin as its normalized string, a pattern with `*` as a regex."""
    text = entry.strip().lower().rstrip("/")
    if text == "null":
        return text  # what sandboxed frames and file: pages send; only if listed
    found = _ENTRY.fullmatch(text)
    if found is None:
        raise ValueError(
            f"allowed origin {entry!r} is not scheme://host[:port] (a host may start with "
            "'*.', a port may be '*'), nor '*' or 'null'"
        )
    if "*" not in text:
        return normalize(text)
    scheme, host, port = found["scheme"], found["host"], found["port"]
    wildcard = host.startswith("*.")
    host_regex = _LABEL + r"\." + re.escape(host[2:]) if wildcard else re.escape(host)
    if port == "*":
        port_regex = r"(:\d+)?"
    elif port is None or _DEFAULT_PORTS.get(scheme) == port:
        port_regex = ""
    else:
        port_regex = ":" + port
    return re.compile(re.escape(scheme) + "://" + host_regex + port_regex)


class OriginPolicy:
    """The origins allowed to open a WebSocket.

    Each entry is an exact origin (`https://app.example.com`, `http://localhost:8000`), a
    pattern (`https://*.example.com` for any subdomain, not the bare domain;
    `http://localhost:*` for any port), `"null"` (the origin of sandboxed frames and local
    files), or `"*"` for every origin. Scheme and host compare case-insensitively, and a
    default port (`:443` for `https`, `:80` for `http`) is the same as none.

    Raises:
        ValueError: an entry is none of these (a path, a `*` inside a host, ...).
    """

    __slots__ = ("_exact", "_patterns", "allows_any", "entries")

    def __init__(self, allowed: Iterable[str]) -> None:
        entries = [allowed] if isinstance(allowed, str) else list(allowed)
        #: The entries as given.
        self.entries = tuple(entries)
        self.allows_any = "*" in (e.strip() for e in entries)
        self._exact: set[str] = set()
        self._patterns: list[re.Pattern[str]] = []
        for entry in entries:
            if entry.strip() == "*":
                continue
            compiled = _compile(entry)
            if isinstance(compiled, str):
                self._exact.add(compiled)
            else:
                self._patterns.append(compiled)

    @classmethod
    def of(cls, allowed: Sequence[str] | OriginPolicy | None) -> OriginPolicy | None:
        """A policy from what `App(allowed_origins=...)` takes; `None` stays `None`."""
        if allowed is None or isinstance(allowed, OriginPolicy):
            return allowed
        return cls(allowed)

    def allows(self, origin: str | None) -> bool:
        """Whether a request with this `Origin` header (`None`: no header) may connect."""
        if origin is None or self.allows_any:
            return True
        candidate = normalize(origin)
        if candidate in self._exact:
            return True
        return any(pattern.fullmatch(candidate) for pattern in self._patterns)

    def allows_scope(self, scope: Scope) -> bool:
        """`allows` for an ASGI scope's headers; several `Origin` headers are refused."""
        origins = [value for name, value in scope.get("headers", ()) if name == b"origin"]
        if len(origins) > 1:
            return False
        return self.allows(origins[0].decode("latin-1") if origins else None)

    def __repr__(self) -> str:
        return f"OriginPolicy({list(self.entries)!r})"
