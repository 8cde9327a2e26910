"""One node on Redis (in-process, real redis-server): what its clients get while Redis is away and after it
comes back. Many-node behaviour is in test_many_nodes*.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from channels.redis_shards import route_of
from presence.presence_redis import RedisPresence
from tests.conftest import TIMEOUT, HubFactory, RunningHub, token
from tests.redis_proxy import Proxy
from tests.redis_servers import RedisServer


async def _hub(make_hub: HubFactory, redis: RedisServer) -> RunningHub:
    return await make_hub(redis_urls=[redis.url], node_name="solo", redis_connect_timeout=1.0)


async def test_with_redis_away_commands_fail_honestly_and_the_node_stays_up(
    make_hub: HubFactory, raw_client: Any, redis_server: RedisServer
) -> None:
    hub = await _hub(make_hub, redis_server)
    alice = await raw_client(hub, connect={"token": token("alice")})
    assert "error" not in await alice.command("subscribe", {"channel": "chat:room"})
    ok = await alice.command("publish", {"channel": "chat:room", "data": {"n": 1}})
    assert ok["publish"] == {}, ok
    assert (await alice.push("pub"))["pub"]["data"] == {"n": 1}

    redis_server.stop()
    refused = await alice.command("publish", {"channel": "chat:room", "data": {"n": 2}})
    assert refused["error"]["code"] == 100 and refused["error"].get("temporary") is True, refused
    history = await alice.command("history", {"channel": "chat:room", "limit": 10})
    assert history["error"]["code"] == 100, history
    presence = await alice.command("presence", {"channel": "chat:room"})
    assert presence["error"]["code"] == 100, presence
    # Leaving works locally even so (the presence entry expires by itself).
    assert (await alice.command("unsubscribe", {"channel": "chat:room"}))["unsubscribe"] == {}
    # Other clients of the node are not affected: a new connection still connects.
    bob = await raw_client(hub, connect={"token": token("bob")})
    assert (await bob.command("rpc", {"method": "none"}))["error"]["code"] in (104, 108)

    redis_server.start()  # empty: Redis lost everything
    async with asyncio.timeout(TIMEOUT * 2):
        while True:  # the node reconnects with backoff; poll the client-visible outcome
            again = await alice.command("subscribe", {"channel": "chat:room"})
            if "error" not in again:
                break
            assert again["error"]["code"] == 100
            await asyncio.sleep(0.1)
    ok = await alice.command("publish", {"channel": "chat:room", "data": {"n": 3}})
    assert "error" not in ok, ok
    pub = await alice.push("pub")
    assert pub["pub"]["data"] == {"n": 3} and pub["pub"]["offset"] == 1  # a new stream


async def test_a_subscriber_whose_history_was_lost_is_told_recovered_false(
    make_hub: HubFactory, raw_client: Any, redis_server: RedisServer
) -> None:
    hub = await _hub(make_hub, redis_server)
    alice = await raw_client(hub, connect={"token": token("alice")})
    sub = (await alice.command("subscribe", {"channel": "chat:room"}))["subscribe"]
    for n in range(3):
        assert "error" not in await alice.command("publish", {"channel": "chat:room", "data": {"n": n}})
    offsets = [(await alice.push("pub"))["pub"]["offset"] for _ in range(3)]
    assert offsets == [1, 2, 3]
    redis_server.stop()
    redis_server.start()
    # The node's pub/sub comes back; its check finds another epoch: the positioned subscriber must
    # resubscribe (2500) and then learns that what it missed cannot be recovered.
    push = await alice.push("unsubscribe")
    assert push["unsubscribe"]["code"] == 2500
    again = await alice.command(
        "subscribe", {"channel": "chat:room", "recover": True, "offset": 3, "epoch": sub["epoch"]}
    )
    assert again["subscribe"]["recovered"] is False
    assert again["subscribe"]["epoch"] != sub["epoch"]


async def test_a_new_stream_is_never_taken_for_the_old_one(
    make_hub: HubFactory, raw_client: Any, redis_server: RedisServer
) -> None:
    """(Review R1-3.) Redis loses its data (FLUSHALL) while the node's connections stay up: the new
    stream's first publication has the offset after the node's (0 -> 1), only its epoch tells it is another
    stream. The positioned subscriber must resubscribe (2500) before it gets it, not take it silently.

    A stream at offset 0 that exists is one an older version created by reading it (a rolling upgrade
    meets them for their meta ttl); reading creates none any more, and an empty stream that does not exist
    loses nothing to a FLUSHALL (its first publication keeps the epoch its readers were told)."""
    hub = await _hub(make_hub, redis_server)
    meta = "sb:meta:{" + route_of("", "chat:room") + "}"
    assert redis_server.command("HSET", meta, "e", "0ld0ep0c", "s", "0") == b":2\r\n"
    alice = await raw_client(hub, connect={"token": token("alice")})
    sub = (await alice.command("subscribe", {"channel": "chat:room"}))["subscribe"]
    assert sub.get("offset", 0) == 0 and sub["epoch"] == "0ld0ep0c"
    assert redis_server.command("FLUSHALL").startswith(b"+OK")
    ok = await alice.command("publish", {"channel": "chat:room", "data": {"n": 1}})
    assert "error" not in ok, ok
    push = await alice.push()
    assert push.get("unsubscribe", {}).get("code") == 2500, push
    again = await alice.command(
        "subscribe", {"channel": "chat:room", "recover": True, "offset": 0, "epoch": sub["epoch"]}
    )
    assert again["subscribe"]["recovered"] is False
    assert again["subscribe"]["epoch"] != sub["epoch"]


async def test_an_empty_stream_flushed_away_loses_nothing(
    make_hub: HubFactory, raw_client: Any, redis_server: RedisServer
) -> None:
    """Reading a channel nobody published on keeps nothing in Redis, so a FLUSHALL takes nothing from it:
    the first publication keeps the epoch the subscriber was told and reaches it as the next offset."""
    hub = await _hub(make_hub, redis_server)
    alice = await raw_client(hub, connect={"token": token("alice")})
    sub = (await alice.command("subscribe", {"channel": "chat:room"}))["subscribe"]
    assert sub.get("offset", 0) == 0 and sub["epoch"]
    assert b"sb:meta:" not in redis_server.command("KEYS", "sb:*")
    assert redis_server.command("FLUSHALL").startswith(b"+OK")
    assert "error" not in await alice.command("publish", {"channel": "chat:room", "data": {"n": 1}})
    assert (await alice.push())["pub"]["offset"] == 1
    bob = await raw_client(hub, connect={"token": token("bob")})
    again = await bob.command(
        "subscribe", {"channel": "chat:room", "recover": True, "offset": 0, "epoch": sub["epoch"]}
    )
    assert again["subscribe"]["recovered"] is True
    assert [p["offset"] for p in again["subscribe"]["publications"]] == [1]


async def test_a_lagging_pubsub_stream_gives_no_publication_twice(
    make_hub: HubFactory, raw_client: Any, redis_server: RedisServer
) -> None:
    """(From review R1.) The history read goes over the command connection and can be ahead of the node's
    pub/sub stream: publications up to the read's top that arrive after it must not reach the new
    subscriber again (its reply or its recovery already accounted for them)."""
    proxy = Proxy(redis_server.port)
    await proxy.start()
    try:
        hub = await make_hub(redis_urls=[proxy.url], node_name="a", redis_connect_timeout=5.0)
        alice = await raw_client(hub, connect={"token": token("alice")})
        bob = await raw_client(hub, connect={"token": token("bob")})
        carol = await raw_client(hub, connect={"token": token("carol")})
        assert "error" not in await alice.command("subscribe", {"channel": "chat:room"})
        first = (await bob.command("subscribe", {"channel": "chat:room"}))["subscribe"]
        assert "error" not in await alice.command("publish", {"channel": "chat:room", "data": {"n": 1}})
        assert (await bob.push("pub"))["pub"]["offset"] == 1
        await bob.command("unsubscribe", {"channel": "chat:room"})

        proxy.hold()  # the node's pub/sub stream lags (what Redis sent is queued, as in a backlog)
        for n in (2, 3):
            assert "error" not in await alice.command("publish", {"channel": "chat:room", "data": {"n": n}})
        asyncio.get_running_loop().call_later(0.3, proxy.release)  # the backlog drains soon
        again = (
            await bob.command(
                "subscribe", {"channel": "chat:room", "recover": True, "offset": 1, "epoch": first["epoch"]}
            )
        )["subscribe"]
        recovered = [p["offset"] for p in again.get("publications", [])]
        assert again["recovered"] is True and recovered == [2, 3]
        fresh = (await carol.command("subscribe", {"channel": "chat:room"}))["subscribe"]
        assert fresh["offset"] == 3
        assert "error" not in await alice.command("publish", {"channel": "chat:room", "data": {"n": 4}})
        assert [(await bob.push("pub"))["pub"]["offset"]] == [4]  # not 2 or 3 again
        assert [(await carol.push("pub"))["pub"]["offset"]] == [4]
        assert [(await alice.push("pub"))["pub"]["offset"] for _ in range(4)] == [1, 2, 3, 4]
    finally:
        await proxy.close()


async def test_a_sessions_publishes_are_pipelined_in_order(
    make_hub: HubFactory, raw_client: Any, redis_server: RedisServer
) -> None:
    """Issue 15: a session awaited each publish script before reading its next command, so one publisher
    got one publication per Redis round trip and nothing coalesced. Its publishes now go to Redis back to
    back while their replies are still on the way: Redis runs them in command order (offsets follow the
    commands) and the replies come back in command order."""
    proxy = Proxy(redis_server.port)
    await proxy.start()
    try:
        hub = await make_hub(redis_urls=[proxy.url], node_name="a", redis_connect_timeout=5.0)
        alice = await raw_client(hub, connect={"token": token("alice")})
        bob = await raw_client(hub, connect={"token": token("bob")})
        for client in (alice, bob):
            assert "error" not in await client.command("subscribe", {"channel": "chat:room"})
        proxy.hold_commands()  # Redis's answers to the node's commands wait in the proxy; pub/sub flows
        for n in range(20):
            cmd = {"id": 100 + n, "publish": {"channel": "chat:room", "data": {"n": n}}}
            await alice.send_raw(orjson.dumps(cmd).decode())
        got = [(await bob.push("pub"))["pub"] for _ in range(20)]  # all ran while none was answered
        assert [(p["data"]["n"], p["offset"]) for p in got] == [(n, n + 1) for n in range(20)]
        proxy.release_commands()
        await alice.reply(119)
        answered = [m["id"] for m in alice._inbox if "id" in m]
        assert answered == list(range(100, 119))  # in command order, the last one taken above
    finally:
        await proxy.close()


async def test_a_presence_refresh_that_cannot_reach_redis_is_a_warning_and_the_next_one_renews(
    make_hub: HubFactory, raw_client: Any, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15: in a connect storm a node's periodic presence refresh timed out and was logged as an ERROR
    with a traceback. Redis now stalls past the refresh's budget: the node logs one warning saying what was
    not refreshed and what happens to it, no error; a subscribe meanwhile is refused as temporary (100, the
    SDKs retry it); once Redis answers, the next refresh renews the entry and presence is served as
    before."""
    caplog.set_level(logging.INFO, logger="switchboard")
    hub = await make_hub(redis_urls=[redis_server.url], node_name="solo", redis_connect_timeout=0.3)
    node = hub.sb.node
    alice = await raw_client(hub, connect={"token": token("alice")})
    bob = await raw_client(hub, connect={"token": token("bob")})
    assert "error" not in await alice.command("subscribe", {"channel": "chat:room"})
    members = (await alice.command("presence", {"channel": "chat:room"}))["presence"]["presence"]
    (client_id,) = members
    presence = node.presence
    assert isinstance(presence, RedisPresence)
    presence.refresh_budget = 0.3  # a node's is presence_ttl / 3
    zkey = presence.shards.key("presence_exp", route_of("", "chat:room"))
    r = aioredis.Redis.from_url(redis_server.url)

    async def refresh() -> None:
        async with asyncio.timeout(TIMEOUT):
            while node._presence_refresh is not None and not node._presence_refresh.done():  # noqa: SLF001
                await node._presence_refresh  # noqa: SLF001 - the one the node began at its start
            node._refresh_presence()  # noqa: SLF001 - what the session clock calls every update interval
            assert node._presence_refresh is not None  # noqa: SLF001
            await node._presence_refresh  # noqa: SLF001

    try:
        await refresh()
        before = await r.zscore(zkey, client_id)
        assert before is not None
        assert redis_server.command("CLIENT", "PAUSE", str(int(TIMEOUT * 4000)), "WRITE").startswith(b"+OK")
        try:
            await refresh()
            # A subscribe meanwhile fails as temporary (the SDKs subscribe again, with backoff)
            refused = await bob.command("subscribe", {"channel": "chat:room"})
            assert refused["error"]["code"] == 100 and refused["error"].get("temporary") is True, refused
        finally:
            assert redis_server.command("CLIENT", "UNPAUSE").startswith(b"+OK")
        assert "error" not in await bob.command("subscribe", {"channel": "chat:room"})
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.name == "switchboard.node" and r.levelno == logging.WARNING
        ]
        assert len(warnings) == 1 and "1 of 1 entries not refreshed" in warnings[0], warnings
        assert "expire 60 s (presence_ttl) after their last refresh" in warnings[0]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        await refresh()
        after = await r.zscore(zkey, client_id)
        assert after is not None and after > before
        members = (await alice.command("presence", {"channel": "chat:room"}))["presence"]["presence"]
        assert members[client_id]["user"] == "alice" and len(members) == 2  # and bob
    finally:
        await r.aclose()
