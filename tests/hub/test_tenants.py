"""Tenants: a channel's identity is (tenant, name), the tenant comes from the connection token only.

Tokens with ``tenant`` "a" and "b", and clients without a tenant (the default tenant ""), use the same channel
names. Nothing of one tenant (publications, join/leave, presence, presence stats, history, recovery) may
reach another.

"Nothing arrived" is checked without sleeping: after the foreign publications each tenant publishes a marker;
every push a client got before its marker is checked, since a leaked publication, fanned out before the
marker was published, would have been queued before it on the same connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.conftest as conftest
from channels.broker_memory import MemoryBroker
from hub.client import Client
from hub.hooks import Hooks
from hub.node import Node
from presence.presence_memory import MemoryPresence
from tests.conftest import TIMEOUT, RawClient, RunningHub, token

ROOM = "room"


async def connected(raw_client: Any, hub: RunningHub, params: dict[str, Any]) -> tuple[RawClient, str]:
    c = await raw_client(hub)
    reply = await c.command("connect", params)
    assert "connect" in reply, reply
    return c, reply["connect"]["client"]


async def pushes_until_marker(c: RawClient, channel: str, marker: str) -> list[dict[str, Any]]:
    """Every push of ``channel`` before the publication ``{"marker": marker}`` (pings are answered)."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT):
        while True:
            push = await c.push()
            if push.get("channel") != channel:
                continue
            if "pub" in push and push["pub"]["data"] == {"marker": marker}:
                return got
            got.append(push)


async def test_tenants_sharing_a_channel_name_see_nothing_of_each_other(hub, raw_client):
    params = {
        "a": [{"token": token("alice", tenant="a")}, {"token": token("anna", tenant="a")}],
        "b": [{"token": token("bob", tenant="b")}, {"token": token("alice", tenant="b")}],
        "": [{}, {"token": token("alice")}],  # anonymous, and a token without a tenant claim
    }
    clients: dict[str, list[tuple[RawClient, str]]] = {}
    for tenant, plist in params.items():
        clients[tenant] = [await connected(raw_client, hub, p) for p in plist]
    ids = {tenant: {cid for _, cid in pairs} for tenant, pairs in clients.items()}
    for pairs in clients.values():
        for c, _ in pairs:
            reply = await c.command("subscribe", {"channel": ROOM})
            assert "subscribe" in reply, reply

    # Each tenant publishes, from a client and from the server side; one client of "a" comes and goes.
    for tenant, pairs in clients.items():
        c, _ = pairs[0]
        for n in range(3):
            reply = await c.command("publish", {"channel": ROOM, "data": {"tenant": tenant, "n": n}})
            assert reply.get("publish") == {}, reply
        await hub.sb.publish(ROOM, {"tenant": tenant, "n": "server"}, tenant=tenant)
    a2, _ = clients["a"][1]
    assert (await a2.command("unsubscribe", {"channel": ROOM}))["unsubscribe"] == {}
    assert "subscribe" in await a2.command("subscribe", {"channel": ROOM})
    for tenant, pairs in clients.items():
        c, _ = pairs[1]
        assert (await c.command("publish", {"channel": ROOM, "data": {"marker": tenant}})).get(
            "publish"
        ) == {}

    # Publications, joins and leaves: only of the client's own tenant.
    for tenant, pairs in clients.items():
        want = [{"tenant": tenant, "n": n} for n in (0, 1, 2, "server")]
        for c, _ in pairs:
            seen = await pushes_until_marker(c, ROOM, tenant)
            assert [p["pub"]["data"] for p in seen if "pub" in p] == want, (tenant, seen)
            for p in seen:
                info = p["pub"].get("info") if "pub" in p else p.get("join", p.get("leave", {})).get("info")
                if info is not None:
                    assert info["client"] in ids[tenant], (tenant, p)
            leaves = [p["leave"]["info"]["client"] for p in seen if "leave" in p]
            # a2's leave (and join again) went to tenant "a" only.
            assert leaves == ([clients["a"][1][1]] if tenant == "a" and c is not a2 else []), (tenant, seen)

    # Presence, presence stats and history of the same name differ per tenant.
    for tenant, pairs in clients.items():
        for c, _ in pairs:
            presence = (await c.command("presence", {"channel": ROOM}))["presence"]["presence"]
            assert set(presence) == ids[tenant], tenant
            stats = (await c.command("presence_stats", {"channel": ROOM}))["presence_stats"]
            assert stats == {"num_clients": 2, "num_users": 2}, (tenant, stats)
            history = (await c.command("history", {"channel": ROOM, "limit": -1}))["history"]
            datas = [p["data"] for p in history.get("publications", [])]
            want = [{"tenant": tenant, "n": n} for n in (0, 1, 2, "server")] + [{"marker": tenant}]
            assert datas == want, (tenant, datas)


async def test_recovery_never_crosses_tenants(hub, raw_client):
    a, _ = await connected(raw_client, hub, {"token": token("alice", tenant="a")})
    b, _ = await connected(raw_client, hub, {"token": token("bob", tenant="b")})
    reply = await a.command("subscribe", {"channel": "log"})
    epoch = reply["subscribe"]["epoch"]
    for n in range(3):
        await a.command("publish", {"channel": "log", "data": {"secret": n}})
    # b presents a's stream position: its own stream of the same name is another stream.
    reply = await b.command("subscribe", {"channel": "log", "recover": True, "offset": 0, "epoch": epoch})
    result = reply["subscribe"]
    assert not result.get("publications"), result
    assert result.get("recovered") is not True or result["epoch"] != epoch
    history = (await b.command("history", {"channel": "log", "limit": -1}))["history"]
    assert not history.get("publications"), history


async def test_a_refresh_cannot_move_a_connection_to_another_tenant(hub, raw_client):
    a, _ = await connected(raw_client, hub, {"token": token("alice", tenant="a", ttl=3600)})
    b, _ = await connected(raw_client, hub, {"token": token("alice", tenant="b", ttl=3600)})
    assert "subscribe" in await b.command("subscribe", {"channel": ROOM})
    await a.send_raw(
        orjson.dumps({"id": 50, "refresh": {"token": token("alice", tenant="b", ttl=3600)}}).decode()
    )
    code, _ = await a.closed()
    assert code == 3500
    # The refused refresh left b's channel alone: b's only member is b.
    members = (await b.command("presence", {"channel": ROOM}))["presence"]["presence"]
    assert len(members) == 1


async def test_connect_fields_cannot_choose_a_tenant(hub, raw_client):
    sneaky, sneaky_id = await connected(
        raw_client, hub, {"token": token("mallory"), "data": {"tenant": "a"}, "name": "a", "version": "a"}
    )
    victim, victim_id = await connected(raw_client, hub, {"token": token("alice", tenant="a")})
    assert "subscribe" in await victim.command("subscribe", {"channel": ROOM})
    assert "subscribe" in await sneaky.command("subscribe", {"channel": ROOM})
    await victim.command("publish", {"channel": ROOM, "data": {"secret": 1}})
    await sneaky.command("publish", {"channel": ROOM, "data": {"marker": ""}})
    assert [p for p in await pushes_until_marker(sneaky, ROOM, "") if "pub" in p] == []
    members = (await sneaky.command("presence", {"channel": ROOM}))["presence"]["presence"]
    assert set(members) == {sneaky_id}
    assert victim_id not in members


# ---------------------------------------------------------------- property: random operations, no leak
#
# Sans network: sessions of a real Node fed frames through ``handle_frame``, with in-memory transports.

TENANTS = ("a", "b", "")
CHANNELS = ("room", "other", "nohist:room")
PER_TENANT = 2


class MemoryTransport:
    name = "websocket"

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    def write_messages(self, messages: list[bytes]) -> int:
        self.messages.extend(orjson.loads(m) for m in messages)
        return 0

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


@dataclass
class Session:
    tenant: str
    client: Client
    transport: MemoryTransport
    subs: set[str] = field(default_factory=set)
    next_id: int = 1

    async def send(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        cmd_id = self.next_id
        await self.client.handle_frame(orjson.dumps({"id": cmd_id, method: params}))
        await asyncio.sleep(0)  # the flush
        return next(m for m in self.transport.messages if m.get("id") == cmd_id)


ops_strategy = st.lists(
    st.tuples(
        st.sampled_from(["sub", "unsub", "pub", "server_pub"]),
        st.integers(0, len(TENANTS) * PER_TENANT - 1),
        st.sampled_from(CHANNELS),
    ),
    max_size=40,
)


async def run_scenario(ops: list[tuple[str, int, str]]) -> None:
    cfg = conftest.test_config()
    node = Node(cfg, MemoryBroker(), MemoryPresence(), Hooks())
    await node.start()
    sessions: list[Session] = []
    try:
        for tenant in TENANTS:
            for i in range(PER_TENANT):
                transport = MemoryTransport()
                client = node.new_session(transport, {})
                s = Session(tenant, client, transport)
                # The same user ids in every tenant: identity is (tenant, user).
                reply = await s.send("connect", {"token": conftest.token(f"u{i}", tenant=tenant or None)})
                assert "connect" in reply, reply
                sessions.append(s)
        expected: dict[int, list[tuple[str, Any]]] = {k: [] for k in range(len(sessions))}
        published: dict[tuple[str, str], list[Any]] = {}
        for seq, (op, who, channel) in enumerate(ops):
            s = sessions[who]
            if op == "sub":
                reply = await s.send("subscribe", {"channel": channel})
                assert ("subscribe" in reply) == (channel not in s.subs), reply
                s.subs.add(channel)
                continue
            if op == "unsub":
                assert "unsubscribe" in await s.send("unsubscribe", {"channel": channel})
                s.subs.discard(channel)
                continue
            data = {"seq": seq, "tenant": s.tenant}
            if op == "pub":
                assert (await s.send("publish", {"channel": channel, "data": data})).get("publish") == {}
            else:
                await node.publish(channel, data, tenant=s.tenant)
            published.setdefault((s.tenant, channel), []).append(data)
            for k, other in enumerate(sessions):
                if other.tenant == s.tenant and channel in other.subs:
                    expected[k].append((channel, data))
        await asyncio.sleep(0)
        ids = {t: {x.client.id for x in sessions if x.tenant == t} for t in TENANTS}
        for k, s in enumerate(sessions):
            assert s.transport.closed is None
            pushes = [m["push"] for m in s.transport.messages if "push" in m]
            got = [(p["channel"], p["pub"]["data"]) for p in pushes if "pub" in p]
            assert got == expected[k], (s.tenant, got, expected[k])
            for p in pushes:
                for kind in ("join", "leave"):
                    if kind in p:
                        assert p[kind]["info"]["client"] in ids[s.tenant], (s.tenant, p)
            for channel in ("room", "other"):  # namespaces with presence and history
                members = (await s.send("presence", {"channel": channel}))["presence"]["presence"]
                want = {x.client.id for x in sessions if x.tenant == s.tenant and channel in x.subs}
                assert set(members) == want, (s.tenant, channel)
                history = (await s.send("history", {"channel": channel, "limit": -1}))["history"]
                datas = [p["data"] for p in history.get("publications", [])]
                assert datas == published.get((s.tenant, channel), []), (s.tenant, channel, datas)
    finally:
        for s in sessions:
            await node.end_session(s.client)
        await node.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops_strategy)
def test_random_operations_never_deliver_across_tenants(ops: list[tuple[str, int, str]]) -> None:
    asyncio.run(run_scenario(ops))
