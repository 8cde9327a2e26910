"""What a namespace says its data is, enforced on every way in: a JSON Schema (``data_schema``) that
refuses a reading before it is delivered or stored, and binary data (``data_format = "binary"``) that
Protobuf clients send and get raw and every JSON speaker sends and gets as a base64 string."""

from __future__ import annotations

import base64
import dataclasses
import logging
from typing import Any

import pytest
from centrifuge import Client, ReplyError

from channels.options import NamespaceOptions
from channels.schema import DataSchema
from hub import wire
from tests.conftest import TIMEOUT, RunningHub, http_client, token
from tests.conftest import test_config as base_config
from tests.hub.test_sdk_channels import Rec

API_KEY = "feed-data-api-key"
SCHEMA = {
    "type": "object",
    "properties": {"t": {"type": "number", "minimum": -50, "maximum": 500}},
    "required": ["t"],
}
OPEN = dict(
    allow_subscribe_for_client=True,
    allow_publish_for_client=True,
    allow_history_for_client=True,
    history_size=100,
    history_ttl=300.0,
)


def feed_config(**overrides: Any) -> Any:
    cfg = base_config(api_key=API_KEY, **overrides)
    namespaces = {
        **cfg.namespaces,
        "sensors": NamespaceOptions(**OPEN, data_schema=DataSchema(SCHEMA)),
        "cam": NamespaceOptions(**OPEN, force_recovery=True, data_format="binary"),
    }
    return dataclasses.replace(cfg, namespaces=namespaces)


@pytest.fixture
async def feeds(make_hub: Any) -> RunningHub:
    hub: RunningHub = await make_hub(feed_config())
    return hub


async def api(hub: RunningHub, method: str, params: dict[str, Any]) -> dict[str, Any]:
    async with http_client(timeout=TIMEOUT) as http:
        response = await http.post(f"{hub.http}/api/{method}", json=params, headers={"X-API-Key": API_KEY})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def history(hub: RunningHub, channel: str) -> list[Any]:
    body = await api(hub, "history", {"channel": channel, "limit": -1})
    return [p["data"] for p in body["result"].get("publications", [])]


# ---------------------------------------------------------------- data_schema


async def test_a_schema_refuses_bad_data_on_every_way_in_and_none_of_it_is_delivered_or_stored(
    feeds: RunningHub, raw_client: Any, caplog: Any
) -> None:
    caplog.set_level(logging.INFO)
    watcher = await raw_client(feeds, connect={"token": token("watcher")})
    assert "subscribe" in await watcher.command("subscribe", {"channel": "sensors:boiler"})
    reason = "data/t: 900 is greater than the maximum of 500"

    # a JSON client
    client = await raw_client(feeds, connect={"token": token("device")})
    reply = await client.command("publish", {"channel": "sensors:boiler", "data": {"t": 900}})
    assert reply["error"] == {"code": 107, "message": f"invalid data: {reason}"}
    # a Protobuf client (the official SDK)
    pb = Client(feeds.url, use_protobuf=True, token=token("device"), timeout=TIMEOUT)
    try:
        await pb.connect()
        with pytest.raises(ReplyError) as err:
            await pb.publish("sensors:boiler", b'{"t": "hot"}')
        assert err.value.code == 107 and 'data/t: "hot" is not of type "number"' in err.value.message
    finally:
        await pb.disconnect()
    # the server API: publish, broadcast (per channel), batch
    assert (await api(feeds, "publish", {"channel": "sensors:boiler", "data": {"t": 900}}))["error"] == {
        "code": 107,
        "message": f"invalid data: {reason}",
    }
    body = await api(feeds, "broadcast", {"channels": ["sensors:boiler", "chat:x"], "data": {"t": 900}})
    first, second = body["result"]["responses"]
    assert first["error"]["code"] == 107 and reason in first["error"]["message"]
    assert "result" in second  # chat has no schema
    body = await api(feeds, "batch", {"commands": [{"publish": {"channel": "sensors:boiler", "data": {}}}]})
    assert body["replies"][0]["error"] == {
        "code": 107,
        "message": 'invalid data: data: "t" is a required property',
    }
    # the embedding API
    with pytest.raises(ValueError, match="invalid data: data/t: 900"):
        await feeds.sb.publish("sensors:boiler", {"t": 900})

    # good data passes every way, and only it arrives and is kept
    assert "publish" in await client.command("publish", {"channel": "sensors:boiler", "data": {"t": 20}})
    assert (await watcher.push("pub"))["pub"]["data"] == {"t": 20}
    assert await history(feeds, "sensors:boiler") == [{"t": 20}]
    assert feeds.sb.node.feed_metrics.refused_data["sensors"] == 6
    assert any("invalid data" in r.getMessage() for r in caplog.records if r.name == "switchboard.client")


# ---------------------------------------------------------------- binary data


async def test_binary_data_goes_raw_to_protobuf_and_as_base64_to_json_encoded_once_per_format(
    feeds: RunningHub, raw_client: Any
) -> None:
    frame = bytes(range(256)) + b"\x00\xff not json at all"
    shown = base64.b64encode(frame).decode()
    camera = Client(feeds.url, use_protobuf=True, token=token("camera"), timeout=TIMEOUT)
    viewer = Client(feeds.url, use_protobuf=True, token=token("viewer"), timeout=TIMEOUT)
    try:
        await camera.connect()
        rec = Rec()
        await viewer.connect()
        sub = viewer.new_subscription("cam:front", events=rec)
        await sub.subscribe()
        await sub.ready(TIMEOUT)
        browser = await raw_client(feeds, connect={"token": token("browser")})
        assert "subscribe" in await browser.command("subscribe", {"channel": "cam:front"})

        encoded: list[int] = []
        real = wire.CODECS

        class Counting:
            def __init__(self, fmt: int) -> None:
                self.fmt = fmt

            def __getattr__(self, name: str) -> Any:
                attr = getattr(real[self.fmt], name)
                if name != "encode_publication_push":
                    return attr
                return lambda *a: (encoded.append(self.fmt), attr(*a))[1]

        import hub.node as node_module

        node_module.CODECS = tuple(Counting(i) for i in range(len(real)))  # type: ignore[assignment]
        try:
            await camera.publish("cam:front", frame)
            assert (await rec.pub()).data == frame
            assert (await browser.push("pub"))["pub"]["data"] == shown
        finally:
            node_module.CODECS = real
        assert sorted(encoded) == [wire.JSON, wire.PROTOBUF]

        # JSON speakers write binary data as base64 too: a JSON client, the server API (data or b64data)
        second = b"\x01\x02\x03"
        assert "publish" in await browser.command(
            "publish", {"channel": "cam:front", "data": base64.b64encode(second).decode()}
        )
        assert (await rec.pub()).data == second
        assert (await browser.push("pub"))["pub"]["data"] == "AQID"
        assert "result" in await api(feeds, "publish", {"channel": "cam:front", "b64data": "BAU="})
        assert (await rec.pub()).data == b"\x04\x05"
        assert "result" in await api(feeds, "broadcast", {"channels": ["cam:front"], "data": "Bg=="})
        assert (await rec.pub()).data == b"\x06"
        await feeds.sb.publish("cam:front", b"\x07")
        assert (await rec.pub()).data == b"\x07"

        # what is kept reads the same way: history and recovery over JSON, the server API's history
        expected = [shown, "AQID", "BAU=", "Bg==", "Bw=="]
        assert await history(feeds, "cam:front") == expected
        reply = await browser.command("history", {"channel": "cam:front", "limit": 10})
        assert [p["data"] for p in reply["history"]["publications"]] == expected
        late = await raw_client(feeds, connect={"token": token("late")})
        reply = await late.command(
            "subscribe",
            {"channel": "cam:front", "recover": True, "offset": 3, "epoch": reply["history"]["epoch"]},
        )
        assert [p["data"] for p in reply["subscribe"]["publications"]] == ["Bg==", "Bw=="]
    finally:
        await camera.disconnect()
        await viewer.disconnect()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"not": "a string"}, "a binary namespace takes data as a base64 string"),
        ("not base64!", "data is not base64"),
        ("QUJD\n", "data is not base64"),
        ("é", "data is not base64"),
        (None, "a binary namespace takes data as a base64 string"),
    ],
)
async def test_json_speakers_must_send_binary_data_as_base64(
    feeds: RunningHub, raw_client: Any, data: Any, why: str
) -> None:
    client = await raw_client(feeds, connect={"token": token("browser")})
    reply = await client.command("publish", {"channel": "cam:front", "data": data})
    assert reply["error"]["code"] == 107 and why in reply["error"]["message"]
    body = await api(feeds, "publish", {"channel": "cam:front", "data": data})
    assert body["error"]["code"] == 107 and why in body["error"]["message"]
    assert await history(feeds, "cam:front") == []


async def test_a_json_namespace_still_refuses_bytes_that_are_not_json(feeds: RunningHub) -> None:
    camera = Client(feeds.url, use_protobuf=True, token=token("camera"), timeout=TIMEOUT)
    try:
        await camera.connect()
        with pytest.raises(ReplyError) as err:
            await camera.publish("news", b"\xff\x00")
        assert err.value.code == 107
        body = await api(feeds, "publish", {"channel": "news", "b64data": "/wA="})
        assert body["error"]["code"] == 107
    finally:
        await camera.disconnect()
