"""DocRoom and DocumentRooms with in-memory links to YClients and the real SQLite store: sync, relay
after durability, awareness, read-only, bad input, limits, compaction, unloading, and the convergence
property under random edits, disconnects and reconnects (and after a restart)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from sync import protocol
from sync.awareness import AwarenessLimits
from sync.protocol import AwarenessEntry, LimitExceeded, ProtocolError, UpdateRejected
from sync.room import AWARENESS_REFUSED, COALESCED, KEEPALIVE, DocRoom, RoomLimits, WriteRefused
from sync.rooms import DocumentRooms
from sync.store import DocKey
from sync.store_sqlite import SqliteDocumentStore
from tests.sync.links import Link, connect, pump
from tests.sync.yclient import YClient

KEY: DocKey = ("", "notes")


@contextlib.asynccontextmanager
async def rooms_at(path: Path, **kw: object) -> AsyncIterator[DocumentRooms]:
    kw.setdefault("unload_delay", 60.0)
    rooms = DocumentRooms(SqliteDocumentStore(path), **kw)  # type: ignore[arg-type]
    try:
        yield rooms
    finally:
        await rooms.close()


async def writing(rooms: DocumentRooms, text: str) -> tuple[DocRoom, YClient, Link]:
    """The room of ``KEY``, and alice connected to it, whose ``text`` it holds."""
    room = await rooms.acquire(KEY)
    alice = YClient(1)
    la = connect(room, alice)
    alice.text.insert(0, text)
    await pump(room, [la])
    return room, alice, la


async def test_two_clients_sync_and_edits_are_relayed(tmp_path: Path) -> None:
    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        room = await rooms.acquire(KEY)
        alice, bob = YClient(1), YClient(2)
        alice.text.insert(0, "hello")  # offline edit, sent in alice's step 2
        links = [connect(room, alice), connect(room, bob)]
        await pump(room, links)
        assert alice.synced and bob.synced
        assert str(bob.text) == "hello"
        bob.text.insert(5, " world")
        await pump(room, links)
        assert str(alice.text) == str(bob.text) == str(room.doc.get("text", type=Text)) == "hello world"


async def test_a_relay_waits_for_the_commit(tmp_path: Path) -> None:
    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        room = await rooms.acquire(KEY)
        alice, bob = YClient(1), YClient(2)
        la, lb = connect(room, alice), connect(room, bob)
        await pump(room, [la, lb])
        alice.text.insert(0, "x")
        for message in alice.take():
            room.receive(la, message)
        assert lb.inbox == []  # not durable yet: nothing relayed
        await room.journal.flush()
        assert lb.inbox == [protocol.update(bytes(protocol.decode(lb.inbox[0]).update))]  # type: ignore[union-attr]
        assert la.inbox == []  # the sender is not sent its own update
        stored = await rooms.store.load(KEY)
        assert stored.log_rows == 1


async def test_duplicate_updates_are_neither_stored_nor_relayed(tmp_path: Path) -> None:
    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        room = await rooms.acquire(KEY)
        alice, bob = YClient(1), YClient(2)
        la, lb = connect(room, alice), connect(room, bob)
        await pump(room, [la, lb])
        alice.text.insert(0, "once")
        (message,) = alice.take()
        room.receive(la, message)
        room.receive(la, message)
        await room.journal.flush()
        assert len(lb.inbox) == 1
        assert (await rooms.store.load(KEY)).log_rows == 1


async def test_awareness_reaches_everyone_including_the_sender_and_leaves_with_the_connection(
    tmp_path: Path,
) -> None:
    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        room = await rooms.acquire(KEY)
        alice, bob = YClient(1), YClient(2)
        la, lb = connect(room, alice), connect(room, bob)
        alice.set_awareness({"user": "alice"})
        await pump(room, [la, lb])
        assert alice.states() == bob.states() == {1: {"user": "alice"}}
        carol = YClient(3)
        lc = connect(room, carol)  # a newcomer is sent every state on join
        await pump(room, [la, lb, lc])
        assert carol.states() == {1: {"user": "alice"}}
        room.leave(la)
        await pump(room, [lb, lc])
        assert bob.states() == carol.states() == {}


async def test_query_awareness_is_answered(tmp_path: Path) -> None:
    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        room = await rooms.acquire(KEY)
        alice, bob = YClient(1), YClient(2)
        la, lb = connect(room, alice), connect(room, bob)
        alice.set_awareness({"n": 1})
        await pump(room, [la, lb])
        lb.inbox.clear()
        room.receive(lb, protocol.query_awareness())
        (reply,) = lb.inbox
        message = protocol.decode(reply)
        assert isinstance(message, protocol.AwarenessMessage)
        assert [e.client_id for e in protocol.decode_awareness(message.update)] == [1]


async def test_read_only_peers_read_but_never_write(tmp_path: Path) -> None:
    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        room = await rooms.acquire(KEY)
        writer, reader = YClient(1), YClient(2)
        lw, lr = connect(room, writer), connect(room, reader, can_write=False)
        writer.text.insert(0, "shared")
        await pump(room, [lw, lr])  # the reader's (empty) step 2 is dropped silently
        assert str(reader.text) == "shared"
        reader.text.insert(0, "mine ")
        (message,) = reader.take()
        with pytest.raises(WriteRefused):
            room.receive(lr, message)
        await room.journal.flush()
        assert str(room.doc.get("text", type=Text)) == "shared"
        assert lw.inbox == []
        reader.set_awareness({"viewer": True})  # awareness is allowed
        await pump(room, [lw, lr])
        assert writer.states() == {2: {"viewer": True}}


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"\x00\x02\x05\x01\x02", ProtocolError),  # length past the end
        (b"\x09", ProtocolError),  # unknown message type
        (b"\x00\x02\xff", ProtocolError),  # truncated varint
        (protocol.update(b"\x07\x07\x07\x07"), UpdateRejected),
        (protocol.sync_step1(b"\xff\xff"), ProtocolError),
        (protocol.awareness(b"\x01\x01\x01\x03{x}"), ProtocolError),
    ],
)
async def test_bad_input_raises_and_changes_nothing(
    tmp_path: Path, raw: bytes, error: type[Exception]
) -> None:
    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        room = await rooms.acquire(KEY)
        alice, mallory = YClient(1), YClient(2)
        la, lm = connect(room, alice), connect(room, mallory)
        alice.text.insert(0, "safe")
        await pump(room, [la, lm])
        before = room.doc.get_update()
        la.inbox.clear()
        with pytest.raises(error):
            room.receive(lm, raw)
        await room.journal.flush()
        assert room.doc.get_update() == before
        assert la.inbox == []


async def test_limits(tmp_path: Path) -> None:
    limits = RoomLimits(max_update_size=200, max_document_size=1000)
    async with rooms_at(tmp_path / "d.sqlite3", limits=limits) as rooms:
        room = await rooms.acquire(KEY)
        alice = YClient(1)
        la = connect(room, alice)
        await pump(room, [la])
        alice.text.insert(0, "x" * 300)
        (big,) = alice.take()
        with pytest.raises(LimitExceeded, match="update too large"):
            room.receive(la, big)
        assert str(room.doc.get("text", type=Text)) == ""
        bob = YClient(2)  # alice's later updates depend on the refused one: they would wait forever
        lb = connect(room, bob)
        await pump(room, [lb])
        for _ in range(30):
            bob.text.insert(0, "y" * 100)
            (message,) = bob.take()
            try:
                room.receive(lb, message)
            except LimitExceeded as exc:
                assert "document too large" in exc.reason
                break
        else:
            raise AssertionError("the document limit never triggered")
        assert 800 <= len(room.doc.get_update()) <= 1000
        await room.journal.flush()


async def test_updates_waiting_for_missing_dependencies_count_against_the_size_limit(tmp_path: Path) -> None:
    limits = RoomLimits(max_document_size=2000)
    async with rooms_at(tmp_path / "d.sqlite3", limits=limits) as rooms:
        room = await rooms.acquire(KEY)
        source = Doc()
        updates: list[bytes] = []
        source.observe(lambda e: updates.append(e.update))
        text = source.get("text", type=Text)
        for _ in range(40):
            text.insert(0, "z" * 90)
        peer = Link(YClient(9))
        room.join(peer, True)
        with pytest.raises(LimitExceeded, match="document too large"):
            for update in updates[1:]:  # never the first: every later one waits for it
                room.receive(peer, protocol.update(update))
        assert room.unintegrated <= 2000
        assert str(room.doc.get("text", type=Text)) == ""


async def test_compaction_keeps_content_and_an_old_client_gets_no_duplicates(tmp_path: Path) -> None:
    limits = RoomLimits(compact_after_updates=10)
    async with rooms_at(tmp_path / "d.sqlite3", limits=limits) as rooms:
        room = await rooms.acquire(KEY)
        alice, old = YClient(1), YClient(2)
        la, lo = connect(room, alice), connect(room, old)
        alice.text.insert(0, "base.")
        await pump(room, [la, lo])
        room.leave(lo)  # old goes offline holding "base."
        for i in range(35):
            alice.text.insert(len(alice.text), f"{i},")
            await pump(room, [la])
        await asyncio.sleep(0)  # the compaction is queued on the next tick
        await room.journal.flush()
        stored = await rooms.store.load(KEY)
        assert stored.snapshot_bytes > 0 and stored.log_rows < 10
        old.text.insert(0, "offline:")
        lo = connect(room, old)
        await pump(room, [la, lo])
        expected = "offline:base." + "".join(f"{i}," for i in range(35))
        assert str(old.text) == str(alice.text) == expected


async def test_unload_after_the_grace_period_and_reload(tmp_path: Path) -> None:
    async with rooms_at(tmp_path / "d.sqlite3", unload_delay=0.05) as rooms:
        room, alice, la = await writing(rooms, "persisted")
        unloaded = asyncio.Event()
        rooms.on_unload = lambda key: unloaded.set()
        room.leave(la)
        rooms.release(room)
        assert KEY in rooms.rooms  # kept warm for the grace period
        await asyncio.wait_for(unloaded.wait(), 10)
        assert KEY not in rooms.rooms
        stored = await rooms.store.load(KEY)
        assert stored.log_rows == 0 and stored.snapshot_bytes > 0  # compacted on unload
        again = await rooms.acquire(KEY)
        assert again is not room
        assert str(again.doc.get("text", type=Text)) == "persisted"
        rooms.release(again)


async def test_node_limit_unloads_idle_rooms_and_refuses_when_all_are_busy(tmp_path: Path) -> None:
    async with rooms_at(tmp_path / "d.sqlite3", max_open=2) as rooms:
        a = await rooms.acquire(("", "a"))
        b = await rooms.acquire(("", "b"))
        with pytest.raises(LimitExceeded, match="too many open documents"):
            await rooms.acquire(("", "c"))
        rooms.release(b)  # idle (in its grace period): may be evicted
        c = await rooms.acquire(("", "c"))
        assert ("", "b") not in rooms.rooms
        rooms.release(a)
        rooms.release(c)


async def test_server_side_edits_reach_peers_and_storage(tmp_path: Path) -> None:
    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        room = await rooms.acquire(KEY)
        alice = YClient(1)
        la = connect(room, alice)
        await pump(room, [la])
        await rooms.transact(KEY, lambda doc: doc.get("text", type=Text).insert(0, "from a bot"))
        async with rooms.open(KEY) as doc:
            doc.get("text", type=Text).insert(0, ">> ")
        await pump(room, [la])
        assert str(alice.text) == ">> from a bot"
        assert (await rooms.store.load(KEY)).log_rows == 2


# ---------------------------------------------------------------- the convergence property

edits = st.lists(
    st.one_of(
        st.tuples(
            st.just("insert"),
            st.integers(0, 2),
            st.integers(0, 50),
            st.text("abcxyz", min_size=1, max_size=4),
        ),
        st.tuples(st.just("delete"), st.integers(0, 2), st.integers(0, 50), st.integers(1, 3)),
        st.tuples(st.just("drop"), st.integers(0, 2)),
        st.tuples(st.just("join"), st.integers(0, 2)),
        st.tuples(
            st.just("pump"),
        ),
    ),
    max_size=40,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits, st.integers(1, 12))
def test_random_concurrent_edits_converge_and_survive_a_restart(ops: list[tuple], compact_after: int) -> None:
    asyncio.run(_converge(ops, compact_after))


async def _converge(ops: list[tuple], compact_after: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.sqlite3"
        limits = RoomLimits(compact_after_updates=compact_after)
        async with rooms_at(path, limits=limits) as rooms:
            room = await rooms.acquire(KEY)
            clients = [YClient(i + 1) for i in range(3)]
            links: list[Link | None] = [connect(room, c) for c in clients]
            await pump(room, [lk for lk in links if lk])
            for op in ops:
                kind = op[0]
                if kind == "insert" or kind == "delete":
                    client = clients[op[1]]
                    text = client.text
                    pos = min(op[2], len(text))
                    if kind == "insert":
                        text.insert(pos, op[3])
                    elif pos < len(text):
                        del text[pos : min(len(text), pos + op[3])]
                    if links[op[1]] is None:
                        client.take()  # offline: the provider would not send; step 2 carries it later
                elif kind == "drop" and links[op[1]] is not None:
                    room.leave(links[op[1]])  # type: ignore[arg-type]
                    links[op[1]] = None
                elif kind == "join" and links[op[1]] is None:
                    links[op[1]] = connect(room, clients[op[1]])
                elif kind == "pump":
                    await pump(room, [lk for lk in links if lk])
            for i, link in enumerate(links):
                if link is None:
                    links[i] = connect(room, clients[i])
            await pump(room, [lk for lk in links if lk])
            live = str(room.doc.get("text", type=Text))
            assert [str(c.text) for c in clients] == [live] * 3
        # close() compacted and flushed; a fresh node serves the same document.
        async with rooms_at(path) as again:
            reloaded = await again.acquire(KEY)
            assert str(reloaded.doc.get("text", type=Text)) == live
            fresh = Doc()
            for update in (await again.store.load(KEY)).updates:
                fresh.apply_update(update)
            assert str(fresh.get("text", type=Text)) == live
            again.release(reloaded)


async def test_waiting_updates_stop_counting_once_integrated(tmp_path: Path) -> None:
    """From review: an update that arrived before the one it depends on counted against the size limit
    for the rest of the room's life, so later honest writes were refused."""
    limit = 20_000
    async with rooms_at(tmp_path / "d.sqlite3", limits=RoomLimits(max_document_size=limit)) as rooms:
        room = await rooms.acquire(("", "gap"))
        source = Doc(client_id=7)
        text = source.get("text", type=Text)
        text.insert(0, "x")
        first = source.get_update()
        state = source.get_state()
        text.insert(1, "y" * 9_000)
        second = source.get_update(state)
        writer = YClient(8)
        link = connect(room, writer)
        await pump(room, [link])
        room.receive(link, protocol.update(second))  # waits for the first
        assert room.unintegrated == len(second)
        room.receive(link, protocol.update(first))  # the gap closes: both integrated
        assert room.unintegrated == 0
        await rooms.journal.flush()
        other = Doc(client_id=9)
        other.apply_update(room.doc.get_update())
        before = other.get_state()
        other.get("text", type=Text).insert(0, "z" * 8_000)
        third = other.get_update(before)
        room.receive(link, protocol.update(third))  # ~17 KB in all: under the limit, accepted
        assert len(str(room.doc.get("text", type=Text))) == 17_001


STEP2 = b"\x00\x01"


async def test_a_step_1_while_the_last_answer_is_on_its_way_is_coalesced(tmp_path: Path) -> None:
    """One step 2 at a time per peer: while it waits for the journal, or while the peer still sends it
    (``replying``), a further step 1 costs nothing but a notice; the peer still gets everything."""
    from tests.sync.test_journal import GatedStore

    store = GatedStore(tmp_path / "d.sqlite3")
    rooms = DocumentRooms(store, unload_delay=60.0)
    try:
        room = await rooms.acquire(KEY)
        alice, mallory = YClient(1), YClient(2)
        la, lm = connect(room, alice), connect(room, mallory)
        await pump(room, [la, lm])
        lm.inbox.clear()
        store.gate.clear()
        alice.text.insert(0, "pending")  # a commit in progress: answers wait for it
        for message in alice.take():
            room.receive(la, message)
        for _ in range(5):
            room.receive(lm, protocol.sync_step1(b"\x01\x05\x00"))
        assert room.coalesced == 4 and lm.notices == [COALESCED] * 4
        with pytest.raises(ProtocolError):  # a coalesced step 1 is still judged
            room.receive(lm, protocol.sync_step1(b"\xff\xff"))
        store.gate.set()
        await room.journal.flush()
        assert [m[:2] for m in lm.inbox].count(STEP2) == 1
        lm.inbox.clear()
        lm.replying = True  # the answer is still being written to the peer
        room.receive(lm, protocol.sync_step1(b"\x00"))
        assert lm.inbox == [] and room.coalesced == 5
        lm.replying = False
        room.receive(lm, protocol.sync_step1(b"\x00"))
        await room.journal.flush()
        (reply,) = lm.inbox
        check = YClient(3)
        check.handle(reply)
        assert str(check.text) == "pending"
    finally:
        store.gate.set()
        await rooms.close()


async def test_new_clients_share_one_answer_until_the_document_changes(tmp_path: Path) -> None:
    """A step 1 with an empty state vector (a new client) is answered with the full state, built once."""
    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        room, alice, la = await writing(rooms, "shared state")
        answers = []
        for n in range(3):
            link = connect(room, YClient(10 + n))
            if n == 2:
                alice.text.insert(0, "changed: ")
                await pump(room, [la])
            link.inbox.clear()
            for message in link.client.take():
                room.receive(link, message)
            await room.journal.flush()
            answers += [m for m in link.inbox if m[:2] == STEP2]
        assert answers[0] is answers[1] and answers[2] is not answers[0]
        check = YClient(20)
        check.handle(answers[2])
        assert str(check.text) == "changed: shared state"


@pytest.mark.parametrize("keep", [60.0, 0.0])
async def test_the_full_state_of_an_unchanged_document_outlives_the_clock_while_joiners_use_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: float
) -> None:
    """Before, the rooms' clock dropped the shared full-state answer at every tick (3 s), so a joiner of a
    document nobody had edited paid a whole encoding again (30-60 ms of the loop for 1.8 MB). Now it is
    kept while the document is unchanged, and dropped by the clock only after ``FULL_STATE_KEEP`` unused
    seconds."""
    monkeypatch.setattr("sync.room.FULL_STATE_KEEP", keep)
    async with rooms_at(tmp_path / "d.sqlite3", keepalive_interval=0.02) as rooms:
        room, alice, la = await writing(rooms, "kept")

        async def full_state() -> bytes:
            link = connect(room, YClient(10))
            link.inbox.clear()
            for message in link.client.take():
                room.receive(link, message)
            await room.journal.flush()
            (answer,) = [m for m in link.inbox if m[:2] == STEP2]
            room.leave(link)
            return answer

        first = await full_state()
        la.inbox.clear()
        # The clock ran at least twice since: a bounded poll of the room's own output (no event to wait on).
        while la.inbox.count(KEEPALIVE) < 3:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        second = await full_state()
        assert (second is first) == (keep > 0)
        assert second == first


async def test_a_derived_answer_is_computed_once_per_state_of_the_document(tmp_path: Path) -> None:
    """``derived`` (the content read of /content) runs its function once while the document is unchanged,
    again after any change (a peer's update or a server-side transaction), and after ``forget_full_state``."""
    calls: list[str] = []

    def text_of(doc: Doc) -> str:
        calls.append(str(doc.get("text", type=Text)))
        return calls[-1]

    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        room, alice, la = await writing(rooms, "one")
        assert [room.derived(text_of) for _ in range(3)] == ["one"] * 3
        assert calls == ["one"]
        alice.text.insert(3, " two")
        await pump(room, [la])
        assert room.derived(text_of) == "one two"
        await rooms.transact(KEY, lambda doc: doc.get("text", type=Text).insert(0, "zero "))
        assert room.derived(text_of) == room.derived(text_of) == "zero one two"
        room.forget_full_state(now=None)
        assert room.derived(text_of) == "zero one two"
        assert calls == ["one", "one two", "zero one two", "zero one two"]


async def test_awareness_bounds(tmp_path: Path) -> None:
    """A state past max_state_size ends its peer (LimitExceeded); past the per-connection count or the
    document's total, entries are refused with a notice, and the others are kept."""
    limits = RoomLimits(awareness=AwarenessLimits(max_state_size=100, max_ids_per_owner=2, max_bytes=250))
    async with rooms_at(tmp_path / "d.sqlite3", limits=limits) as rooms:
        room = await rooms.acquire(KEY)
        alice, bob, mallory = (Link(YClient(n)) for n in (1, 2, 3))
        for link in (alice, bob, mallory):
            room.join(link, True)

        def announce(link: Link, *entries: tuple[int, int]) -> None:
            states = [AwarenessEntry(cid, 1, b'"' + b"s" * (size - 2) + b'"') for cid, size in entries]
            room.receive(link, protocol.awareness(protocol.encode_awareness(states)))

        with pytest.raises(LimitExceeded, match="awareness state too large"):
            announce(mallory, (30, 101))
        announce(alice, (10, 100), (11, 100), (12, 10))  # the third id is one too many
        assert alice.notices == [AWARENESS_REFUSED] and len(room.awareness) == 2
        announce(bob, (20, 60))  # 200 + 60 > 250
        assert bob.notices == [AWARENESS_REFUSED] and room.awareness.size == 200
        announce(bob, (20, 50))
        assert room.awareness.size == 250 and len(room.awareness) == 3


async def test_remote_changes_while_the_journal_is_full_are_relayed_then_stored_whole(tmp_path: Path) -> None:
    """Another node cannot be slowed down from here: its changes are relayed at once, and the whole state is
    stored once the journal has room (the room is ``unjournaled`` meanwhile)."""
    from tests.sync.test_journal import GatedStore

    store = GatedStore(tmp_path / "d.sqlite3")
    rooms = DocumentRooms(store, unload_delay=60.0, write_backlog=100)
    try:
        room = await rooms.acquire(KEY)
        alice = YClient(1)
        la = connect(room, alice)
        await pump(room, [la])
        store.gate.clear()
        room.transact(lambda doc: doc.get("text", type=Text).insert(0, "local " * 40))
        assert rooms.backlog_full
        backlog = room.journal.backlog
        remote = Doc()
        remote.get("text", type=Text).insert(0, "remote ")
        la.inbox.clear()
        room.apply_remote(remote.get_update())
        assert room.journal.backlog == backlog and room.unjournaled  # not journaled...
        assert [m[:2] for m in la.inbox] == [b"\x00\x02"]  # ...but relayed at once
        store.gate.set()
        await rooms.has_room()
        room.store_unjournaled()
        await room.journal.flush()
        reloaded = Doc()
        for update in (await store.load(KEY)).updates:
            reloaded.apply_update(update)
        assert "remote " in str(reloaded.get("text", type=Text)) and not room.unjournaled
    finally:
        store.gate.set()
        await rooms.close()


async def test_a_room_that_just_became_the_writer_is_not_compacted_before_it_merged_the_store(
    tmp_path: Path,
) -> None:
    """Between gaining the writer lease and merging what the store holds (``take_over``), a room may lack
    stored content: only changes it relayed unjournaled as the writer make the clock store its state."""
    from sync.store import Append

    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        other = Doc()
        other.get("text", type=Text).insert(0, "stored by the last writer")
        await rooms._open_store()
        await rooms.store.write([Append(KEY, other.get_update())])
        room = DocRoom(KEY, rooms.journal, RoomLimits())  # a holder that never saw it
        room.writer, room.unstored = True, True  # the lease was just gained; take_over has not run yet
        room.store_unjournaled()  # what the rooms' clock does each tick
        await rooms.journal.flush()
        stored = Doc()
        for update in (await rooms.store.load(KEY)).updates:
            stored.apply_update(update)
        assert str(stored.get("text", type=Text)) == "stored by the last writer"
        room.close()


async def test_server_side_awareness_is_announced_renewed_and_withdrawn_as_y_protocols_does(
    tmp_path: Path,
) -> None:
    """An agent's state (``DocRoom.announce``): the next clock each time, relayed to every peer; its
    removal (``withdraw``): ``null`` with the clock + 1, which a y-protocols Awareness accepts; a state
    announced again after that takes a newer clock still, so no client holds it for stale."""
    async with rooms_at(tmp_path / "d.sqlite3") as rooms:
        room = await rooms.acquire(KEY)
        alice = YClient(1)
        link = connect(room, alice)
        await pump(room, [link])
        agent = object()
        assert room.announce(agent, 77, b'{"user":{"name":"bot"},"bot":true}')
        assert room.announce(agent, 77, b'{"user":{"name":"bot"},"bot":true,"cursor":null}')
        entries = [e for m in link.inbox for e in protocol.decode_awareness(protocol.decode(m).update)]  # type: ignore[union-attr]
        assert [(e.client_id, e.clock) for e in entries] == [(77, 1), (77, 2)]
        await pump(room, [link])
        assert alice.states() == {77: {"user": {"name": "bot"}, "bot": True, "cursor": None}}
        room.withdraw(agent)
        (message,) = link.inbox
        assert protocol.decode_awareness(protocol.decode(message).update) == [  # type: ignore[union-attr]
            AwarenessEntry(77, 3, protocol.NULL_STATE)
        ]
        await pump(room, [link])
        assert alice.states() == {}
        room.withdraw(agent)  # nothing owned any more: nothing sent
        assert link.inbox == []
        assert room.announce(agent, 77, b"{}") and room.awareness.clock(77) == 4


async def test_awareness_bounds_hold_for_server_side_states(tmp_path: Path) -> None:
    limits = RoomLimits(awareness=AwarenessLimits(max_state_size=100, max_ids_per_owner=1, max_bytes=150))
    async with rooms_at(tmp_path / "d.sqlite3", limits=limits) as rooms:
        room = await rooms.acquire(KEY)
        agent, other = object(), object()
        assert room.announce(agent, 1, b'"' + b"x" * 98 + b'"')
        assert not room.announce(agent, 2, b"{}")  # one id per owner
        assert not room.announce(other, 3, b'"' + b"y" * 60 + b'"')  # the document's bytes
        assert room.announce(other, 3, b"{}")
