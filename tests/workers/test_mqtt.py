"""The MQTT bridge against a real Mosquitto (started per test on a free port): topic to channel to the
official SDK, retained messages as last values, channel to topic, a broker restart, garbage refused."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import orjson
import pytest

from channels.options import NamespaceOptions
from channels.schema import DataSchema
from hub.ingest.settings import parse_mqtt
from tests.conftest import TIMEOUT, RunningHub, http_client, token
from tests.conftest import test_config as base_config
from tests.hub.test_sdk_channels import connected, subscribed
from tests.mqtt_broker import Mosquitto
from tests.nodes import eventually

KEY = "mqtt-key"
FEED = dict(history_size=100, history_ttl=300.0, allow_subscribe_for_client=True)
DASH = NamespaceOptions.from_mapping(  # one channel, a key per sensor (the topic's level), last values
    {
        "allow_subscribe_for_client": True,
        "conflation": "latest",
        "max_rate": 10,
        "key_field": "/sensor",
        "history_size": 1,
        "history_ttl": 300,
        "force_recovery_mode": "cache",
    }
)


def bridge_config(broker: Mosquitto, **mqtt: Any) -> Any:
    table = {
        "url": broker.url,
        "reconnect_min": "50ms",
        "reconnect_max": "500ms",
        "max_payload": 1024,
        "subscribe": [
            {"topic": "plant/+/temperature", "channel": "sensors:plant.{1}.temperature"},
            {"topic": "hall/+/reading", "channel": "dash:hall", "key": "{1}"},
            {"topic": "cam/+", "channel": "cam:{1}"},
            {"topic": "any/#", "channel": "raw:any.{#}"},
        ],
        "publish": [{"channel": "commands:plant.{1}", "topic": "plant/{1}/command"}],
        **mqtt,
    }
    cfg = base_config(api_key=KEY, mqtt=parse_mqtt(table))
    schema = DataSchema({"type": "object", "properties": {"t": {"type": "number", "maximum": 500}}})
    namespaces = {
        **cfg.namespaces,
        "sensors": NamespaceOptions(**FEED, data_schema=schema),
        "cam": NamespaceOptions(**FEED, data_format="binary"),
        "commands": NamespaceOptions(**FEED),
        "raw": NamespaceOptions(**FEED),
        "dash": DASH,
    }
    return dataclasses.replace(cfg, namespaces=namespaces)


@contextlib.asynccontextmanager
async def mqtt_client(broker: Mosquitto) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="test-device") as client:
        yield client


async def bridged(make_hub: Any, broker: Mosquitto, **mqtt: Any) -> RunningHub:
    hub: RunningHub = await make_hub(bridge_config(broker, **mqtt))
    async with asyncio.timeout(TIMEOUT):
        await hub.sb.mqtt.connected.wait()
    return hub


async def history(hub: RunningHub, channel: str) -> list[Any]:
    async with http_client(timeout=TIMEOUT) as http:
        response = await http.post(
            f"{hub.http}/api/history", json={"channel": channel, "limit": -1}, headers={"X-API-Key": KEY}
        )
    return [p["data"] for p in response.json()["result"].get("publications", [])]


async def test_a_topic_reaches_sdk_subscribers_of_its_channel(
    make_hub: Any, mosquitto: Mosquitto, sdk: Any
) -> None:
    hub = await bridged(make_hub, mosquitto)
    client, _ = await connected(sdk, hub, token=token("dashboard"))
    _, rec = await subscribed(client, "sensors:plant.p7.temperature")
    _, deep = await subscribed(client, "raw:any.a/b/c")
    async with mqtt_client(mosquitto) as device:
        await device.publish("plant/p7/temperature", b'{\n  "t": 21.5\n}', qos=1)  # pretty: re-encoded
        await device.publish("any/a/b/c", b"[1, 2]", qos=1)
        pub = await rec.pub()
        assert pub.data == {"t": 21.5}
        assert pub.info.client == "mqtt"
        assert (await deep.pub()).data == [1, 2]
    assert hub.sb.node.feed_metrics.mqtt_messages[("in", "published")] == 2


async def test_binary_payloads_go_to_binary_namespaces_as_they_are(
    make_hub: Any, mosquitto: Mosquitto
) -> None:
    hub = await bridged(make_hub, mosquitto)
    async with mqtt_client(mosquitto) as device:
        await device.publish("cam/front", b"\x00\xff\x10 jpeg", qos=1)
        await device.publish("plant/p1/temperature", b'{"t": 1}', qos=1)  # after the first: a barrier

        async def arrived() -> bool:
            return await history(hub, "sensors:plant.p1.temperature") != []

        await eventually(arrived)
    assert await history(hub, "cam:front") == ["AP8QIGpwZWc="]  # base64 to JSON readers


async def test_a_retained_message_is_the_channels_last_value(make_hub: Any, mosquitto: Mosquitto) -> None:
    async with mqtt_client(mosquitto) as device:
        await device.publish("plant/p3/temperature", b'{"t": 19.0}', qos=1, retain=True)
    hub = await bridged(make_hub, mosquitto)  # starts after the message: the broker hands it on subscribe

    async def kept() -> bool:
        return await history(hub, "sensors:plant.p3.temperature") != []

    await eventually(kept)
    assert await history(hub, "sensors:plant.p3.temperature") == [{"t": 19.0}]
    # the same retained message handed again (a new subscription, as after a reconnect) is not a new reading
    assert hub.sb.mqtt is not None
    assert await hub.sb.mqtt.bring_in("plant/p3/temperature", b'{"t": 19.0}', retained=True) == ""
    assert await hub.sb.mqtt.bring_in("plant/p3/temperature", b'{"t": 20.0}', retained=True) is None
    assert await history(hub, "sensors:plant.p3.temperature") == [{"t": 19.0}, {"t": 20.0}]


async def test_retained_messages_are_a_new_dashboards_latest_value_of_every_sensor(
    make_hub: Any, mosquitto: Mosquitto, sdk: Any
) -> None:
    # retained before the bridge exists: the broker keeps the last of each topic and hands them over on
    # subscribe; the key is the topic's level, so two sensors whose payloads name none stay two values
    async with mqtt_client(mosquitto) as device:
        for value in (1, 2):
            for sensor in ("s0", "s1", "s2"):
                payload = orjson.dumps({"sensor": sensor, "t": value})
                await device.publish(f"hall/{sensor}/reading", payload, qos=1, retain=True)
        await device.publish("hall/x8/reading", b'{"t": 8}', qos=1, retain=True)
        await device.publish("hall/x9/reading", b'{"t": 9}', qos=1, retain=True)
        await device.publish("hall/x7/reading", b'{"sensor": "s0", "t": 0}', qos=1, retain=True)  # disagrees
    hub = await bridged(make_hub, mosquitto)

    async def all_in() -> bool:
        counts = hub.sb.node.feed_metrics.mqtt_messages
        return counts[("in", "published")] + counts[("in", "refused")] == 6

    await eventually(all_in)
    assert hub.sb.node.feed_metrics.mqtt_messages[("in", "refused")] == 1  # x7: not the data's /sensor
    client, _ = await connected(sdk, hub, token=token("dashboard"))
    sub, rec = await subscribed(client, "dash:hall")
    got = [(await rec.pub()).data for _ in range(5)]  # at once: cache recovery, no new message needed
    assert sorted(got, key=str) == sorted(
        [{"sensor": "s0", "t": 2}, {"sensor": "s1", "t": 2}, {"sensor": "s2", "t": 2}, {"t": 8}, {"t": 9}],
        key=str,
    )
    async with mqtt_client(mosquitto) as device:  # and live from there
        await device.publish("hall/s1/reading", b'{"sensor": "s1", "t": 3}', qos=1)
        assert (await rec.pub()).data == {"sensor": "s1", "t": 3}


async def test_a_channel_goes_out_to_its_topic_and_the_bridge_never_echoes_itself(
    make_hub: Any, mosquitto: Mosquitto
) -> None:
    hub = await bridged(make_hub, mosquitto)
    async with mqtt_client(mosquitto) as device:
        await device.subscribe("plant/+/command", qos=1)
        async with http_client(timeout=TIMEOUT) as http:
            for n in (1, 2):
                response = await http.post(
                    f"{hub.http}/api/publish",
                    json={"channel": "commands:plant.p7", "data": {"on": True, "n": n}},
                    headers={"X-API-Key": KEY},
                )
                assert "result" in response.json()
        received = []
        async with asyncio.timeout(TIMEOUT):
            async for message in device.messages:
                received.append((message.topic.value, message.payload))
                if len(received) == 2:
                    break
    assert received == [
        ("plant/p7/command", b'{"on":true,"n":1}'),
        ("plant/p7/command", b'{"on":true,"n":2}'),
    ]
    assert hub.sb.node.feed_metrics.mqtt_messages[("out", "published")] == 2


async def test_after_a_broker_restart_the_bridge_reconnects_and_subscribes_again(
    make_hub: Any, mosquitto: Mosquitto, caplog: Any
) -> None:
    caplog.set_level(logging.INFO)
    hub = await bridged(make_hub, mosquitto)
    bridge = hub.sb.mqtt
    await asyncio.to_thread(mosquitto.stop)  # no persistence: the restarted broker knows no subscription

    async def down() -> bool:
        return not hub.sb.node.feed_metrics.mqtt_up

    await eventually(down)
    await asyncio.to_thread(mosquitto.start)
    async with asyncio.timeout(TIMEOUT):
        await bridge.connected.wait()
    assert bridge.connected.is_set()
    assert hub.sb.node.feed_metrics.mqtt_link_changes == 3  # up, down, up
    messages = [r.getMessage() for r in caplog.records if r.name == "switchboard.mqtt"]
    assert sum("connected to" in m for m in messages) == 2 and sum("lost" in m for m in messages) == 1
    async with mqtt_client(mosquitto) as device:
        await device.publish("plant/p9/temperature", b'{"t": 30}', qos=1)

        async def delivered() -> bool:
            return await history(hub, "sensors:plant.p9.temperature") == [{"t": 30}]

        await eventually(delivered)
    async with http_client(timeout=TIMEOUT) as http:
        text = (await http.get(f"{hub.http}/metrics")).text
    assert "switchboard_mqtt_link_up 1.0" in text


@pytest.mark.parametrize(
    ("topic", "payload", "why"),
    [
        ("plant/p1/temperature", b"not json", "payload is not JSON"),
        ("plant/p1/temperature", b'{"t": "' + b"x" * 2000 + b'"}', "over max_payload (1024)"),
        (
            "plant/p1/temperature",
            b'{"t": 900}',
            "invalid data: data/t: 900 is greater than the maximum of 500",
        ),
        ("plant/a b/temperature", b'{"t": 1}', "makes no channel: topic level 'a b' holds '#' or whitespace"),
    ],
)
async def test_garbage_is_refused_with_a_log_line_and_the_bridge_goes_on(
    make_hub: Any, mosquitto: Mosquitto, caplog: Any, topic: str, payload: bytes, why: str
) -> None:
    caplog.set_level(logging.INFO)
    hub = await bridged(make_hub, mosquitto)
    async with mqtt_client(mosquitto) as device:
        await device.publish(topic, payload, qos=1)
        await device.publish("plant/p1/temperature", b'{"t": 5}', qos=1)  # in order, after the bad one

        async def good_one() -> bool:
            return await history(hub, "sensors:plant.p1.temperature") == [{"t": 5}]

        await eventually(good_one)
    refusals = [r.getMessage() for r in caplog.records if "mqtt message on" in r.getMessage()]
    assert len(refusals) == 1 and why in refusals[0], refusals
    assert hub.sb.node.feed_metrics.mqtt_messages[("in", "refused")] == 1
