"""Streamed replies on a running hub (``hub.streams``): chunks checked on every way in (client publish,
server API, embedding), delivered live and never stored, the finished message stored once, a subscriber that
joins or recovers mid-stream given the text so far first, idle streams abandoned, chunks coalesced per write,
and the same across two nodes on a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.options import NamespaceOptions
from channels.publication import Publication
from channels.streams import StreamView
from tests import nodes as harness
from tests.conftest import TIMEOUT, HubFactory, RunningHub, http_client, token
from tests.conftest import test_config as suite_config
from tests.nodes import eventually
from tests.redis_servers import RedisServer

make_nodes = harness.make_nodes  # the fixture, defined in tests/nodes.py

AGENT = NamespaceOptions(
    history_size=100,
    history_ttl=300.0,
    force_recovery=True,
    allow_subscribe_for_client=True,
    allow_publish_for_subscriber=True,
    allow_history_for_subscriber=True,
    streams=True,
    stream_max_open=2,
    stream_max_chunk_bytes=512,
    stream_max_message_bytes=2048,
)
API_KEY = "streams-api-key"


def config(**agent: Any) -> Any:
    base = suite_config(api_key=API_KEY)
    namespaces = {**base.namespaces, "agent": dataclasses.replace(AGENT, **agent)}
    return dataclasses.replace(base, namespaces=namespaces)


def chunk(stream: str, seq: int, text: str, final: bool = False, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"id": stream, "seq": seq}
    if final:
        fields["final"] = True
    return {"stream": fields, "text": text, **extra}


def view_of(pubs: list[dict[str, Any]]) -> StreamView:
    """What a client reassembles from the ``pub`` bodies it received."""
    view = StreamView()
    for pub in pubs:
        view.feed(Publication(orjson.dumps(pub["data"]), offset=pub.get("offset", 0)))
    return view


async def pubs_until_final(client: Any, stream: str) -> list[dict[str, Any]]:
    """Publications pushed to a raw client up to the finished message of ``stream``."""
    out = []
    while True:
        pub = (await client.push("pub"))["pub"]
        out.append(pub)
        fields = pub["data"].get("stream", {}) if isinstance(pub["data"], dict) else {}
        if fields.get("id") == stream and fields.get("final"):
            return out


async def api(hub: RunningHub, method: str, params: dict[str, Any]) -> dict[str, Any]:
    async with http_client(timeout=TIMEOUT) as http:
        reply = await http.post(
            f"{hub.http}/api/{method}", json=params, headers={"Authorization": f"apikey {API_KEY}"}
        )
    return reply.json()  # type: ignore[no-any-return]


async def history(hub: RunningHub, channel: str) -> list[Any]:
    result = await hub.sb.node.broker.history(("", channel))
    return [orjson.loads(p.data) for p in result.publications]


async def test_a_stream_from_a_client_live_to_each_subscriber_and_once_in_history(
    make_hub: HubFactory, raw_client: Any
) -> None:
    hub = await make_hub(config())
    bot = await raw_client(hub, connect={"token": token("bot")})
    early = await raw_client(hub, connect={"token": token("early")})
    for client in (bot, early):
        assert "error" not in await client.command("subscribe", {"channel": "agent:room"})
    words = ["Hel", "lo, ", "wörld", "!"]
    for seq, word in enumerate(words):
        reply = await bot.command(
            "publish", {"channel": "agent:room", "data": chunk("m1", seq, word, q="q7")}
        )
        assert "error" not in reply, reply
    late = await raw_client(hub, connect={"token": token("late")})
    assert "error" not in await late.command("subscribe", {"channel": "agent:room"})
    first = (await late.push("pub"))["pub"]  # the text so far, in one publication
    assert first["data"]["text"] == "Hello, wörld!" and first["data"]["stream"] == {
        "id": "m1",
        "seq": 3,
        "from": 0,
    }
    assert first["data"]["q"] == "q7" and first["info"]["user"] == "bot"
    await bot.command("publish", {"channel": "agent:room", "data": chunk("m1", 4, " Bye.", final=True)})

    for client, skipped in ((early, []), (late, [first])):
        view = view_of(skipped + await pubs_until_final(client, "m1"))
        assert view.texts == {"m1": "Hello, wörld! Bye."} and view.finished == {"m1"}
        assert (view.gaps, view.duplicates) == (0, 0)
    (kept,) = await history(hub, "agent:room")
    assert kept["text"] == "Hello, wörld! Bye." and kept["stream"] == {
        "id": "m1",
        "seq": 4,
        "from": 0,
        "final": True,
    }
    reply = await early.command("history", {"channel": "agent:room", "limit": 10})
    assert [p["data"]["text"] for p in reply["history"]["publications"]] == ["Hello, wörld! Bye."]


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        ({"stream": {"id": "m", "seq": 1}, "text": "x"}, 107, "chunk 1 where 0 was next"),
        ({"stream": {"id": "bad id", "seq": 0}, "text": "x"}, 107, "stream.id"),
        ({"stream": {"id": "m", "seq": -1}, "text": "x"}, 107, "stream.seq"),
        ({"stream": {"id": "m", "seq": 0, "from": 0}, "text": "x"}, 107, "unknown field"),
        ({"stream": {"id": "m", "seq": 0}, "text": 5}, 107, "text"),
        ({"stream": "m", "text": "x"}, 107, "stream.id"),
        ({"stream": {"id": "m", "seq": 0}, "text": "x" * 600}, 106, "at most 512 bytes"),
    ],
)
async def test_a_bad_chunk_is_refused_on_every_way_in_and_nothing_goes_out(
    make_hub: HubFactory, raw_client: Any, data: Any, code: int, words: str
) -> None:
    hub = await make_hub(config())
    bot = await raw_client(hub, connect={"token": token("bot")})
    watcher = await raw_client(hub, connect={"token": token("watcher")})
    for client in (bot, watcher):
        assert "error" not in await client.command("subscribe", {"channel": "agent:room"})
    refused = await bot.command("publish", {"channel": "agent:room", "data": data})
    assert refused["error"]["code"] == code and words in refused["error"]["message"], refused
    answer = await api(hub, "publish", {"channel": "agent:room", "data": data})
    assert answer["error"]["code"] == code and words in answer["error"]["message"], answer
    with pytest.raises(Exception, match=words):
        await hub.sb.publish("agent:room", data)
    assert await history(hub, "agent:room") == []
    await bot.command("publish", {"channel": "agent:room", "data": {"text": "ordinary"}})
    assert (await watcher.push("pub"))["pub"]["data"] == {"text": "ordinary"}  # the first thing it got


async def test_after_final_too_long_and_too_many_are_refused(make_hub: HubFactory, raw_client: Any) -> None:
    hub = await make_hub(config())
    bot = await raw_client(hub, connect={"token": token("bot")})
    assert "error" not in await bot.command("subscribe", {"channel": "agent:room"})

    async def publish(data: Any) -> dict[str, Any]:
        return await bot.command("publish", {"channel": "agent:room", "data": data})

    assert "error" not in await publish(chunk("a", 0, "x", final=True))
    after = await publish(chunk("a", 1, "y"))
    assert after["error"]["code"] == 107 and "finished" in after["error"]["message"], after
    for stream in ("b", "c"):
        assert "error" not in await publish(chunk(stream, 0, "x"))
    third = await publish(chunk("d", 0, "x"))
    assert third["error"]["code"] == 106 and "2 streams are open" in third["error"]["message"], third
    for seq in range(1, 5):
        assert "error" not in await publish(chunk("b", seq, "y" * 450))
    too_long = await publish(chunk("b", 5, "y" * 450))
    assert too_long["error"]["code"] == 106 and "at most 2048 bytes" in too_long["error"]["message"]
    assert [m["stream"]["id"] for m in await history(hub, "agent:room")] == ["a"]


async def test_an_idle_stream_is_finished_as_it_is_marked_abandoned(
    make_hub: HubFactory, raw_client: Any
) -> None:
    hub = await make_hub(config(stream_idle_timeout=0.3))
    bot = await raw_client(hub, connect={"token": token("bot")})
    assert "error" not in await bot.command("subscribe", {"channel": "agent:room"})
    for seq, word in enumerate(["half ", "a reply"]):
        assert "error" not in await bot.command(
            "publish", {"channel": "agent:room", "data": chunk("m", seq, word)}
        )
    pubs = await pubs_until_final(bot, "m")
    assert pubs[-1]["data"]["stream"] == {"id": "m", "seq": 1, "from": 0, "final": True, "abandoned": True}
    assert view_of(pubs).texts == {"m": "half a reply"}
    (kept,) = await history(hub, "agent:room")
    assert kept["text"] == "half a reply" and kept["stream"]["abandoned"] is True
    late = await bot.command("publish", {"channel": "agent:room", "data": chunk("m", 2, "!")})
    assert late["error"]["code"] == 107, late


async def test_chunks_queued_in_one_tick_go_out_as_one_publication(
    make_hub: HubFactory, raw_client: Any
) -> None:
    hub = await make_hub(config())
    watcher = await raw_client(hub, connect={"token": token("watcher")})
    assert "error" not in await watcher.command("subscribe", {"channel": "agent:room"})
    node = hub.sb.node
    # Published in one step of the loop (the memory broker hands each over at once): one write.
    for seq in range(20):
        await node.publish("agent:room", chunk("m", seq, f"t{seq} "))
    await node.publish("agent:room", chunk("m", 20, "end", final=True))
    pubs = await pubs_until_final(watcher, "m")
    assert len(pubs) == 2, pubs  # the 20 chunks as one, then the whole message
    assert pubs[0]["data"]["stream"] == {"id": "m", "seq": 19, "from": 0}
    view = view_of(pubs)
    assert view.texts["m"] == "".join(f"t{n} " for n in range(20)) + "end" and view.finished == {"m"}


async def test_a_recovering_subscriber_gets_history_then_the_text_so_far(
    make_hub: HubFactory, raw_client: Any
) -> None:
    hub = await make_hub(config())
    bot = await raw_client(hub, connect={"token": token("bot")})
    sub = (await bot.command("subscribe", {"channel": "agent:room"}))["subscribe"]
    await hub.sb.publish("agent:room", {"text": "before"})
    await hub.sb.publish("agent:room", chunk("m", 0, "so "))
    await hub.sb.publish("agent:room", chunk("m", 1, "far"))
    again = await raw_client(hub, connect={"token": token("bot")})
    reply = await again.command(
        "subscribe",
        {"channel": "agent:room", "recover": True, "offset": sub.get("offset", 0), "epoch": sub["epoch"]},
    )
    assert reply["subscribe"]["recovered"] is True
    assert [p["data"] for p in reply["subscribe"]["publications"]] == [{"text": "before"}]
    snapshot = (await again.push("pub"))["pub"]
    assert snapshot["data"]["text"] == "so far" and "offset" not in snapshot
    await hub.sb.publish("agent:room", chunk("m", 2, ".", final=True))
    assert view_of([snapshot, *await pubs_until_final(again, "m")]).texts == {"m": "so far."}


_rooms = itertools.count()


@pytest.fixture
async def agent_hub(make_hub: HubFactory) -> RunningHub:
    return await make_hub(config())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(st.text(st.characters(codec="utf-8"), max_size=6), min_size=1, max_size=8),
    joins=st.lists(st.integers(0, 8), max_size=3),
    writes=st.lists(st.booleans(), min_size=8, max_size=8),
)
async def test_every_subscriber_reassembles_the_text_wherever_it_joins(
    agent_hub: RunningHub, raw_client: Any, texts: list[str], joins: list[int], writes: list[bool]
) -> None:
    """Random chunkings, random join points, and random writes (a chunk published in the same loop step
    as the one before it is coalesced with it): every subscriber ends with the whole text, without a gap,
    and history holds the message once."""
    channel = f"agent:p{next(_rooms)}"
    node = agent_hub.sb.node
    watchers = []
    for seq, text in enumerate(texts):
        for _ in range(joins.count(seq)):
            client = await raw_client(agent_hub, connect={"token": token("w")})
            assert "error" not in await client.command("subscribe", {"channel": channel})
            watchers.append(client)
        if writes[seq]:
            await asyncio.sleep(0)  # a loop step between two chunks: separate writes
        await node.publish(channel, chunk("s", seq, text, final=seq == len(texts) - 1))
    for client in watchers:
        view = view_of(await pubs_until_final(client, "s"))
        assert view.texts == {"s": "".join(texts)} and view.finished == {"s"}
        assert view.gaps == 0
        await client.ws.close()
    result = await node.broker.history(("", channel))
    assert [orjson.loads(p.data)["text"] for p in result.publications] == ["".join(texts)]


async def test_two_nodes_on_redis_a_late_subscriber_on_the_other_node_gets_the_text_so_far(
    make_hub: HubFactory, raw_client: Any, redis_server: RedisServer
) -> None:
    cfg = dataclasses.replace(config(), redis_urls=[redis_server.url], node_info_interval=0.5)
    one = await make_hub(dataclasses.replace(cfg, node_name="one"))
    two = await make_hub(dataclasses.replace(cfg, node_name="two"))
    async with asyncio.timeout(TIMEOUT):
        await two.sb.node.control.wait_until(lambda: "one" in two.sb.node.control.peers())  # type: ignore[attr-defined]
    bot = await raw_client(one, connect={"token": token("bot")})
    early = await raw_client(two, connect={"token": token("early")})
    for client in (bot, early):
        assert "error" not in await client.command("subscribe", {"channel": "agent:room"})
    for seq, word in enumerate(["one ", "two "]):
        assert "error" not in await bot.command(
            "publish", {"channel": "agent:room", "data": chunk("m", seq, word)}
        )
    late = await raw_client(two, connect={"token": token("late")})
    assert "error" not in await late.command("subscribe", {"channel": "agent:room"})
    first = (await late.push("pub"))["pub"]
    assert first["data"]["text"] == "one two " and first["data"]["stream"]["seq"] == 1
    assert "error" not in await bot.command(
        "publish", {"channel": "agent:room", "data": chunk("m", 2, "three", final=True)}
    )
    for client, before in ((early, []), (late, [first])):
        view = view_of(before + await pubs_until_final(client, "m"))
        assert view.texts == {"m": "one two three"} and (view.gaps, view.duplicates) == (0, 0)
    texts = [
        orjson.loads(p.data)["text"]
        for p in (await two.sb.node.broker.history(("", "agent:room"))).publications
    ]
    assert texts == ["one two three"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
stream_fields = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=70), json_values),
        "seq": st.one_of(st.integers(-2, 3), json_values),
        "final": json_values,
        "from": json_values,
        "abandoned": json_values,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    chunks=st.lists(
        st.fixed_dictionaries(
            {"stream": st.one_of(stream_fields, json_values)}, optional={"text": json_values}
        ),
        min_size=1,
        max_size=6,
    )
)
async def test_garbage_stream_fields_are_refused_or_taken_never_a_crash(
    agent_hub: RunningHub, chunks: list[dict[str, Any]]
) -> None:
    """Anything in ``stream`` and ``text``: each publish is accepted or refused with 106/107 (the
    embedding API: ValueError or ClientError), and history holds only finished messages, each whole."""
    from hub.codes import ClientError

    channel = f"agent:g{next(_rooms)}"
    for data in chunks:
        try:
            await agent_hub.sb.publish(channel, data)
        except ValueError as exc:
            assert str(exc).startswith("bad request"), exc
        except ClientError as exc:
            assert exc.code == 106, exc
    result = await agent_hub.sb.node.broker.history(("", channel))
    for pub in result.publications:
        fields = orjson.loads(pub.data)["stream"]
        assert fields["from"] == 0 and fields["final"] is True


AGENT_TABLE = """
[[namespaces]]
name = "agent"
streams = true
history_size = 100
history_ttl = 300
force_recovery = true
allow_subscribe_for_client = true
allow_publish_for_subscriber = true
"""


async def test_switchboard_serve_nodes_on_redis_give_a_late_subscriber_the_text_so_far(
    make_nodes: Any, raw_client: Any, redis_server: RedisServer
) -> None:
    """The same across two ``switchboard serve`` processes (the config file's ``streams`` option, the
    control channel between processes): a subscriber of the second node that joins mid-stream gets the
    text so far from the first, then the rest; history holds the message once."""
    one, two = await make_nodes(2, redis=[redis_server.url], tables=AGENT_TABLE)

    async def sees_both() -> bool:
        reply = await two.api("info")
        return len(reply.get("result", {}).get("nodes", [])) == 2

    await eventually(sees_both)
    bot = await raw_client(one, connect={"token": token("bot")})
    assert "error" not in await bot.command("subscribe", {"channel": "agent:room"})
    for seq, word in enumerate(["so ", "far "]):
        assert "error" not in await bot.command(
            "publish", {"channel": "agent:room", "data": chunk("m", seq, word)}
        )
    late = await raw_client(two, connect={"token": token("late")})
    assert "error" not in await late.command("subscribe", {"channel": "agent:room"})
    first = (await late.push("pub"))["pub"]
    assert first["data"]["text"] == "so far " and first["data"]["stream"]["from"] == 0
    reply = await bot.command(
        "publish", {"channel": "agent:room", "data": chunk("m", 2, "so good", final=True)}
    )
    assert "error" not in reply, reply
    view = view_of([first, *await pubs_until_final(late, "m")])
    assert view.texts == {"m": "so far so good"} and (view.gaps, view.duplicates) == (0, 0)
    kept = await two.api("history", {"channel": "agent:room", "limit": 10})
    assert [p["data"]["text"] for p in kept["result"]["publications"]] == ["so far so good"]


async def test_a_node_that_stops_finishes_its_open_streams_as_they_are(make_hub: HubFactory) -> None:
    hub = await make_hub(config())
    node = hub.sb.node
    await node.publish("agent:room", chunk("m", 0, "cut "))
    await node.publish("agent:room", chunk("m", 1, "short"))
    assert await history(hub, "agent:room") == []
    await node.stop()
    (kept,) = await history(hub, "agent:room")  # the memory broker's history outlives its close
    assert kept["text"] == "cut short" and kept["stream"]["abandoned"] is True
