"""Reading an event stream the way a browser's `EventSource` does, for the SSE tests."""

from __future__ import annotations

from collections.abc import Iterator


def sse_events(text: str) -> list[dict[str, str]]:
    """The events of a whole event-stream body, as dicts of their fields (comments, such
    as keepalives, skipped; a field given twice, as `data` for multi-line text, joined
    with a line break)."""
    return read_events(iter([*text.splitlines(), ""]), None)


def read_events(lines: Iterator[str], count: int | None) -> list[dict[str, str]]:
    """The next `count` events from a stream's lines (all of them for `None`)."""
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    for line in lines:
        if not line:  # a blank line ends an event
            if fields:
                events.append(fields)
                fields = {}
                if count is not None and len(events) == count:
                    break
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = f"{fields[name]}\n{value}" if name in fields else value
    return events
