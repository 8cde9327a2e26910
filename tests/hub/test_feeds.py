"""Subscribing to a live feed, over real WebSockets on loopback: conflation (per channel and key, a lower rate
asked by the client, slow readers), the latest value on subscribe (cache recovery, per key), fossil delta
compression over JSON, events namespaces, and every bad input of these options."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
import pytest
import websockets

from channels.fossil import apply_delta
from channels.options import NamespaceOptions
from tests import conftest
from tests.conftest import TIMEOUT, RawClient, RunningHub

OPEN = {
    "allow_subscribe_for_client": True,
    "allow_subscribe_for_anonymous": True,
    "allow_publish_for_client": True,
    "allow_publish_for_anonymous": True,
}

FEEDS = {
    # one channel, many sensors, at most 10 a second each; the latest of each on subscribe; deltas
    "feed": NamespaceOptions.from_mapping(
        {
            **OPEN,
            "conflation": "latest",
            "max_rate": 10,
            "key_field": "/sensor",
            "history_size": 1,
            "history_ttl": 300,
            "force_recovery_mode": "cache",
            "allowed_delta_types": ["fossil"],
            "max_keys": 50,
        }
    ),
    # one value per channel at most 10 a second, no history
    "gauge": NamespaceOptions.from_mapping({**OPEN, "conflation": "latest", "max_rate": 10}),
    # the last value on subscribe, every publication delivered, deltas
    "state": NamespaceOptions.from_mapping(
        {
            **OPEN,
            "history_size": 10,
            "history_ttl": 300,
            "force_recovery_mode": "cache",
            "allowed_delta_types": ["fossil"],
        }
    ),
    # every reading, from history after a cut
    "alarms": NamespaceOptions.from_mapping(
        {
            **OPEN,
            "history_size": 1000,
            "history_ttl": 300,
            "force_recovery": True,
            "allowed_delta_types": ["fossil"],
        }
    ),
}


@pytest.fixture
async def feeds(make_hub: Any) -> RunningHub:
    cfg = conftest.test_config()
    cfg.namespaces = {**cfg.namespaces, **FEEDS}
    hub: RunningHub = await make_hub(cfg)
    return hub


async def connected(raw_client: Any, hub: RunningHub) -> RawClient:
    client: RawClient = await raw_client(hub, connect={})
    return client


async def subscribe(client: RawClient, channel: str, **params: Any) -> dict[str, Any]:
    reply = await client.command("subscribe", {"channel": channel, **params})
    assert "subscribe" in reply, reply
    return reply["subscribe"]  # type: ignore[no-any-return]


def reading(sensor: str, value: float, **extra: Any) -> dict[str, Any]:
    return {"sensor": sensor, "value": value, **extra}


async def publish(hub: RunningHub, channel: str, data: Any) -> None:
    await hub.sb.node.publish(channel, data)


async def pubs_until(client: RawClient, done: Any) -> list[dict[str, Any]]:
    """Publication pushes until ``done(received)`` holds."""
    received: list[dict[str, Any]] = []
    while not done(received):
        received.append((await client.push("pub"))["pub"])
    return received


# -- conflation ------------------------------------------------------------------------------------------


async def test_readings_under_the_rate_arrive_at_once_and_all(feeds: RunningHub, raw_client: Any) -> None:
    client = await connected(raw_client, feeds)
    await subscribe(client, "feed:plant")
    for i in range(20):  # twenty sensors, one reading each: no key is over its rate
        await publish(feeds, "feed:plant", reading(f"s{i}", i))
    got = await pubs_until(client, lambda r: len(r) == 20)
    assert [p["data"]["sensor"] for p in got] == [f"s{i}" for i in range(20)]


async def test_a_fast_key_is_conflated_to_the_rate_and_ends_with_the_newest(
    feeds: RunningHub, raw_client: Any
) -> None:
    client = await connected(raw_client, feeds)
    await subscribe(client, "feed:plant")
    start = time.monotonic()
    for i in range(200):
        await publish(feeds, "feed:plant", reading("hot", i))
    published_in = time.monotonic() - start
    got = await pubs_until(client, lambda r: bool(r) and r[-1]["data"]["value"] == 199)
    values = [p["data"]["value"] for p in got]
    assert values == sorted(set(values))  # in order, none repeated, never an older after a newer
    elapsed = time.monotonic() - start
    assert len(values) <= elapsed * 10 + 2, (len(values), elapsed)  # at most 10 a second (+ the first)
    assert len(values) < 200, published_in


async def test_a_client_may_ask_for_a_lower_rate_never_a_higher_one(
    feeds: RunningHub, raw_client: Any
) -> None:
    slow = await connected(raw_client, feeds)
    await subscribe(slow, "gauge:boiler", data={"max_rate": 2, "app": "kept for the hook"})
    greedy = await connected(raw_client, feeds)
    await subscribe(greedy, "gauge:boiler", data={"max_rate": 1000})

    async def count(client: RawClient, done: asyncio.Event) -> list[int]:
        got: list[int] = []
        async with asyncio.timeout(TIMEOUT * 2):
            while not (done.is_set() and got and got[-1] == last):
                with contextlib.suppress(TimeoutError):  # wake up to look at done and last again
                    async with asyncio.timeout(0.2):
                        got.append((await client.push("pub"))["pub"]["data"]["n"])
        return got

    done = asyncio.Event()
    last = 0
    readers = [asyncio.create_task(count(c, done)) for c in (slow, greedy)]
    start = time.monotonic()
    while time.monotonic() - start < 1.2:
        last += 1
        await publish(feeds, "gauge:boiler", {"n": last})
        await asyncio.sleep(0.005)
    done.set()
    slow_got, greedy_got = await asyncio.gather(*readers)
    elapsed = time.monotonic() - start
    assert slow_got[-1] == greedy_got[-1] == last  # both end with the newest
    assert len(slow_got) <= elapsed * 2 + 1, (slow_got, elapsed)  # 2 a second, as asked
    assert len(greedy_got) <= elapsed * 10 + 1, (greedy_got, elapsed)  # the namespace's 10, not 1000
    assert len(greedy_got) > len(slow_got)


@pytest.mark.parametrize(
    "data",
    [
        {"max_rate": "fast"},
        {"max_rate": 0},
        {"max_rate": -5},
        {"max_rate": 0.001},
        {"max_rate": True},
        {"max_rate": None},
        {"max_rate": [1]},
        {"max_rate": {"a": 1}},
        {"max_rate": 1e400},
    ],
)
async def test_a_bad_max_rate_is_refused_and_the_connection_stays(
    feeds: RunningHub, raw_client: Any, data: Any
) -> None:
    client = await connected(raw_client, feeds)
    payload = orjson.dumps({"id": 1, "subscribe": {"channel": "gauge:x", "data": data}}).replace(
        b"1e400", b"1e400"
    )
    await client.send_raw(payload.decode())
    reply = await client.reply(1)
    assert reply["error"]["code"] == 107, reply
    assert "max_rate" in reply["error"]["message"]
    assert "subscribe" in await client.command("subscribe", {"channel": "gauge:x"})  # still connected


async def test_data_that_is_not_an_object_asks_for_nothing(feeds: RunningHub, raw_client: Any) -> None:
    for data in ("text", 5, [1, 2], None):
        client = await connected(raw_client, feeds)
        assert await subscribe(client, "gauge:y", data=data) == {}


async def test_a_slow_reader_gets_fewer_fresher_updates_and_is_never_disconnected(
    make_hub: Any, raw_client: Any
) -> None:
    """A reader that takes one frame per 100 ms, on a channel published as fast as the hub takes it over 20
    keys: it stays connected, nothing is queued for it past the conflation backlog, and once publishing
    stops it holds the newest value of every key, having skipped most; a fast reader of the same channel
    gets more of them."""
    cfg = conftest.test_config(client_queue_max_size=256 * 1024, client_conflation_backlog=16 * 1024)
    cfg.namespaces = {**cfg.namespaces, **FEEDS}
    hub: RunningHub = await make_hub(cfg)
    latest: dict[str, int] = {}
    stop = asyncio.Event()

    subscribed = [asyncio.Event(), asyncio.Event()]

    async def reader(
        delay: float, ready: asyncio.Event
    ) -> tuple[list[tuple[str, int]], websockets.ClientConnection]:
        # max_queue 1: the client library stops reading the socket while one frame waits for us.
        ws = await websockets.connect(hub.url, max_size=None, max_queue=1, ping_interval=None)
        await ws.send('{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"feed:line"}}')
        while not ready.is_set():  # until the subscribe reply
            if any(orjson.loads(line).get("id") == 2 for line in (await ws.recv()).splitlines()):
                ready.set()
        got: list[tuple[str, int]] = []
        held: dict[str, int] = {}
        while not stop.is_set() or held != latest:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    frame = await ws.recv()
                    for line in frame.splitlines():
                        pub = orjson.loads(line).get("push", {}).get("pub")
                        if pub is not None:
                            got.append((pub["data"]["sensor"], pub["data"]["value"]))
                            held[got[-1][0]] = got[-1][1]
            await asyncio.sleep(delay)
        return got, ws

    readers = [
        asyncio.create_task(reader(delay, ready)) for delay, ready in zip((0.0, 0.1), subscribed, strict=True)
    ]
    node = hub.sb.node
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(*(ready.wait() for ready in subscribed))
    pad = "x" * 8000
    peak_pending = peak_held = 0
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < 2.0:
        sensor = f"s{i % 20}"
        latest[sensor] = i
        await publish(hub, "feed:line", reading(sensor, i, pad=pad))
        i += 1
        for c in node.sessions:
            peak_pending = max(peak_pending, c.writer.pending_bytes)
            for slots in (c.writer.slots or {}).values():
                peak_held = max(peak_held, len(slots.held))
        if i % 20 == 0:
            await asyncio.sleep(0.005)
    stop.set()
    async with asyncio.timeout(60):
        (fast_got, fast_ws), (slow_got, slow_ws) = await asyncio.gather(*readers)
    assert fast_ws.close_code is None and slow_ws.close_code is None  # never disconnected
    assert peak_pending <= 16 * 1024 + 8 * 1024 + 200  # never queued past the backlog (and one frame)
    assert peak_held <= 20  # one slot per key, whatever the rate
    for got in (fast_got, slow_got):
        per_key: dict[str, list[int]] = {}
        for sensor, value in got:
            per_key.setdefault(sensor, []).append(value)
        for values in per_key.values():
            assert values == sorted(set(values))  # never an older value after a newer one
        assert {k: v[-1] for k, v in per_key.items()} == latest
    assert len(slow_got) < len(fast_got) < i, (len(slow_got), len(fast_got), i)
    await fast_ws.close()
    await slow_ws.close()


# -- the latest value on subscribe (cache recovery) ------------------------------------------------------


async def test_a_new_subscriber_gets_the_latest_of_every_key_at_once(
    feeds: RunningHub, raw_client: Any
) -> None:
    for value in range(3):
        for sensor in ("a", "b", "c"):
            await publish(feeds, "feed:hall", reading(sensor, value * 10 + ord(sensor)))
    client = await connected(raw_client, feeds)
    result = await subscribe(client, "feed:hall")
    assert result["was_recovering"] is True and result["recovered"] is True
    assert result["recoverable"] is True
    got = await pubs_until(client, lambda r: len(r) == 3)
    assert {p["data"]["sensor"]: p["data"]["value"] for p in got} == {"a": 117, "b": 118, "c": 119}
    assert [p["offset"] for p in got] == sorted(p["offset"] for p in got)


async def test_nothing_published_yet_says_not_recovered(feeds: RunningHub, raw_client: Any) -> None:
    client = await connected(raw_client, feeds)
    result = await subscribe(client, "feed:empty")
    assert result["was_recovering"] is True and result["recovered"] is False
    result = await subscribe(client, "state:empty")
    assert result["recovered"] is False and "publications" not in result


async def test_the_latest_value_of_an_unkeyed_channel_comes_in_the_reply(
    feeds: RunningHub, raw_client: Any
) -> None:
    for n in range(5):
        await publish(feeds, "state:door", {"open": n % 2 == 0, "n": n})
    client = await connected(raw_client, feeds)
    result = await subscribe(client, "state:door")
    assert result["recovered"] is True
    assert [p["data"] for p in result["publications"]] == [{"open": True, "n": 4}]
    # Reconnecting at the top: it holds the latest already, nothing is sent again.
    again = await connected(raw_client, feeds)
    result = await subscribe(
        again, "state:door", recover=True, offset=result["offset"], epoch=result["epoch"]
    )
    assert result["recovered"] is True and "publications" not in result


async def test_a_key_past_max_keys_is_refused_with_limit_exceeded(feeds: RunningHub, raw_client: Any) -> None:
    client = await connected(raw_client, feeds)
    for i in range(50):
        reply = await client.command("publish", {"channel": "feed:many", "data": reading(f"k{i}", i)})
        assert reply.get("publish") == {}, reply
    reply = await client.command("publish", {"channel": "feed:many", "data": reading("k50", 50)})
    assert reply["error"]["code"] == 106
    reply = await client.command("publish", {"channel": "feed:many", "data": reading("k7", 1)})
    assert reply.get("publish") == {}  # a known key is fine


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"sensor": 1.5}, "string or an integer"),
        ({"sensor": True}, "string or an integer"),
        ({"sensor": None}, "string or an integer"),
        ({"sensor": ["a"]}, "string or an integer"),
        ({"sensor": {"id": 1}}, "string or an integer"),
        ({"sensor": "k" * 256}, "longer than 255"),
    ],
)
async def test_a_key_that_cannot_be_read_is_refused(
    feeds: RunningHub, raw_client: Any, data: Any, reason: str
) -> None:
    client = await connected(raw_client, feeds)
    reply = await client.command("publish", {"channel": "feed:bad", "data": data})
    assert reply["error"]["code"] == 107 and reason in reply["error"]["message"], reply
    history = await feeds.sb.node.broker.history(("", "feed:bad"), limit=-1)
    assert history.publications == []  # nothing published


async def test_readings_without_the_key_share_one_slot(feeds: RunningHub, raw_client: Any) -> None:
    await publish(feeds, "feed:nokey", {"value": 1})
    await publish(feeds, "feed:nokey", {"value": 2})
    await publish(feeds, "feed:nokey", {"sensor": 7, "value": 3})  # 7 and "7" are one key
    await publish(feeds, "feed:nokey", {"sensor": "7", "value": 4})
    client = await connected(raw_client, feeds)
    await subscribe(client, "feed:nokey")
    got = await pubs_until(client, lambda r: len(r) == 2)
    assert sorted(p["data"]["value"] for p in got) == [2, 4]


# -- delta compression ------------------------------------------------------------------------------------


def sensors(n: int) -> dict[str, Any]:
    """A reading of 30 fields where a few change every time."""
    return {
        "sensor": "boiler-7",
        "n": n,
        "temperature": 70 + n % 7,
        **{f"field_{i:02d}": f"steady value {i}" for i in range(27)},
    }


class DeltaReader:
    """What a JSON SDK does with a delta subscription's publications."""

    def __init__(self) -> None:
        self.base: bytes | None = None
        self.deltas = 0

    def apply(self, pub: dict[str, Any]) -> Any:
        assert isinstance(pub["data"], str), pub
        raw = pub["data"].encode()
        if pub.get("delta"):
            assert self.base is not None
            raw = apply_delta(self.base, raw)
            self.deltas += 1
        self.base = raw
        return orjson.loads(raw)


async def test_delta_first_full_then_deltas_over_json(feeds: RunningHub, raw_client: Any) -> None:
    client = await connected(raw_client, feeds)
    plain = await connected(raw_client, feeds)
    result = await subscribe(client, "alarms:boiler", delta="fossil")
    assert result["delta"] is True
    assert "delta" not in await subscribe(plain, "alarms:boiler")
    for n in range(10):
        await publish(feeds, "alarms:boiler", sensors(n))
    reader = DeltaReader()
    got = await pubs_until(client, lambda r: len(r) == 10)
    assert [reader.apply(p) for p in got] == [sensors(n) for n in range(10)]
    assert not got[0].get("delta") and reader.deltas == 9
    assert sum(len(p["data"]) for p in got[1:]) < 0.3 * sum(
        len(orjson.dumps(sensors(n))) for n in range(1, 10)
    )
    plain_got = await pubs_until(plain, lambda r: len(r) == 10)
    assert [p["data"] for p in plain_got] == [sensors(n) for n in range(10)]  # embedded JSON as before


async def test_delta_recovery_sends_a_chain_and_continues_from_it(feeds: RunningHub, raw_client: Any) -> None:
    client = await connected(raw_client, feeds)
    first = await subscribe(client, "alarms:chain", delta="fossil")
    await publish(feeds, "alarms:chain", sensors(0))
    reader = DeltaReader()
    assert reader.apply((await client.push("pub"))["pub"]) == sensors(0)
    await client.command("unsubscribe", {"channel": "alarms:chain"})
    for n in range(1, 5):
        await publish(feeds, "alarms:chain", sensors(n))
    again = await subscribe(
        client, "alarms:chain", delta="fossil", recover=True, offset=1, epoch=first["epoch"]
    )
    assert again["recovered"] is True and again["delta"] is True
    chain = again["publications"]
    assert not chain[0].get("delta") and all(p.get("delta") for p in chain[1:])
    fresh = DeltaReader()  # a chain starts full: the client's old base does not matter
    assert [fresh.apply(p) for p in chain] == [sensors(n) for n in range(1, 5)]
    await publish(feeds, "alarms:chain", sensors(5))
    live = (await client.push("pub"))["pub"]
    assert live.get("delta") is True  # against the chain's last
    assert fresh.apply(live) == sensors(5)


async def test_delta_under_conflation_and_cache(feeds: RunningHub, raw_client: Any) -> None:
    for n in range(3):
        await publish(feeds, "feed:d", {**sensors(n), "sensor": f"s{n}"})
    client = await connected(raw_client, feeds)
    result = await subscribe(client, "feed:d", delta="fossil")
    assert result["delta"] is True and result["recovered"] is True
    reader = DeltaReader()
    got = [reader.apply(p) for p in await pubs_until(client, lambda r: len(r) == 3)]
    assert got == [{**sensors(n), "sensor": f"s{n}"} for n in range(3)]
    for n in range(3, 30):
        await publish(feeds, "feed:d", {**sensors(n), "sensor": f"s{n % 3}"})
    latest = {f"s{n % 3}": n for n in range(27, 30)}
    values: dict[str, int] = {}
    while values != latest:
        data = reader.apply((await client.push("pub"))["pub"])
        values[data["sensor"]] = data["n"]
    assert reader.deltas > 0


async def test_delta_not_allowed_by_the_namespace_is_not_granted(feeds: RunningHub, raw_client: Any) -> None:
    client = await connected(raw_client, feeds)
    result = await subscribe(client, "gauge:nodelta", delta="fossil")
    assert "delta" not in result
    await publish(feeds, "gauge:nodelta", {"v": 1})
    assert (await client.push("pub"))["pub"]["data"] == {"v": 1}


@pytest.mark.parametrize("delta", ["zstd", 5, True, ["fossil"], "x" * 1000])
async def test_an_unknown_delta_type_is_a_bad_request(feeds: RunningHub, raw_client: Any, delta: Any) -> None:
    client = await connected(raw_client, feeds)
    await client.send_raw(
        orjson.dumps({"id": 1, "subscribe": {"channel": "alarms:x", "delta": delta}}).decode()
    )
    code, _ = await client.closed()
    assert code == 3501


# -- events: every reading, never a silent gap -------------------------------------------------------------


async def test_an_events_subscriber_that_falls_behind_is_cut_and_told_what_it_lost(
    make_hub: Any, raw_client: Any
) -> None:
    """An alarms namespace delivers every reading: a reader that does not keep up is closed with 3008 (as
    Centrifugo does); on reconnect it recovers what it missed from history, or is told it cannot
    (``recovered: false`` with the stream's position: the count it lost is the offset difference)."""
    cfg = conftest.test_config(client_queue_max_size=256 * 1024)
    cfg.namespaces = {**cfg.namespaces, **FEEDS}
    hub: RunningHub = await make_hub(cfg)
    ws = await websockets.connect(
        hub.url, max_size=None, max_queue=1, ping_interval=None, open_timeout=TIMEOUT
    )
    slow = RawClient(ws)
    await slow.command("connect", {})
    sub = await subscribe(slow, "alarms:audit")
    pad = "y" * 500
    n = 0
    while ws.close_code is None and n < 40_000:
        n += 1
        await publish(hub, "alarms:audit", {"n": n, "pad": pad})
        if n % 20 == 0:
            await asyncio.sleep(0)
    code, _ = await slow.closed()
    # The node closed it as slow (3008). The close frame queues behind the backlog; a reader too slow to
    # drain it within ws_uvicorn.SLOW_ABORT_AFTER (a busy machine) sees the abort instead (1006).
    assert hub.sb.node.metrics.slow_disconnects == 1
    assert code in (3008, 1006), code
    received = [p["pub"]["offset"] for p in (m["push"] for m in slow._inbox if "push" in m) if "pub" in p]
    last_seen = max(received, default=sub.get("offset", 0))
    back = await connected(raw_client, hub)
    again = await subscribe(back, "alarms:audit", recover=True, offset=last_seen, epoch=sub["epoch"])
    if again["recovered"]:
        assert [p["offset"] for p in again["publications"]] == list(range(last_seen + 1, n + 1))
    else:
        assert again["offset"] - last_seen > 0  # what it lost, to reload or report


# -- unidirectional streams ---------------------------------------------------------------------------------


async def test_an_sse_stream_gets_the_latest_of_every_key_and_conflated_readings_with_resume_ids() -> None:
    """A uni_sse stream subscribed by its token to a keyed feed: the latest of every key, then live
    readings, each event carrying the resume point past it; no ``unrecovered`` event for a feed that has a
    value (nor for one that has none yet: there, not recovered means "nothing yet")."""
    from hub.auth import mint_token
    from tests.hub import test_sse_resume as sse
    from tests.hub.test_session import SECRET, make_node

    written = asyncio.Event()

    class Sink(sse.SseSink):
        def write_messages(self, messages: list[bytes]) -> int:
            written.set()
            return super().write_messages(messages)

    async def until(sink: Sink, count: int) -> list[dict[str, Any]]:
        async with asyncio.timeout(TIMEOUT):
            while len(sse.pubs(sse.events(sink.data))) < count:
                written.clear()
                await written.wait()  # the slot clock's flush, in this loop
        return sse.events(sink.data)

    node = make_node(namespaces=FEEDS)
    await node.start()
    try:
        for n in range(6):
            await node.publish("feed:sse", {"sensor": f"t{n % 3}", "n": n})
        sink = Sink()
        client = node.new_session(sink, scope={})
        token = mint_token(SECRET, "u", channels=["feed:sse", "feed:nothing"])
        await client.connect_unidirectional({"token": token})
        got = await until(sink, 3)
        assert [p for _, p in sse.pubs(got)] == [{"sensor": f"t{i}", "n": 3 + i} for i in range(3)]
        assert not any(ev.get("event") == "unrecovered" for ev in got)
        ids = [ev["id"] for ev in got if "data" in ev and "pub" in orjson.loads(ev["data"])]
        assert len(set(ids)) == 3  # each event moves the resume point
        await node.publish("feed:sse", {"sensor": "t9", "n": 9})
        assert sse.pubs(await until(sink, 4))[-1] == ("feed:sse", {"sensor": "t9", "n": 9})
        await node.end_session(client)
    finally:
        await node.stop()
