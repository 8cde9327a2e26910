"""``GET /metrics``: scraped before and after real traffic over real WebSockets, parsed with
prometheus_client's own parser; the fixed-bucket histogram and the bounded namespace label as properties."""

from __future__ import annotations

import asyncio
from bisect import bisect_left

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from hub.metrics import LABEL_CACHE_SIZE, LATENCY_BUCKETS, OTHER_NAMESPACE, Histogram, Metrics
from tests.conftest import TIMEOUT, HubFactory, RunningHub, http_client, token
from tests.ports import free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str) -> Samples:
    async with http_client(timeout=TIMEOUT) as http:
        resp = await http.get(url)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_counters_move_with_traffic(make_hub: HubFactory, raw_client) -> None:
    hub: RunningHub = await make_hub()
    url = hub.http + "/metrics"
    before = await scrape(url)

    alice = await raw_client(hub, connect={"token": token("alice")})
    bob = await raw_client(hub, connect={"token": token("bob")})
    for c in (alice, bob):
        assert "subscribe" in await c.command("subscribe", {"channel": "chat:room"})
    assert "publish" in await alice.command("publish", {"channel": "chat:room", "data": {"text": "hi"}})
    for c in (alice, bob):
        assert (await c.push("pub"))["pub"]["data"] == {"text": "hi"}
    bad = await alice.command("subscribe", {"channel": "nosuchns:x"})
    assert bad["error"]["code"] == 102
    refused = await raw_client(hub)
    await refused.send_raw('{"id": 1, "subscribe": {"channel": "lobby"}}')  # before connect: 3501
    assert (await refused.closed())[0] == 3501
    bad_token = await raw_client(hub)
    await bad_token.send_raw('{"id": 1, "connect": {"token": "not-a-jwt"}}')
    assert (await bad_token.closed())[0] == 3500

    after = await scrape(url)
    assert value(after, "switchboard_connections", transport="websocket") == 2
    assert value(after, "switchboard_subscriptions") == 2
    assert value(after, "switchboard_channels") == 1
    assert moved(before, after, "switchboard_connects_total", transport="websocket") == 2
    assert moved(before, after, "switchboard_connect_errors_total", code="3500") == 1
    assert moved(before, after, "switchboard_commands_total", method="connect") == 3
    assert moved(before, after, "switchboard_commands_total", method="subscribe") == 3
    assert moved(before, after, "switchboard_commands_total", method="publish") == 1
    assert moved(before, after, "switchboard_command_errors_total", method="subscribe", code="102") == 1
    assert moved(before, after, "switchboard_messages_published_total", namespace="chat") == 1
    assert moved(before, after, "switchboard_messages_delivered_total", namespace="chat") == 2
    # One observation per publication fanned out, not one per subscriber.
    assert moved(before, after, "switchboard_publication_fanout_latency_seconds_count") == 1
    assert moved(before, after, "switchboard_publication_fanout_latency_seconds_bucket", le="+Inf") == 1
    assert moved(before, after, "switchboard_disconnects_total", code="3501") == 1
    assert moved(before, after, "switchboard_disconnects_total", code="3500") == 1
    # Nothing user- or channel-specific ever becomes a label.
    labels = {v for (_, pairs) in after for (_, v) in pairs}
    assert not labels & {"alice", "bob", "chat:room", "nosuchns:x"}


async def test_slow_consumer_and_unnamed_namespace(make_hub: HubFactory, raw_client) -> None:
    hub = await make_hub(client_queue_max_size=4096)
    url = hub.http + "/metrics"
    sub = await raw_client(hub, connect={})
    assert "subscribe" in await sub.command("subscribe", {"channel": "lobby"})
    before = await scrape(url)
    # One publication larger than the subscriber's whole queue: it is a slow consumer at once.
    await hub.sb.publish("lobby", {"pad": "x" * 5000})
    assert (await sub.closed())[0] == 3008
    after = await scrape(url)
    assert moved(before, after, "switchboard_slow_consumer_disconnects_total") == 1
    assert moved(before, after, "switchboard_disconnects_total", code="3008") == 1
    assert moved(before, after, "switchboard_messages_published_total", namespace="") == 1
    assert moved(before, after, "switchboard_messages_delivered_total", namespace="") == 1
    assert value(after, "switchboard_connections", transport="websocket") == 0


async def test_metrics_on_a_port_of_its_own(make_hub: HubFactory, raw_client) -> None:
    port = free_port()
    hub = await make_hub(metrics_port=port)
    await raw_client(hub, connect={})
    samples = await scrape(f"http://127.0.0.1:{port}/metrics")
    assert value(samples, "switchboard_connections", transport="websocket") == 1
    assert any(name.startswith("process_") for name, _ in samples)
    async with http_client(timeout=TIMEOUT) as http:
        assert (await http.get(f"http://127.0.0.1:{port}/other")).status_code == 404
    # A request that is not HTTP gets 400, and the server goes on serving.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello\r\n\r\n")
    async with asyncio.timeout(TIMEOUT):
        assert (await reader.read()).startswith(b"HTTP/1.1 400")
    writer.close()
    assert value(await scrape(f"http://127.0.0.1:{port}/metrics"), "switchboard_subscriptions") == 0


@given(st.lists(st.one_of(st.sampled_from(LATENCY_BUCKETS), st.floats(0, 20, allow_nan=False))))
def test_histogram_buckets_are_cumulative_and_inclusive(values: list[float]) -> None:
    h = Histogram(LATENCY_BUCKETS)
    for v in values:
        h.observe(v)
    cumulative = dict(h.cumulative())
    for bound in LATENCY_BUCKETS:
        assert cumulative[str(bound)] == sum(1 for v in values if v <= bound)
    assert cumulative["+Inf"] == h.count == len(values)
    assert h.total == sum(values) or abs(h.total - sum(values)) < 1e-9
    assert bisect_left(LATENCY_BUCKETS, LATENCY_BUCKETS[0]) == 0


@given(st.text(min_size=1, max_size=40))
def test_namespace_label_is_bounded(channel: str) -> None:
    m = Metrics(["chat", "feeds"])
    assert m.namespace_of(channel) in {"", "chat", "feeds", OTHER_NAMESPACE}


def test_namespace_label_examples() -> None:
    m = Metrics(["chat"])
    assert m.namespace_of("chat:room") == "chat"
    assert m.namespace_of("$chat:secret") == "chat"
    assert m.namespace_of("lobby") == ""
    assert m.namespace_of("spam-123:x") == OTHER_NAMESPACE


def test_namespace_label_cache_stays_bounded() -> None:
    m = Metrics(["chat"])
    for i in range(LABEL_CACHE_SIZE + 10):
        assert m.namespace_of(f"chat:room-{i}") == "chat"
    assert len(m._labels) <= LABEL_CACHE_SIZE
