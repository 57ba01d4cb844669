"""`Metrics`: what an operator watches in production, in Prometheus' text format.

Every `App` has one (`app.metrics`); `app.enable_metrics("/metrics")` serves it for
Prometheus to scrape, and `app.metrics.render()` gives the text to serve some other way
(behind a guard of your own, on another port). No dependency: the text format
(version 0.0.4) is a few lines per metric.

The metrics (each with its `# HELP` line; docs/deployment.md has the table): open
connections, connections accepted, closes by code, connections dropped as too slow,
messages received and sent, messages queued, HTTP responses by status, open SSE streams,
hub groups, and with a Redis hub, whether the relay is connected, its outages and what
it dropped.

How it is counted, and what it costs: a connection counts its own messages in two plain
ints written only on the event loop's thread; when it ends, its counts are added to the
app's totals under `_lock` (once per connection). A scrape adds the totals to the live
connections' counts, so nothing is summed per message beyond one integer increment.

Per process: with several workers (`--workers`, gunicorn) each has its own numbers, and a
scrape reaches one of them; scrape each worker on its own port, or sum what matters in
the dashboard, as with any multi-process Python server.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ._bridge import Channel
    from .hub import Hub
    from .sse import LiveStreams

__all__ = ["CONTENT_TYPE", "Metrics"]

#: The media type Prometheus expects for the text format.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: Close reasons of a connection dropped for not keeping up (see `_bridge.Channel`).
SLOW_REASONS: Final = frozenset({"client too slow", "send timed out"})


class Metrics:
    """Counters of one app's connections and requests; see the module.

    Args:
        live_channels: The app's open WebSocket connections (read at each scrape).
        live_streams: The app's open SSE streams.
        hub: The app's hub.
    """

    def __init__(self, live_channels: set[Channel], live_streams: LiveStreams, hub: Hub) -> None:
        self._live_channels = live_channels
        self._live_streams = live_streams
        self._hub = hub
        # Written from the loop's thread (and from several loops' threads when an app
        # serves more than one), so under `_lock`: correct without the GIL.
        self._lock = threading.Lock()
        self._accepted = 0
        self._messages_in = 0
        self._messages_out = 0
        self._closes: Counter[int] = Counter()
        self._dropped_slow = 0
        self._http: Counter[int] = Counter()

    def connection_ended(self, channel: Channel) -> None:
        """Add a finished connection's counts to the totals (once, when its task ends)."""
        if not channel.accepted:
            return  # refused before the handshake: not a connection that opened
        with self._lock:
            self._accepted += 1
            self._messages_in += channel.messages_in
            self._messages_out += channel.messages_out
            self._closes[channel.close_code or 1006] += 1
            if channel.close_code == 1008 and channel.close_reason in SLOW_REASONS:
                self._dropped_slow += 1

    def http_response(self, status: int) -> None:
        """Count one HTTP response."""
        with self._lock:
            self._http[status] += 1

    def render(self) -> str:
        """Every metric, in Prometheus' text format."""
        live = [channel for channel in list(self._live_channels) if channel.accepted]
        with self._lock:
            accepted = self._accepted
            messages_in = self._messages_in
            messages_out = self._messages_out
            closes = sorted(self._closes.items())
            dropped_slow = self._dropped_slow
            http = sorted(self._http.items())
        still_open = [channel for channel in live if channel.close_code is None]
        lines: list[str] = []
        add = _Writer(lines)
        add.gauge("cello_websocket_connections", "Open WebSocket connections.", len(still_open))
        add.counter(
            "cello_websocket_connections_total",
            "WebSocket connections accepted.",
            accepted + len(live),
        )
        add.counter(
            "cello_websocket_closes_total",
            "WebSocket connections that ended, by close code (1006: lost).",
            None,
            (({"code": str(code)}, count) for code, count in closes),
        )
        add.counter(
            "cello_websocket_dropped_slow_total",
            "WebSocket connections closed with 1008 for falling too far behind.",
            dropped_slow,
        )
        add.counter(
            "cello_websocket_messages_received_total",
            "WebSocket messages received from clients.",
            messages_in + sum(channel.messages_in for channel in live),
        )
        add.counter(
            "cello_websocket_messages_sent_total",
            "WebSocket messages sent to clients.",
            messages_out + sum(channel.messages_out for channel in live),
        )
        add.gauge(
            "cello_websocket_queued_messages",
            "WebSocket messages waiting for a client to take them or a handler to read them.",
            sum(channel.queued() for channel in live),
        )
        add.counter(
            "cello_http_requests_total",
            "HTTP responses, by status.",
            None,
            (({"status": str(status)}, count) for status, count in http),
        )
        add.gauge("cello_sse_streams", "Open Server-Sent Events streams.", len(self._live_streams))
        hub = self._hub
        add.gauge(
            "cello_hub_groups", "Hub groups with a member in this process.", len(hub.groups())
        )
        relay = hub.relay
        if relay is not None:
            add.gauge(
                "cello_hub_relay_connected",
                "1 while the Redis relay is subscribed.",
                1 if relay.subscribed else 0,
            )
            add.counter(
                "cello_hub_relay_dropped_total",
                "Broadcasts not relayed to other processes.",
                relay.dropped,
            )
            add.counter(
                "cello_hub_relay_outages_total",
                "Times the relay lost Redis (publishing or subscribed).",
                relay.outages,
            )
            add.counter(
                "cello_hub_relay_skipped_total",
                "Messages from other processes whose delivery here failed.",
                relay.skipped,
            )
            if relay.lag is not None:
                add.gauge(
                    "cello_hub_relay_lag_seconds",
                    "With a shared history: from Redis numbering the latest broadcast to "
                    "its delivery here (by Redis's clock against this host's).",
                    round(relay.lag, 6),
                )
        return "".join(lines)


class _Writer:
    """Appends metrics in the text format: `# HELP`, `# TYPE`, then the samples."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def gauge(self, name: str, help: str, value: float) -> None:
        self._metric(name, "gauge", help, value, ())

    def counter(
        self,
        name: str,
        help: str,
        value: int | None,
        labelled: Iterable[tuple[dict[str, str], int]] = (),
    ) -> None:
        self._metric(name, "counter", help, value, labelled)

    def _metric(
        self,
        name: str,
        kind: str,
        help: str,
        value: float | None,
        labelled: Iterable[tuple[dict[str, str], Any]],
    ) -> None:
        self.lines.append(f"# HELP {name} {help}\n# TYPE {name} {kind}\n")
        if value is not None:
            self.lines.append(f"{name} {value}\n")
        for labels, count in labelled:
            # Label values here are digits only (codes, statuses): nothing to escape.
            text = ",".join(f'{key}="{val}"' for key, val in labels.items())
            self.lines.append(f"{name}{{{text}}} {count}\n")
