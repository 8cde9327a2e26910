"""Counters of the feed parts of one node (ingest, the MQTT bridge, alerts, refused data) and their
Prometheus families. Plain ints and ``Counter`` dicts, as ``hub.metrics``; labels are bounded: ``namespace``
(``Metrics.namespace_of``), ``format`` (influx, jsonl), ``status`` (HTTP status codes the endpoint sends),
``direction`` (in, out), ``result`` and ``kind`` (words of this module)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.metrics import PREFIX, Metrics


class FeedMetrics:
    __slots__ = (
        "labels",
        "refused_data",
        "ingest_requests",
        "ingest_points",
        "mqtt_up",
        "mqtt_link_changes",
        "mqtt_bridge_active",
        "mqtt_messages",
        "alert_events",
        "alert_dropped",
    )

    def __init__(self, labels: Metrics) -> None:
        self.labels = labels
        """Where a channel's ``namespace`` label comes from."""
        self.refused_data: Counter[str] = Counter()
        """Publications refused by their namespace's data_schema or data_format, by namespace."""
        self.ingest_requests: Counter[tuple[str, int]] = Counter()
        """Ingest requests answered, by format and HTTP status."""
        self.ingest_points: Counter[tuple[str, str]] = Counter()
        """Ingested lines, by format and result (accepted, refused)."""
        self.mqtt_up: int | None = None
        """1 while the MQTT bridge is connected, 0 while it is not; None without a bridge."""
        self.mqtt_link_changes = 0
        self.mqtt_bridge_active: int | None = None
        """1 while this process runs the MQTT bridge (it holds the bridge's lease), 0 while another candidate
        does; None where the bridge is not a candidate."""
        self.mqtt_messages: Counter[tuple[str, str]] = Counter()
        """MQTT messages, by direction (in, out) and result (published, refused, dropped)."""
        self.alert_events: Counter[str] = Counter()
        """Alert events this node decided, by kind (fired, cleared); across nodes each is published once."""
        self.alert_dropped = 0

    def refused(self, channel: str) -> None:
        self.refused_data[self.labels.namespace_of(channel)] += 1


class FeedCollector(Collector):
    def __init__(self, metrics: FeedMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        family = CounterMetricFamily(
            f"{PREFIX}_refused_data",
            "Publications refused by their namespace's data_schema or data_format, by namespace.",
            labels=["namespace"],
        )
        for namespace, n in sorted(m.refused_data.items()):
            family.add_metric([namespace], n)
        yield family
        family = CounterMetricFamily(
            f"{PREFIX}_ingest_requests",
            "Ingest requests, by format and HTTP status.",
            labels=["format", "status"],
        )
        for (fmt, status), n in sorted(m.ingest_requests.items()):
            family.add_metric([fmt, str(status)], n)
        yield family
        family = CounterMetricFamily(
            f"{PREFIX}_ingest_points", "Ingested lines, by format and result.", labels=["format", "result"]
        )
        for (fmt, result), n in sorted(m.ingest_points.items()):
            family.add_metric([fmt, result], n)
        yield family
        if m.mqtt_up is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_mqtt_link_up",
                "1 while the MQTT bridge is connected to its broker.",
                value=m.mqtt_up,
            )
            yield CounterMetricFamily(
                f"{PREFIX}_mqtt_link_changes",
                "Times the MQTT bridge's link went up or down.",
                value=m.mqtt_link_changes,
            )
        if m.mqtt_bridge_active is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_mqtt_bridge_active",
                "1 while this process runs the MQTT bridge (one per deployment, by lease).",
                value=m.mqtt_bridge_active,
            )
        family = CounterMetricFamily(
            f"{PREFIX}_mqtt_messages",
            "MQTT messages, by direction and result.",
            labels=["direction", "result"],
        )
        for (direction, result), n in sorted(m.mqtt_messages.items()):
            family.add_metric([direction, result], n)
        yield family
        family = CounterMetricFamily(
            f"{PREFIX}_alert_events", "Alert events decided on this node, by kind.", labels=["kind"]
        )
        for kind, n in sorted(m.alert_events.items()):
            family.add_metric([kind], n)
        yield family
