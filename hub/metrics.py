"""Counters of one node, and their Prometheus exposition.

The hot path only touches ``Metrics``: plain ints, ``Counter`` dicts and a fixed-bucket histogram, no locks,
no label lookups in a metrics library. ``HubCollector`` turns them into Prometheus metric families when
``/metrics`` is scraped (``prometheus_client`` calls it then, in the event loop's thread), and reads the
gauges (connections by transport, subscriptions, channels) from the node's sessions at that moment.

Labels are bounded: ``namespace`` (configured namespaces only; anything else is counted as ``other``),
``method`` (the protocol's command names, or ``unknown``), ``transport`` (the session transports' names) and
``code`` (protocol codes). Never channel names, users or client ids.

A separate port for scrapes (``metrics_port``) is a tiny asyncio HTTP server (``MetricsServer``) in the
same loop, so a scrape never reads the counters from another thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sized
from typing import Protocol

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from hub import codes
from hub.listener import Listener, bind_sockets

_KNOWN_CODES = frozenset(
    value.code for value in vars(codes).values() if isinstance(value, codes.DisconnectCode)
) | {1000, 1001, 1006, 1009, 1011, 1012}
"""Disconnect codes counted by number; any other code is one "other" series."""

log = logging.getLogger("switchboard.metrics")

PREFIX = "switchboard"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds. Publication times are milliseconds, so the lowest buckets mostly tell "same millisecond"."""
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
"""Seconds from an event to its delivery: milliseconds when all is well, up to the retry backoff's hours."""
OTHER_NAMESPACE = "other"
LABEL_CACHE_SIZE = 65536


class Histogram:
    """A fixed-bucket histogram: one ``bisect`` and two additions per observation."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        """Per bucket, not cumulative; the last one is +Inf."""
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less than or equal": a value equal to a bound belongs to that bound.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class Metrics:
    __slots__ = (
        "commands",
        "command_errors",
        "published",
        "delivered",
        "latency",
        "slow_disconnects",
        "disconnects",
        "connects",
        "recoveries",
        "recovery_failures",
        "rate_limited",
        "http_refused",
        "accept_errors",
        "inbox_notifications",
        "inbox_deliveries",
        "inbox_push_failures",
        "inbox_reports_dropped",
        "namespaces",
        "_labels",
    )

    def __init__(self, namespaces: Collection[str] = ()) -> None:
        self.namespaces = frozenset(namespaces) | {""}
        """The label values ``namespace`` may take (the configured ones and the unnamed one)."""
        self.commands: Counter[str] = Counter()
        self.command_errors: Counter[tuple[str, int]] = Counter()
        self.published: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        """Publications pushed to one subscriber each, by namespace."""
        self.latency = Histogram(LATENCY_BUCKETS)
        """Seconds from a publication's creation to its fan-out on this node, once per publication."""
        self.slow_disconnects = 0
        self.disconnects: Counter[str] = Counter()
        """Disconnects the hub made, by code."""
        self.connects: Counter[str] = Counter()
        """Successful connects, by transport."""
        self.recoveries = 0
        self.recovery_failures = 0
        self.rate_limited = 0
        """Commands refused with 111 (too many requests)."""
        self.http_refused: Counter[str] = Counter()
        """HTTP connections refused or cut before their request arrived, by reason (``hub.http_uvicorn``,
        ``hub.listener``): header_timeout, body_timeout, unfinished_limit, descriptors."""
        self.accept_errors: Counter[str] = Counter()
        """accept() failures for lack of resources, by errno name (EMFILE, ENFILE, ENOBUFS, ENOMEM)."""
        self.inbox_notifications: Counter[str] = Counter()
        """Notify outcomes on this node: per recipient created, collapsed or skipped; per call
        deduplicated."""
        self.inbox_deliveries: Counter[tuple[str, str]] = Counter()
        """Delivery states recorded from this node, by (channel, state): what each notify recorded
        (in-app sent, webhook/email queued, skipped), the in-app deliveries it saw reach a device
        (delivered), and what its workers report (``delivery_state``)."""
        self.inbox_push_failures = 0
        """Personal-channel pushes the broker refused (the change itself was stored)."""
        self.inbox_reports_dropped = 0
        """In-app deliveries not recorded as delivered: the store was failing or far behind."""
        self._labels: dict[str, str] = {}
        """Channel name -> namespace label, for the fan-out (cleared when full)."""

    @property
    def deliveries(self) -> int:
        return sum(self.delivered.values())

    def namespace_of(self, channel: str) -> str:
        """The ``namespace`` label of a channel name: its namespace if configured, else ``other``."""
        label = self._labels.get(channel)
        if label is None:
            bare = channel[1:] if channel.startswith("$") else channel
            namespace, sep, _ = bare.partition(":")
            label = "" if not sep else namespace if namespace in self.namespaces else OTHER_NAMESPACE
            if len(self._labels) >= LABEL_CACHE_SIZE:
                self._labels.clear()
            self._labels[channel] = label
        return label

    def fanout(self, channel: str, delivered: int, created_ms: int) -> None:
        """One publication fanned out to ``delivered`` local subscribers: count them, and observe the
        latency since its creation (``created_ms``, 0 if unknown) once."""
        self.delivered[self.namespace_of(channel)] += delivered
        if created_ms:
            latency = time.time() - created_ms / 1000
            self.latency.observe(latency if latency > 0.0 else 0.0)

    def command(self, method: str) -> None:
        self.commands[method] += 1

    def command_error(self, method: str, code: int) -> None:
        self.command_errors[(method, code)] += 1

    def slow_disconnect(self) -> None:
        self.slow_disconnects += 1

    def disconnect(self, code: int) -> None:
        # Bounded labels: the protocol's codes by number, any other (an application's, via the server API
        # or a hook) as one "other" series.
        self.disconnects[str(code) if code in _KNOWN_CODES else "other"] += 1

    def connect(self, transport: str) -> None:
        self.connects[transport] += 1

    def delivery_state(self, channel: str, state: str, n: int = 1) -> None:
        """``n`` deliveries of ``channel`` recorded in ``state`` (bounded labels: the inbox's enums)."""
        if n:
            self.inbox_deliveries[(channel, state)] += n

    def recovery(self, ok: bool) -> None:
        if ok:
            self.recoveries += 1
        else:
            self.recovery_failures += 1


class OutboxMetrics:
    """Events out: what the hub appended to the outbox, and what the workers of this process delivered.

    Labels are bounded by the configuration: ``destination`` (``webhook:<name>``, ``email``), ``topic``
    (the outbox's topics), ``verdict`` (done, retry, dead, stale), ``state`` (pending, dead)."""

    __slots__ = ("attempts", "depth", "appended", "dropped", "latency")

    def __init__(self) -> None:
        self.attempts: Counter[tuple[str, str]] = Counter()
        """Delivery attempts by (destination, verdict)."""
        self.depth: dict[tuple[str, str], int] = {}
        """Tasks by (destination, state) at the last count (the queue and the dead letters)."""
        self.appended: Counter[str] = Counter()
        """The hub's events appended to the outbox, by topic."""
        self.dropped: Counter[str] = Counter()
        """The hub's events dropped before reaching the outbox, by reason."""
        self.latency = Histogram(DELIVERY_BUCKETS)
        """Seconds from an event to its successful delivery."""

    def attempt(self, destination: str, verdict: str) -> None:
        self.attempts[(destination, str(verdict))] += 1

    def delivered(self, seconds: float) -> None:
        self.latency.observe(seconds if seconds > 0.0 else 0.0)

    def set_depth(self, depth: Mapping[tuple[str, str], int]) -> None:
        self.depth = dict(depth)


class OutboxCollector(Collector):
    """Metric families of ``OutboxMetrics``."""

    def __init__(self, metrics: OutboxMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        attempts = CounterMetricFamily(
            f"{PREFIX}_outbox_attempts",
            "Delivery attempts of webhooks and email, by destination and verdict (done, retry, dead, stale).",
            labels=["destination", "verdict"],
        )
        for (destination, verdict), n in sorted(m.attempts.items()):
            attempts.add_metric([destination, verdict], n)
        yield attempts
        depth = GaugeMetricFamily(
            f"{PREFIX}_outbox_tasks",
            "Deliveries waiting (pending) and dead letters (dead), by destination, at the last count.",
            labels=["destination", "state"],
        )
        for (destination, state), n in sorted(m.depth.items()):
            depth.add_metric([destination, state], n)
        yield depth
        yield _counter("outbox_events", "Hub events appended to the outbox, by topic.", ["topic"], m.appended)
        yield _counter(
            "outbox_events_dropped",
            "Hub events dropped before the outbox (it was down or behind), by reason.",
            ["reason"],
            m.dropped,
        )
        h = HistogramMetricFamily(
            f"{PREFIX}_outbox_delivery_latency_seconds", "Time from an event to its successful delivery."
        )
        h.add_metric([], m.latency.cumulative(), m.latency.total)
        yield h


class _Transport(Protocol):
    @property
    def name(self) -> str: ...


class SessionView(Protocol):
    """What the collector reads of a session at scrape time."""

    @property
    def transport(self) -> _Transport: ...

    @property
    def subs(self) -> Sized: ...


class HubCollector(Collector):
    """Metric families from a node's ``Metrics`` and its live sessions, built at scrape time."""

    def __init__(
        self,
        metrics: Metrics,
        sessions: Callable[[], Iterable[SessionView]],
        channels: Callable[[], int],
    ) -> None:
        self.metrics = metrics
        self.sessions = sessions
        self.channels = channels

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        by_transport: Counter[str] = Counter()
        subscriptions = 0
        for session in self.sessions():
            by_transport[session.transport.name] += 1
            subscriptions += len(session.subs)

        g = GaugeMetricFamily(
            f"{PREFIX}_connections", "Open client connections, by transport.", labels=["transport"]
        )
        for transport, n in sorted(by_transport.items()):
            g.add_metric([transport], n)
        yield g
        yield GaugeMetricFamily(
            f"{PREFIX}_subscriptions", "Channel subscriptions of the open connections.", value=subscriptions
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_channels", "Channels with at least one local subscriber.", value=self.channels()
        )
        yield _counter("connects", "Successful connects, by transport.", ["transport"], m.connects)
        connect_errors: Counter[str] = Counter()
        for (method, code), n in m.command_errors.items():
            if method == "connect":
                connect_errors[str(code)] += n
        yield _counter(
            "connect_errors", "Refused connects, by error or disconnect code.", ["code"], connect_errors
        )
        yield _counter("commands", "Commands received, by method.", ["method"], m.commands)
        errors = CounterMetricFamily(
            f"{PREFIX}_command_errors", "Commands that failed, by method and code.", labels=["method", "code"]
        )
        for (method, code), n in sorted(m.command_errors.items()):
            errors.add_metric([method, str(code)], n)
        yield errors
        yield _counter(
            "messages_published",
            "Publications accepted from this node, by namespace.",
            ["namespace"],
            m.published,
        )
        yield _counter(
            "messages_delivered",
            "Publications pushed to one local subscriber each, by namespace.",
            ["namespace"],
            m.delivered,
        )
        h = HistogramMetricFamily(
            f"{PREFIX}_publication_fanout_latency_seconds",
            "Time from a publication's creation to its fan-out on this node (once per publication).",
        )
        h.add_metric([], m.latency.cumulative(), m.latency.total)
        yield h
        yield _counter(
            "disconnects", "Connections the hub closed, by disconnect code.", ["code"], m.disconnects
        )
        yield CounterMetricFamily(
            f"{PREFIX}_slow_consumer_disconnects",
            "Connections closed because their outbound buffer overflowed (3008).",
            value=m.slow_disconnects,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_rate_limited_commands",
            "Commands refused with 111 (too many requests).",
            value=m.rate_limited,
        )
        yield _counter(
            "http_refused",
            "HTTP connections refused or cut before their request had arrived, by reason.",
            ["reason"],
            m.http_refused,
        )
        yield _counter(
            "accept_errors",
            "accept() failures for lack of descriptors or memory, by errno.",
            ["errno"],
            m.accept_errors,
        )
        yield _counter(
            "inbox_notifications",
            "Notify outcomes: per recipient created, collapsed or skipped; per call deduplicated.",
            ["outcome"],
            m.inbox_notifications,
        )
        deliveries = CounterMetricFamily(
            f"{PREFIX}_inbox_deliveries",
            "Notification deliveries recorded, by delivery channel and state.",
            labels=["channel", "state"],
        )
        for (channel, state), n in sorted(m.inbox_deliveries.items()):
            deliveries.add_metric([channel, state], n)
        yield deliveries
        yield CounterMetricFamily(
            f"{PREFIX}_inbox_push_failures",
            "Personal-channel pushes the broker refused (the inbox change was stored).",
            value=m.inbox_push_failures,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_inbox_delivery_reports_dropped",
            "In-app deliveries seen but not recorded as delivered (the store failing or far behind).",
            value=m.inbox_reports_dropped,
        )
        rec = CounterMetricFamily(
            f"{PREFIX}_recoveries", "Subscription recoveries, by result.", labels=["result"]
        )
        rec.add_metric(["recovered"], m.recoveries)
        rec.add_metric(["unrecovered"], m.recovery_failures)
        yield rec


def _counter(
    name: str, doc: str, labels: list[str], values: Counter[str] | Counter[int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)
    for value, n in sorted(values.items()):
        family.add_metric([str(value)], n)
    return family


def build_registry(collector: Collector) -> CollectorRegistry:
    """A registry of its own per hub (several hubs in one process must not share one), with the hub's
    collector and the usual process, platform and garbage-collector metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


class MetricsServer:
    """``GET /metrics`` on a port of its own: a minimal HTTP/1.1 server in the event loop (one request per
    connection). Anything but ``GET /metrics`` gets 404; a malformed request 400.

    It accepts through ``hub.listener.Listener``, as the main port does: out of descriptors, it says so
    (rate-limited), counts ``accept_errors`` and answers a scrape 503 from one reserved descriptor, where
    the event loop's own server would print a traceback a second outside the node's log."""

    def __init__(
        self, registry: CollectorRegistry, host: str, port: int, accept_errors: Counter[str] | None = None
    ) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.accept_errors = accept_errors
        self._listeners: list[Listener] = []

    async def start(self) -> None:
        for sock in bind_sockets(self.host, self.port, 100):
            listener = Listener(sock, self._protocol, accept_errors=self.accept_errors, reserved=1)
            listener.start()
            self._listeners.append(listener)
        self.port = self._listeners[0].socket.getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    def _protocol(self) -> asyncio.Protocol:
        return asyncio.StreamReaderProtocol(asyncio.StreamReader(), self._handle)

    async def stop(self) -> None:
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.close()
        for listener in listeners:
            await listener.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10.0):
                head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].split()
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
                status, body, ctype = b"400 Bad Request", b"bad request\n", "text/plain"
            elif parts[0] != b"GET" or parts[1].split(b"?", 1)[0] != b"/metrics":
                status, body, ctype = b"404 Not Found", b"not found\n", "text/plain"
            else:
                body, ctype = exposition(self.registry)
                status = b"200 OK"
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: "
                + ctype.encode()
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            log.info("metrics request dropped: %r", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
