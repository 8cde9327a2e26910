"""The ingest endpoints against a real hub: line protocol and JSON lines in, SDK subscribers and history
out; partly bad batches, keys and tenants, gzip and its bounds, garbage, and the event loop kept free."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import gzip
import logging
import time
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.options import NamespaceOptions
from channels.schema import DataSchema
from hub.config import ApiKey
from hub.ingest.settings import parse_ingest
from tests import nodes as harness
from tests.conftest import TIMEOUT, RunningHub, http_client, token
from tests.conftest import test_config as base_config
from tests.hub.test_sdk_channels import connected, subscribed
from tests.nodes import NodesFactory
from tests.redis_servers import RedisServer

KEY = "ingest-key"
BOUND = "acme-key"
FEED = dict(
    allow_subscribe_for_client=True,
    allow_history_for_client=True,
    history_size=1000,
    history_ttl=300.0,
)
ROUTES = {
    "line_protocol": [
        {"measurements": ["boiler"], "channel": "plant:{measurement}.{tag:host}", "tags_field": "tags"},
        {"measurements": ["cpu"], "channel": "telegraf:{tag:host}", "time_field": ""},
        {
            "measurements": ["meter"],
            "channel": "dash:{measurement}",
            "key": "{tag:sensor}",
            "tags_field": "t",
        },
    ]
}
DASH = NamespaceOptions.from_mapping(  # one channel, many sensors: conflated, the latest of each on subscribe
    {
        "allow_subscribe_for_client": True,
        "allow_subscribe_for_anonymous": True,
        "conflation": "latest",
        "max_rate": 10,
        "key_field": "/name",
        "max_keys": 100,
        "history_size": 1,
        "history_ttl": 300,
        "force_recovery_mode": "cache",
    }
)


def ingest_config(**overrides: Any) -> Any:
    overrides.setdefault("ingest", parse_ingest(ROUTES))
    cfg = base_config(api_key=KEY, api_keys=[ApiKey(BOUND, "acme")], **overrides)
    schema = DataSchema({"type": "object", "properties": {"temp": {"type": "number", "maximum": 500}}})
    namespaces = {
        **cfg.namespaces,
        "plant": NamespaceOptions(**FEED, data_schema=schema),
        "telegraf": NamespaceOptions(**FEED),
        "cam": NamespaceOptions(**FEED, data_format="binary"),
        "dash": DASH,
    }
    return dataclasses.replace(cfg, namespaces=namespaces)


@pytest.fixture
async def hub(make_hub: Any) -> RunningHub:
    running: RunningHub = await make_hub(ingest_config())
    return running


async def post(
    hub: RunningHub,
    path: str,
    body: bytes,
    *,
    key: str | None = KEY,
    headers: dict[str, str] | None = None,
    **params: str,
) -> httpx.Response:
    sent = dict(headers or {})
    if key is not None:
        sent.setdefault("X-API-Key", key)
    async with http_client(timeout=TIMEOUT) as http:
        return await http.post(f"{hub.http}{path}", content=body, headers=sent, params=params)


async def history(hub: RunningHub, channel: str, tenant: str = "") -> list[Any]:
    async with http_client(timeout=TIMEOUT) as http:
        response = await http.post(
            f"{hub.http}/api/history",
            json={"channel": channel, "limit": -1, "tenant": tenant},
            headers={"X-API-Key": KEY},
        )
    return [p["data"] for p in response.json()["result"].get("publications", [])]


# ---------------------------------------------------------------- readings in, to subscribers


async def test_a_telegraf_batch_reaches_sdk_subscribers_of_many_channels(hub: RunningHub, sdk: Any) -> None:
    client, _ = await connected(sdk, hub, token=token("dashboard"))
    _, boiler = await subscribed(client, "plant:boiler.b7")
    _, cpu = await subscribed(client, "telegraf:web1")
    lines = [f"cpu,host=web{i % 50} usage={i}.5,idle={i}i {1700000000 + i}" for i in range(2000)]
    lines.insert(7, "boiler,host=b7,sensor=t1 temp=71.5 1700000000000")
    response = await post(hub, "/ingest/influx", "\n".join(lines).encode(), precision="ms")
    assert response.status_code == 204, response.text
    reading = (await boiler.pub()).data
    assert reading == {"temp": 71.5, "time": 1700000000000, "tags": {"host": "b7", "sensor": "t1"}}
    assert (await cpu.pub()).data == {"usage": 1.5, "idle": 1}  # web1 is line 2 (time_field off)
    assert [d["idle"] for d in await history(hub, "telegraf:web1")] == list(range(1, 2000, 50))
    assert hub.sb.node.feed_metrics.ingest_points[("influx", "accepted")] == 2001


async def test_json_lines_and_a_gzipped_body(hub: RunningHub) -> None:
    lines = [orjson.dumps({"channel": f"telegraf:j{i % 3}", "data": {"n": i}}) for i in range(30)]
    body = gzip.compress(b"\n".join(lines))
    response = await post(hub, "/ingest/jsonl", body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 204, response.text
    assert await history(hub, "telegraf:j1") == [{"n": i} for i in range(1, 30, 3)]  # each in line order


async def test_ingested_readings_keep_their_keys_so_a_new_dashboard_gets_every_sensors_latest(
    hub: RunningHub, raw_client: Any
) -> None:
    # JSON lines: 40 sensors, 5 rounds, the key given beside the data (the data names no /name: the key
    # is the line's); one line whose key disagrees with its data's /name is refused, one that agrees taken
    lines = [
        {"channel": "dash:hall", "key": f"s{i}", "data": {"label": f"s{i}", "v": r}}
        for r in range(5)
        for i in range(40)
    ]
    lines += [
        {"channel": "dash:hall", "key": "s1", "data": {"name": "s2", "v": 99}},
        {"channel": "dash:hall", "key": "s3", "data": {"name": "s3", "label": "s3", "v": 7}},
    ]
    body = b"\n".join(orjson.dumps(line) for line in lines)
    response = await post(hub, "/ingest/jsonl", body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["accepted"] == 201 and answer["refused"] == 1
    assert answer["errors"][0]["line"] == 201 and "is not the data's /name" in answer["errors"][0]["reason"]
    # line protocol: the route's key (a tag), 20 meters, 3 rounds
    points = [f"meter,sensor=m{i} kw={r}i {1700000000000 + r}" for r in range(3) for i in range(20)]
    response = await post(hub, "/ingest/influx", "\n".join(points).encode(), precision="ms")
    assert response.status_code == 204, response.text

    client: Any = await raw_client(hub, connect={})
    for channel, count in (("dash:hall", 40), ("dash:meter", 20)):
        reply = await client.command("subscribe", {"channel": channel})
        assert reply["subscribe"]["recovered"] is True, reply
        got = [(await client.push("pub"))["pub"]["data"] for _ in range(count)]
        if channel == "dash:hall":
            latest = {d["label"]: d["v"] for d in got}
            assert latest == {f"s{i}": 7 if i == 3 else 4 for i in range(40)}
        else:
            assert {d["t"]["sensor"]: d["kw"] for d in got} == {f"m{i}": 2 for i in range(20)}


async def test_influxdb_v2_writes_with_a_token_and_bound_keys_keep_to_their_tenant(hub: RunningHub) -> None:
    line = b"cpu,host=a usage=1 1700000000000000000\n"
    response = await post(
        hub, "/api/v2/write", line, key=None, headers={"Authorization": f"Token {BOUND}"}, org="o", bucket="b"
    )
    assert response.status_code == 204, response.text
    assert await history(hub, "telegraf:a", tenant="acme") == [{"usage": 1.0}]
    assert await history(hub, "telegraf:a") == []
    refused = await post(hub, "/ingest/influx", line, key=BOUND, tenant="other")
    assert refused.status_code == 403
    assert (await post(hub, "/ingest/influx", line, tenant="beta")).status_code == 204  # unbound: any tenant
    assert await history(hub, "telegraf:a", tenant="beta") == [{"usage": 1.0}]


# ---------------------------------------------------------------- partly bad batches


async def test_a_partly_bad_batch_keeps_the_good_points_and_names_each_refused_line(
    hub: RunningHub, caplog: Any
) -> None:
    caplog.set_level(logging.INFO)
    body = b"\n".join(
        [
            b"boiler,host=b1 temp=70",  # 1: good
            b"boiler,host=b1 temp=",  # 2: no value
            b"boiler temp=71",  # 3: the route's tag is missing
            b"boiler,host=b1 temp=900",  # 4: the namespace's schema refuses it
            b"pump,host=p1 rpm=5",  # 5: no route takes the measurement
            b"",  # 6: blank
            b"boiler,host=b1 temp=72",  # 7: good
        ]
    )
    response = await post(hub, "/ingest/influx", body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["accepted"] == 2 and answer["refused"] == 4
    assert [e["line"] for e in answer["errors"]] == [2, 3, 4, 5]
    reasons = [e["reason"] for e in answer["errors"]]
    assert reasons[0] == "line ends where a field value should be"
    assert reasons[1] == "tag 'host' is missing (the template 'plant:{measurement}.{tag:host}' needs it)"
    assert reasons[2] == "invalid data: data/temp: 900.0 is greater than the maximum of 500"
    assert reasons[3] == "no [[ingest.line_protocol]] route takes 'pump'"
    assert answer["code"] == "invalid" and answer["line"] == 2
    assert answer["message"].startswith("partial write: 4 of 6 lines refused; line 2: ")
    assert [d["temp"] for d in await history(hub, "plant:boiler.b1")] == [70.0, 72.0]
    assert any("ingest from" in r.getMessage() and "4 of 6" in r.getMessage() for r in caplog.records)


async def test_json_lines_refusals_and_binary_namespaces(hub: RunningHub) -> None:
    body = b"\n".join(
        [
            b'{"channel": "cam:front", "data": "AAEC"}',  # binary data as base64: taken
            b'{"channel": "cam:front", "data": {"x": 1}}',  # not base64
            b'{"channel": "nope:x", "data": 1}',  # no such namespace
            b'{"channel": "telegraf:ok", "data": 1, "extra": 2}',  # unknown member
            b"{",
        ]
    )
    response = await post(hub, "/ingest/jsonl", body)
    assert response.status_code == 400
    answer = response.json()
    assert (answer["accepted"], answer["refused"]) == (1, 4)
    assert [e["line"] for e in answer["errors"]] == [2, 3, 4, 5]
    assert answer["errors"][0]["reason"] == "a binary namespace takes data as a base64 string"
    assert answer["errors"][1]["reason"] == "channel 'nope:x': unknown namespace 'nope'"
    assert await history(hub, "cam:front") == ["AAEC"]
    line = await post(hub, "/ingest/influx", b"x,host=h v=1")
    assert line.status_code == 400  # no route for x; and line protocol never writes binary namespaces


async def test_lines_past_the_bound_are_refused_with_one_error(make_hub: Any) -> None:
    hub = await make_hub(ingest_config(ingest_max_lines=1000))
    lines = [f"cpu,host=h{i % 7} n={i}i" for i in range(2500)]
    response = await post(hub, "/ingest/influx", "\n".join(lines).encode())
    answer = response.json()
    assert (answer["accepted"], answer["refused"]) == (1000, 1500)
    assert answer["errors"] == [
        {"line": 1001, "reason": "the batch holds more than 1000 lines: this and the rest refused"}
    ]


# ---------------------------------------------------------------- requests that cannot be taken


@pytest.mark.parametrize(
    ("path", "body", "headers", "params", "status", "words"),
    [
        ("/ingest/influx", b"cpu v=1", {"X-API-Key": "wrong"}, {}, 401, "unauthorized"),
        ("/ingest/influx", b"cpu v=1", {"Authorization": "Bearer " + KEY}, {}, 401, "unauthorized"),
        ("/ingest/influx", b"cpu v=1", {}, {"precision": "fortnight"}, 400, "unknown precision 'fortnight'"),
        ("/ingest/influx", b"cpu v=1", {"Content-Encoding": "br"}, {}, 415, "'br' is not supported"),
        ("/ingest/jsonl", b"not gzip", {"Content-Encoding": "gzip"}, {}, 400, "the body is not gzip"),
        (
            "/ingest/jsonl",
            gzip.compress(b'{"a": 1}', mtime=0)[:-9],  # mtime=0: the same bytes and test id in each process
            {"Content-Encoding": "gzip"},
            {},
            400,
            "cut short",
        ),
        ("/ingest/jsonl", b"x" * 70000, {}, {}, 413, "larger than 65536 bytes"),
    ],
)
async def test_requests_that_cannot_be_taken_get_a_clear_answer(
    make_hub: Any,
    path: str,
    body: bytes,
    headers: dict[str, str],
    params: dict[str, str],
    status: int,
    words: str,
) -> None:
    hub = await make_hub(ingest_config(ingest_max_body_size=65536))
    headers = {"X-API-Key": KEY, **headers} if "X-API-Key" not in headers and status != 401 else headers
    response = await post(hub, path, body, key=None, headers=headers, **params)
    assert response.status_code == status
    assert words in response.text


async def test_a_zip_bomb_stops_at_the_inflated_bound(make_hub: Any) -> None:
    hub = await make_hub(ingest_config(ingest_max_decompressed_size=4 << 20))
    bomb = gzip.compress(b"\n" * (256 << 20), compresslevel=9)  # 256 MiB of line ends in ~250 KB
    assert len(bomb) < 1 << 20
    response = await post(hub, "/ingest/jsonl", bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413 and "inflates to more than 4194304 bytes" in response.text


async def test_line_protocol_is_off_without_a_route(make_hub: Any) -> None:
    hub = await make_hub(ingest_config(ingest=parse_ingest({})))
    response = await post(hub, "/ingest/influx", b"cpu v=1")
    assert response.status_code == 404 and "[[ingest.line_protocol]]" in response.text
    assert (await post(hub, "/ingest/jsonl", b'{"channel": "telegraf:x", "data": 1}')).status_code == 204


async def test_requests_past_the_concurrency_bound_are_told_to_come_back(make_hub: Any) -> None:
    hub = await make_hub(ingest_config(ingest_max_concurrent=1))
    gate = asyncio.Event()

    async def trickle() -> Any:
        yield b'{"channel": "telegraf:slow", "data": 1}\n'
        await gate.wait()
        yield b'{"channel": "telegraf:slow", "data": 2}\n'

    async with http_client(timeout=TIMEOUT) as http:
        slow = asyncio.ensure_future(
            http.post(f"{hub.http}/ingest/jsonl", content=trickle(), headers={"X-API-Key": KEY})
        )
        async with asyncio.timeout(TIMEOUT):
            while hub.sb.ingest.busy == 0:  # noqa: ASYNC110 - the server signals nothing: its counter, polled
                await asyncio.sleep(0.01)
        refused = await post(hub, "/ingest/jsonl", b'{"channel": "telegraf:x", "data": 1}')
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        gate.set()
        assert (await slow).status_code == 204
    assert (await post(hub, "/ingest/jsonl", b'{"channel": "telegraf:x", "data": 1}')).status_code == 204


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=600)
    | st.lists(st.sampled_from([b"cpu,host=a v=1", b"{", b"\xff", b"a b c"])).map(b"\n".join)
)
async def test_garbage_gets_an_answer_and_the_hub_stays_up(hub: RunningHub, body: bytes) -> None:
    for path in ("/ingest/influx", "/ingest/jsonl"):
        response = await post(hub, path, body)
        assert response.status_code in (204, 400), response.text
        if response.status_code == 400:
            answer = response.json()
            assert answer["refused"] >= 1 and answer["errors"]
    assert (await post(hub, "/ingest/jsonl", b'{"channel": "telegraf:alive", "data": 1}')).status_code == 204


# ---------------------------------------------------------------- the event loop stays free


async def test_a_big_batch_does_not_hold_the_event_loop(hub: RunningHub) -> None:
    """20,000 points (about a second of parsing and publishing) in one request: the loop is never held
    for more than a small part of it, because the batch is inflated, parsed and published a chunk at a
    time. (Checked as a share of the whole, so a busy machine slows both alike; the garbage collector is
    held off meanwhile: a full collection of the hub's heap is a pause of its own, not the ingest's.)"""
    line = "cpu,host=h{},region=eu-west usage_user={}.25,usage_system=3.5,idle={}i {}"
    body = gzip.compress("\n".join(line.format(i % 200, i, i, i) for i in range(20000)).encode())
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now

    watch = asyncio.ensure_future(ticker())
    gc.disable()
    try:
        started = time.perf_counter()
        response = await post(hub, "/ingest/influx", body, headers={"Content-Encoding": "gzip"})
        took = time.perf_counter() - started
    finally:
        gc.enable()
        done = True
        await watch
    assert response.status_code == 204, response.text
    assert worst < took / 5, f"the loop was held {worst * 1000:.0f} ms of the batch's {took * 1000:.0f} ms"


# ---------------------------------------------------------------- attacks on a real switchboard serve

make_nodes = harness.make_nodes
MB = 1024 * 1024


async def test_zip_bombs_at_the_concurrency_bound_keep_the_node_small(make_nodes: NodesFactory) -> None:
    """Eight requests at once, each a 1 MiB gzip body that inflates to 512 MiB: the node inflates at most
    ``ingest_max_concurrent`` of them at a time, each only up to ``ingest_max_decompressed_size`` (the rest
    are told 429), so its memory grows by a few of those bounds, not by gigabytes; and it still serves."""
    [node] = await make_nodes(1, ingest_max_decompressed_size=8 * MB, ingest_max_concurrent=2)
    bomb = gzip.compress(b"\n" * (512 * MB), compresslevel=9)
    assert len(bomb) < 1 * MB
    headers = {"X-API-Key": harness.API_KEY, "Content-Encoding": "gzip"}
    async with http_client(timeout=TIMEOUT * 3) as http:
        with node.sample_rss() as rss:
            answers = await asyncio.gather(
                *(http.post(f"{node.http}/ingest/jsonl", content=bomb, headers=headers) for _ in range(8))
            )
        statuses = sorted(r.status_code for r in answers)
        assert set(statuses) <= {413, 429} and 413 in statuses, statuses
        ok = await http.post(
            f"{node.http}/ingest/jsonl",
            content=b'{"channel": "n", "data": 1}',
            headers={"X-API-Key": harness.API_KEY},
        )
        assert ok.status_code == 204
    assert rss.peak - rss.start < 60 * MB, rss


async def test_a_broker_that_cannot_take_publications_gets_503_and_retry_after(
    make_hub: Any, redis_server: RedisServer
) -> None:
    """Redis down: the request ends with 503 and Retry-After (Telegraf retries it later), saying how many
    lines were taken before; it never answers 204 for readings nobody stored."""
    hub = await make_hub(ingest_config(redis_urls=[redis_server.url], redis_connect_timeout=0.5))
    assert (await post(hub, "/ingest/jsonl", b'{"channel": "telegraf:r", "data": 1}')).status_code == 204
    redis_server.stop()
    response = await post(hub, "/ingest/jsonl", b'{"channel": "telegraf:r", "data": 2}\n' * 3)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.json()["accepted"] == 0
