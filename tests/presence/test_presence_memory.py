"""In-process presence."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from channels.names import ChannelKey
from channels.publication import ClientInfo
from presence.presence import PresenceStats
from presence.presence_memory import MemoryPresence

ROOM: ChannelKey = ("", "chat:room")
ROOM_B: ChannelKey = ("tenant-b", "chat:room")


async def test_add_get_remove() -> None:
    p = MemoryPresence()
    a1 = ClientInfo("alice", "c1", b'{"n":1}')
    a2 = ClientInfo("alice", "c2")
    b1 = ClientInfo("bob", "c3")
    for info in (a1, a2, b1):
        await p.add(ROOM, info)
    assert await p.get(ROOM) == {"c1": a1, "c2": a2, "c3": b1}
    assert await p.stats(ROOM) == PresenceStats(num_clients=3, num_users=2)
    await p.remove(ROOM, "c1")
    assert await p.get(ROOM) == {"c2": a2, "c3": b1}
    assert await p.stats(ROOM) == PresenceStats(2, 2)
    await p.remove(ROOM, "c2")
    await p.remove(ROOM, "c3")
    assert await p.get(ROOM) == {}
    assert await p.stats(ROOM) == PresenceStats(0, 0)
    assert p._channels == {}  # noqa: SLF001 - empty channels must not pile up


async def test_add_again_refreshes_info() -> None:
    p = MemoryPresence()
    await p.add(ROOM, ClientInfo("alice", "c1", None, b"1"))
    await p.add(ROOM, ClientInfo("alice", "c1", None, b"2"))
    assert (await p.get(ROOM))["c1"].chan_info == b"2"
    assert (await p.stats(ROOM)).num_clients == 1


async def test_remove_unknown_is_a_no_op() -> None:
    p = MemoryPresence()
    await p.remove(ROOM, "nobody")
    await p.add(ROOM, ClientInfo("alice", "c1"))
    await p.remove(ROOM, "nobody")
    assert list(await p.get(ROOM)) == ["c1"]


async def test_tenants_and_channels_are_separate() -> None:
    p = MemoryPresence()
    await p.add(ROOM, ClientInfo("alice", "c1"))
    await p.add(ROOM_B, ClientInfo("mallory", "c9"))
    await p.add(("", "chat:other"), ClientInfo("bob", "c2"))
    assert list(await p.get(ROOM)) == ["c1"]
    assert list(await p.get(ROOM_B)) == ["c9"]
    await p.remove(ROOM_B, "c1")
    assert list(await p.get(ROOM)) == ["c1"]


async def test_get_returns_a_copy() -> None:
    p = MemoryPresence()
    await p.add(ROOM, ClientInfo("alice", "c1"))
    (await p.get(ROOM)).clear()
    assert list(await p.get(ROOM)) == ["c1"]


async def test_close_forgets_everything() -> None:
    p = MemoryPresence()
    await p.add(ROOM, ClientInfo("alice", "c1"))
    await p.close()
    assert await p.get(ROOM) == {}


@settings(derandomize=True, max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.sampled_from([ROOM, ROOM_B]),
            st.sampled_from(["c1", "c2", "c3", "c4"]),
            st.sampled_from(["alice", "bob"]),
        ),
        max_size=30,
    )
)
async def test_matches_a_model(ops: list[tuple[bool, ChannelKey, str, str]]) -> None:
    p = MemoryPresence()
    model: dict[ChannelKey, dict[str, str]] = {}
    for add, key, client, user in ops:
        if add:
            await p.add(key, ClientInfo(user, client))
            model.setdefault(key, {})[client] = user
        else:
            await p.remove(key, client)
            model.get(key, {}).pop(client, None)
        for k in (ROOM, ROOM_B):
            members = await p.get(k)
            assert {c: i.user for c, i in members.items()} == model.get(k, {})
            assert all(c == i.client for c, i in members.items())
            want = model.get(k, {})
            assert await p.stats(k) == PresenceStats(len(want), len(set(want.values())))
