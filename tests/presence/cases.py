"""The behaviour every PresenceManager shares, written once and run by each backend's tests.

A case gets ``writer`` and ``reader``: two managers that must share one presence (two nodes over one Redis),
or the same manager twice (memory). Writes go through ``writer``, reads through ``reader``, so every case also
checks that one node sees what another recorded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from hypothesis import strategies as st

from channels.names import ChannelKey
from channels.publication import ClientInfo
from presence.presence import PresenceManager, PresenceStats

ROOM: ChannelKey = ("", "chat:room")
ROOM_B: ChannelKey = ("tenant-b", "chat:room")

Case = Callable[[PresenceManager, PresenceManager], Awaitable[None]]


async def add_get_remove(writer: PresenceManager, reader: PresenceManager) -> None:
    a1 = ClientInfo("alice", "c1", b'{"n":1}')
    a2 = ClientInfo("alice", "c2")
    b1 = ClientInfo("bob", "c3", None, b"\x00\xffbinary")
    for info in (a1, a2, b1):
        await writer.add(ROOM, info)
    assert await reader.get(ROOM) == {"c1": a1, "c2": a2, "c3": b1}
    assert await reader.stats(ROOM) == PresenceStats(num_clients=3, num_users=2)
    await writer.remove(ROOM, "c1")
    assert await reader.get(ROOM) == {"c2": a2, "c3": b1}
    assert await reader.stats(ROOM) == PresenceStats(2, 2)
    await writer.remove(ROOM, "c2")
    await writer.remove(ROOM, "c3")
    assert await reader.get(ROOM) == {}
    assert await reader.stats(ROOM) == PresenceStats(0, 0)


async def add_again_replaces_info(writer: PresenceManager, reader: PresenceManager) -> None:
    await writer.add(ROOM, ClientInfo("alice", "c1", None, b"1"))
    await writer.add(ROOM, ClientInfo("alice", "c1", None, b"2"))
    assert (await reader.get(ROOM))["c1"].chan_info == b"2"
    assert (await reader.stats(ROOM)).num_clients == 1


async def remove_unknown_is_a_no_op(writer: PresenceManager, reader: PresenceManager) -> None:
    await writer.remove(ROOM, "nobody")
    await writer.add(ROOM, ClientInfo("alice", "c1"))
    await writer.remove(ROOM, "nobody")
    assert list(await reader.get(ROOM)) == ["c1"]


async def tenants_and_channels_are_separate(writer: PresenceManager, reader: PresenceManager) -> None:
    await writer.add(ROOM, ClientInfo("alice", "c1"))
    await writer.add(ROOM_B, ClientInfo("mallory", "c9"))
    await writer.add(("", "chat:other"), ClientInfo("bob", "c2"))
    assert list(await reader.get(ROOM)) == ["c1"]
    assert list(await reader.get(ROOM_B)) == ["c9"]
    await writer.remove(ROOM_B, "c1")
    assert list(await reader.get(ROOM)) == ["c1"]


async def awkward_names_stay_apart(writer: PresenceManager, reader: PresenceManager) -> None:
    """Names that could collide once escaped or joined: tenant/name boundaries, hash-tag braces, '%'."""
    keys: list[ChannelKey] = [
        ("a:b", "c"),
        ("a", "b:c"),
        ("", "a}b"),
        ("", "a{b}"),
        ("", "a%7Db"),
        ("x}", "{y"),
        ("", "ünï cødé"),
    ]
    for i, key in enumerate(keys):
        await writer.add(key, ClientInfo(f"user{i}", f"c{i}"))
    for i, key in enumerate(keys):
        assert list(await reader.get(key)) == [f"c{i}"], key
        assert await reader.stats(key) == PresenceStats(1, 1)


async def get_returns_a_copy(writer: PresenceManager, reader: PresenceManager) -> None:
    await writer.add(ROOM, ClientInfo("alice", "c1"))
    (await reader.get(ROOM)).clear()
    assert list(await reader.get(ROOM)) == ["c1"]


async def refresh_keeps_entries(writer: PresenceManager, reader: PresenceManager) -> None:
    """Refreshing what a node holds changes nothing anyone can see (only when entries expire)."""
    await writer.refresh([])
    a, b, c = ClientInfo("alice", "c1", b"{}"), ClientInfo("bob", "c2"), ClientInfo("carol", "c3")
    for key, info in ((ROOM, a), (ROOM, b), (ROOM_B, c)):
        await writer.add(key, info)
    await writer.refresh([(ROOM, a), (ROOM, b), (ROOM_B, c)])
    assert await reader.get(ROOM) == {"c1": a, "c2": b}
    assert await reader.get(ROOM_B) == {"c3": c}
    assert await reader.stats(ROOM) == PresenceStats(2, 2)


CASES: list[Case] = [
    add_get_remove,
    add_again_replaces_info,
    remove_unknown_is_a_no_op,
    tenants_and_channels_are_separate,
    awkward_names_stay_apart,
    get_returns_a_copy,
    refresh_keeps_entries,
]

# -- the model property ----------------------------------------------------------------------------------

CLIENTS = ["c1", "c2", "c3", "c4"]
"""c1, c2 live on node 0, c3, c4 on node 1: a client is added, removed and refreshed by its own node."""

Op = tuple[str, ChannelKey, str, str]
"""(add | remove | refresh, channel, client, user); refresh re-adds everything the client's node holds."""

ops_strategy = st.lists(
    st.tuples(
        st.sampled_from(["add", "add", "remove", "refresh"]),
        st.sampled_from([ROOM, ROOM_B]),
        st.sampled_from(CLIENTS),
        st.sampled_from(["alice", "bob"]),
    ),
    max_size=25,
)


async def check_against_model(nodes: Sequence[PresenceManager], ops: list[Op]) -> None:
    """Run ``ops`` (each on the node owning its client) and compare every channel with a model dict after
    each step, read through every node."""
    model: dict[ChannelKey, dict[str, str]] = {}
    held: list[dict[tuple[ChannelKey, str], ClientInfo]] = [{}, {}]
    """What each node holds: what it refreshes."""
    for op, key, client, user in ops:
        owner = CLIENTS.index(client) // 2
        node = nodes[owner % len(nodes)]
        if op == "add":
            info = ClientInfo(user, client)
            await node.add(key, info)
            held[owner][(key, client)] = info
            model.setdefault(key, {})[client] = user
        elif op == "remove":
            await node.remove(key, client)
            held[owner].pop((key, client), None)
            model.get(key, {}).pop(client, None)
        else:
            await node.refresh([(k, info) for (k, _), info in held[owner].items()])
        for reader in nodes:
            for k in (ROOM, ROOM_B):
                want = model.get(k, {})
                members = await reader.get(k)
                assert {c: i.user for c, i in members.items()} == want
                assert all(c == i.client for c, i in members.items())
                assert await reader.stats(k) == PresenceStats(len(want), len(set(want.values())))
