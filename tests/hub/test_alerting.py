"""Threshold alerts on a real hub: a condition held long enough fires once, clears once (hysteresis), its
users are notified, and across two nodes on Redis each event is published exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from pathlib import Path
from typing import Any

import pytest

from channels.alerts import parse_rules
from channels.options import NamespaceOptions
from hub.codes import ConfigError
from hub.config import Config, load_config
from tests import nodes as harness
from tests.conftest import TIMEOUT, RunningHub, http_client, token
from tests.conftest import test_config as base_config
from tests.hub.test_sdk_channels import connected, subscribed
from tests.nodes import API_KEY as NODES_KEY
from tests.nodes import HubNode, NodesFactory, eventually
from tests.redis_servers import RedisServer

make_nodes = harness.make_nodes

KEY = "alerts-key"
HISTORY = dict(history_size=100, history_ttl=300.0)
RULE = {
    "name": "boiler-hot",
    "channels": "plant:boiler.*",
    "field": "/temp",
    "above": 90,
    "hysteresis": 5,
    "for": "1s",
    "publish_to": "alerts:plant",
    "notify": ["alice"],
}


def alert_config(**overrides: Any) -> Any:
    overrides.setdefault("alerts", parse_rules([RULE]))
    cfg = base_config(api_key=KEY, **overrides)
    namespaces = {
        **cfg.namespaces,
        "plant": NamespaceOptions(**HISTORY, allow_publish_for_client=True),
        "alerts": NamespaceOptions(**HISTORY, allow_subscribe_for_client=True),
        "personal": NamespaceOptions(**HISTORY, allow_user_limited_channels=True),
    }
    return dataclasses.replace(cfg, namespaces=namespaces)


async def publish(http: str, channel: str, data: Any, key: str = KEY) -> None:
    async with http_client(timeout=TIMEOUT) as client:
        response = await client.post(
            f"{http}/api/publish", json={"channel": channel, "data": data}, headers={"X-API-Key": key}
        )
    assert "result" in response.json(), response.text


async def history(http: str, channel: str, key: str = KEY) -> list[Any]:
    async with http_client(timeout=TIMEOUT) as client:
        response = await client.post(
            f"{http}/api/history", json={"channel": channel, "limit": -1}, headers={"X-API-Key": key}
        )
    return [p["data"] for p in response.json()["result"].get("publications", [])]


async def test_an_alert_fires_once_when_held_long_enough_and_clears_once(
    make_hub: Any, sdk: Any, raw_client: Any
) -> None:
    hub: RunningHub = await make_hub(alert_config(alerts_notify="channel"))
    alice, _ = await connected(sdk, hub, token=token("alice"))
    _, inbox = await subscribed(alice, "personal:alerts#alice")
    _, board = await subscribed(alice, "alerts:plant")
    device = await raw_client(hub, connect={"token": token("device")})

    await publish(hub.http, "plant:boiler.b7", {"temp": 70})
    await publish(hub.http, "plant:boiler.b7", {"temp": 95})  # the condition starts
    fired = (await board.pub()).data  # held for 1 s: the hub's clock fires it with no reading since
    assert {k: fired[k] for k in ("alert", "kind", "channel", "value", "threshold", "condition")} == {
        "alert": "boiler-hot",
        "kind": "fired",
        "channel": "plant:boiler.b7",
        "value": 95.0,
        "threshold": 90.0,
        "condition": "above",
    }
    assert fired["time"] - fired["since"] >= 1000
    assert (await inbox.pub()).data == fired  # alice is notified on her personal channel (alerts_notify)

    # still hot, then inside the hysteresis (above 85): still firing, nothing new; a client's reading counts
    assert "publish" in await device.command("publish", {"channel": "plant:boiler.b7", "data": {"temp": 97}})
    await publish(hub.http, "plant:boiler.b7", {"temp": 88})
    await publish(hub.http, "plant:boiler.b7", {"temp": 84})  # below 90 - 5: cleared
    cleared = (await board.pub()).data
    assert (cleared["kind"], cleared["value"], cleared["since"]) == ("cleared", 84.0, fired["since"])
    assert (await inbox.pub()).data == cleared
    assert [e["kind"] for e in await history(hub.http, "alerts:plant")] == ["fired", "cleared"]
    assert hub.sb.node.feed_metrics.alert_events == {"fired": 1, "cleared": 1}


async def test_two_nodes_sharing_the_inbox_notify_each_event_once(
    make_hub: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    """No publish_to, so nothing but the inbox keeps the nodes from notifying twice: both decide and deliver
    every event, and the store keeps one notification per event (its dedupe key is the event's id)."""
    rule = {k: v for k, v in RULE.items() if k != "publish_to"} | {"notify": ["alice", "bob"]}
    hubs: list[RunningHub] = [
        await make_hub(
            alert_config(
                alerts=parse_rules([rule]),
                redis_urls=[redis_server.url],
                node_name=name,
                data_dir=str(tmp_path),  # one SQLite inbox for both (as one PostgreSQL would be)
            )
        )
        for name in ("a", "b")
    ]
    for i, temp in enumerate([70, 95, 96]):
        await publish(hubs[i % 2].http, "plant:boiler.b7", {"temp": temp})

    async def delivered(kind: str) -> bool:
        return all(h.sb.node.feed_metrics.alert_events[kind] == 1 for h in hubs) and sum(
            h.sb.node.metrics.inbox_notifications["deduplicated"] for h in hubs
        ) == (1 if kind == "fired" else 2)

    await eventually(lambda: delivered("fired"))  # held 1 s: each node's clock fires it
    await publish(hubs[1].http, "plant:boiler.b7", {"temp": 80})  # cleared
    await eventually(lambda: delivered("cleared"))
    for user in ("alice", "bob"):
        items = (await api(hubs[0].http, "inbox_list", {"user": user}))["items"]
        assert [(i["category"], i["title"]) for i in items] == [
            ("alert", "boiler-hot cleared"),
            ("alert", "boiler-hot fired"),
        ]
        assert items[1]["data"]["kind"] == "fired" and items[1]["data"]["value"] == 96.0
        assert "plant:boiler.b7: /temp = 96.0 (above 90.0)" == items[1]["body"]


async def test_a_node_that_starts_watching_mid_episode_decides_the_same_event(
    make_hub: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Node b starts after the episode began (and after a fired it): it sees the channel from its own first
    reading on, reads the channel's history first, and decides the episode's ``since`` as a did, so its
    event is the same one (suppressed) and nobody is told twice. Without the history it would begin the
    series at its first reading and fire a second event 1 s later."""

    def node(name: str) -> Any:
        return alert_config(redis_urls=[redis_server.url], node_name=name, data_dir=str(tmp_path / name))

    a: RunningHub = await make_hub(node("a"))
    await publish(a.http, "plant:boiler.b7", {"temp": 70})
    await publish(a.http, "plant:boiler.b7", {"temp": 95})  # the episode starts on a alone

    async def fired_on_a() -> bool:
        return len(await history(a.http, "alerts:plant")) == 1

    await eventually(fired_on_a)
    b: RunningHub = await make_hub(node("b"))
    await publish(b.http, "plant:boiler.b7", {"temp": 96})  # b announces the channel: both watch it

    async def b_decided() -> bool:
        return b.sb.node.feed_metrics.alert_events["fired"] == 1

    await eventually(b_decided)
    await asyncio.sleep(1.5)  # past the rule's 'for' after b's first reading: a second event would be out
    events = await history(a.http, "alerts:plant")
    assert [e["kind"] for e in events] == ["fired"], events
    await publish(b.http, "plant:boiler.b7", {"temp": 80})

    async def cleared() -> bool:
        return [e["kind"] for e in await history(a.http, "alerts:plant")] == ["fired", "cleared"]

    await eventually(cleared)
    assert all(h.sb.node.feed_metrics.alert_events["cleared"] == 1 for h in (a, b))


async def api(http: str, method: str, params: Any) -> Any:
    async with http_client(timeout=TIMEOUT) as client:
        response = await client.post(f"{http}/api/{method}", json=params, headers={"X-API-Key": KEY})
    assert "result" in response.json(), response.text
    return response.json()["result"]


async def test_readings_that_break_off_early_or_are_not_numbers_fire_nothing(make_hub: Any) -> None:
    hub: RunningHub = await make_hub(alert_config())
    for data in ({"temp": 95}, {"temp": 80}, {"temp": "hot"}, {"other": 1}, [1, 2], "x"):
        await publish(hub.http, "plant:boiler.b1", data)
    await publish(hub.http, "plant:pump.p1", {"temp": 999})  # no rule for pumps
    await hub.sb.alerts.close()  # its clock stopped: advance by hand, well past 'for'
    hub.sb.alerts.advance(time.time() + 60)
    assert hub.sb.alerts.evaluator.tracked() == 0
    assert await history(hub.http, "alerts:plant") == []


def test_alert_config_errors_name_the_rule(tmp_path: Path) -> None:
    no_namespace = {**RULE, "publish_to": "nope:x", "notify": []}
    with pytest.raises(ConfigError, match=re.escape("alert rule 'boiler-hot': publish_to 'nope:x': no such")):
        load(tmp_path, no_namespace, '[[namespaces]]\nname = "alerts"\n')
    channel = 'alerts_notify = "channel"\n[[namespaces]]\nname = "alerts"\n'
    with pytest.raises(ConfigError, match=re.escape("alerts_user_channel 'personal:alerts#{user}': no such")):
        load(tmp_path, RULE, channel)
    assert load(tmp_path, RULE, '[[namespaces]]\nname = "alerts"\n').alerts_notify == "inbox"  # no channel
    for bad in ('"email"', '""', "1", "true"):
        with pytest.raises(ConfigError, match="alerts_notify"):
            load(tmp_path, RULE, f'alerts_notify = {bad}\n[[namespaces]]\nname = "alerts"\n')
    with pytest.raises(
        ConfigError, match=re.escape("[[alerts]]: alert rule 'boiler-hot': 'for': not a duration")
    ):
        load(tmp_path, {**RULE, "for": "soon"}, "")


def load(tmp_path: Path, rule: dict[str, Any], namespaces: str) -> Config:
    def toml(value: Any) -> str:
        if isinstance(value, list):
            return "[" + ", ".join(toml(v) for v in value) + "]"
        return f'"{value}"' if isinstance(value, str) else repr(value)

    rows = "\n".join(f"{k} = {toml(v)}" for k, v in rule.items())
    path = tmp_path / "hub.toml"
    path.write_text(f'token_hmac_secret_key = "x"\n{namespaces}\n[[alerts]]\n{rows}\n')
    return load_config(path, env={})


# ---------------------------------------------------------------- two nodes on Redis

TABLES = """
[[namespaces]]
name = "plant"
history_size = 100
history_ttl = 300

[[namespaces]]
name = "alerts"
history_size = 100
history_ttl = 300

[[alerts]]
name = "boiler-hot"
channels = "plant:boiler.*"
field = "/temp"
above = 90
hysteresis = 5
for = "1s"
publish_to = "alerts:plant"
"""


async def metric(node: HubNode, name: str) -> str:
    async with http_client(timeout=TIMEOUT) as client:
        text = (await client.get(f"{node.http}/metrics")).text
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


async def test_two_nodes_both_decide_and_the_alert_fires_exactly_once(
    make_nodes: NodesFactory, redis_server: RedisServer
) -> None:
    """Readings arrive at either node; each node evaluates every one of them (both watch the channel from
    its first publication on) and decides the same events; the broker keeps one of each."""
    nodes = await make_nodes(2, redis=[redis_server.url], tables=TABLES)
    readings = [70, 95, 96, 97, 96, 95, 94, 93, 88, 84, 80]
    for i, temp in enumerate(readings):
        await publish(nodes[i % 2].http, "plant:boiler.b7", {"temp": temp}, key=NODES_KEY)
        if temp == 93:  # the condition held long enough: wait for the fire (either node's clock)

            async def fired() -> bool:
                return len(await history(nodes[0].http, "alerts:plant", key=NODES_KEY)) >= 1

            await eventually(fired)

    async def both_decided() -> bool:
        counts = [await metric(n, 'switchboard_alert_events_total{kind="cleared"}') for n in nodes]
        return all(c.endswith(" 1.0") for c in counts)

    await eventually(both_decided)
    events = await history(nodes[1].http, "alerts:plant", key=NODES_KEY)
    assert [(e["kind"], e["channel"]) for e in events] == [
        ("fired", "plant:boiler.b7"),
        ("cleared", "plant:boiler.b7"),
    ]
    assert events[0]["since"] == events[1]["since"]
    for node in nodes:  # each node decided both events itself
        assert (await metric(node, 'switchboard_alert_events_total{kind="fired"}')).endswith(" 1.0")


async def test_watched_channels_are_bounded_and_let_go_when_idle(make_hub: Any, caplog: Any) -> None:
    """A node watches the channels its rules match as they are published to, at most ``max_channels`` of
    them (the rest are not evaluated, counted, logged once), and lets go those idle for ``IDLE``."""
    from hub import watch

    hub: RunningHub = await make_hub(alert_config())
    node = hub.sb.node
    node.watch.max_channels = 2
    for name in ("plant:boiler.a", "plant:boiler.b", "plant:boiler.c", "plant:pump.x"):
        await publish(hub.http, name, {"temp": 1})
    assert sorted(key[1] for key in node.watch.watched) == ["plant:boiler.a", "plant:boiler.b"]
    assert node.watch.dropped == 1
    assert any("channels watched already: plant:boiler.c is not" in r.getMessage() for r in caplog.records)
    assert ("", "plant:boiler.a") in node._broker_keys  # the broker delivers it to this node
    await node.watch.sweep(time.monotonic() + watch.IDLE)
    assert node.watch.watched == {} and ("", "plant:boiler.a") not in node._broker_keys
    await publish(hub.http, "plant:boiler.a", {"temp": 1})  # known again from its next publication
    assert list(node.watch.watched) == [("", "plant:boiler.a")]
    # the one left out is announced again (after RETRY) and watched now that there is room
    node.watch._known[("", "plant:boiler.c")] -= watch.RETRY
    await publish(hub.http, "plant:boiler.c", {"temp": 1})
    assert sorted(k[1] for k in node.watch.watched) == ["plant:boiler.a", "plant:boiler.c"]
