"""Fuzzing what a document connection sends into a room: Yjs updates built by pycrdt from random edits,
then damaged, go through ``sync.update`` (``client_ranges``, ``root_kinds``: ProtocolError only) and through
``DocRoom.receive`` from a writer and a reader (SyncError only: ProtocolError, UpdateRejected,
LimitExceeded, WriteRefused; never pycrdt's PanicException or another exception). After every bad message
the room still takes a good update from another writer, and everything it sent is a well-formed message."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text

from sync import protocol
from sync.journal import Journal
from sync.protocol import ProtocolError, SyncError
from sync.room import DocRoom, RoomLimits
from sync.update import client_ranges, root_kinds
from tests.fuzz.strategies import bounded_time, examples, mutated

crdt_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
"""What pycrdt stores (an integer past 64 bits panics inside pycrdt: Rust's unwrap of an OverflowError)."""
edits = st.lists(
    # Words of ASCII: pycrdt 0.14 panics ("attempt to divide by zero") deleting from some non-ASCII text.
    st.tuples(
        st.sampled_from(["text", "map", "array", "delete"]), st.text("abc xyz", max_size=6), crdt_values
    ),
    min_size=1,
    max_size=6,
)


def update_of(client_id: int, ops: list[tuple[str, str, Any]]) -> bytes:
    doc: Doc[Any] = Doc(client_id=client_id)  # a random one would change the bytes under hypothesis' feet
    text, data, items = doc.get("t", type=Text), doc.get("m", type=Map), doc.get("a", type=Array)
    for op, word, value in ops:
        if op == "text":
            text.insert(len(text) // 2, word or "x")
        elif op == "map":
            data[word] = value
        elif op == "array":
            items.append(value)
        elif len(text):
            del text[0:1]
    return doc.get_update()


updates = st.builds(update_of, st.integers(1, 2**32 - 1), edits)


class Peer:
    """A connection as the room sees it (sync.room.Peer), keeping what it was sent."""

    replying = False

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, message: bytes, shared: bool = False) -> None:
        self.sent.append(message)

    def send_reply(self, message: bytes, shared: bool = False) -> None:
        self.sent.append(message)

    def notice(self, what: str) -> None:
        pass

    def terminate(self, error: SyncError) -> None:
        pass


def make_room() -> DocRoom:
    room = DocRoom(("", "fuzz"), Journal(None), RoomLimits(max_document_size=1 << 20))  # type: ignore[arg-type]
    room.writer = False  # no journal: nothing here needs the event loop
    return room


@settings(max_examples=examples(120))
@given(updates.flatmap(mutated))
def test_the_update_reader_returns_or_raises_protocol_error(update: bytes) -> None:
    for read in (client_ranges, root_kinds):
        try:
            with bounded_time():
                read(update)
        except ProtocolError:
            pass


wrappers = st.sampled_from([protocol.update, protocol.sync_step2, protocol.sync_step1])


@settings(max_examples=examples(120))
@given(st.tuples(wrappers, updates).map(lambda t: t[0](t[1])).flatmap(mutated), updates)
@example(bytes.fromhex("00000aa0b081a0b081e1af0a02"), update_of(1, [("text", "ok", None)]))
def test_a_room_answers_any_message_with_sync_error_at_worst(message: bytes, good: bytes) -> None:
    room = make_room()
    writer, reader, other = Peer(), Peer(), Peer()
    room.join(writer, True)
    room.join(reader, False)
    room.join(other, True)
    for peer in (writer, reader):
        try:
            with bounded_time():
                room.receive(peer, message, now=0.0)
        except SyncError:
            pass
    room.receive(other, protocol.update(good), now=0.0)  # the room still works
    probe: Doc[Any] = Doc()
    probe.apply_update(good)
    assert room.doc.get_state() != b"\x00" or probe.get_state() == b"\x00"
    for peer in (writer, reader, other):
        for sent in peer.sent:
            protocol.decode(sent)


# Found by bench/fuzz (target room, -rss_limit_mb=400): a sync step 1 of 13 bytes whose state vector claims
# about 2**62 entries. pycrdt (yrs) reserved memory for all of them before reading one: 513 MB and 2.7 s.
HUGE_COUNT_STEP1 = bytes.fromhex("00000aa0b081a0b081e1af0a02")


def test_a_state_vector_claiming_more_entries_than_it_holds_is_refused_at_once() -> None:
    room = make_room()
    peer = Peer()
    room.join(peer, True)
    start = time.monotonic()
    with pytest.raises(ProtocolError):
        room.receive(peer, HUGE_COUNT_STEP1, now=0.0)
    assert time.monotonic() - start < 0.5
    assert peer.sent[1:] == []  # nothing but the room's own step 1 from the join


# Found by bench/fuzz (target room, -rss_limit_mb=400, oom-0db34ae8): an update whose first count claims
# ~450 million clients. pycrdt (yrs) reserved a table entry for each before reading one: 0.5 GB, 0.4 s.
HUGE_CLIENT_COUNT = protocol.update(protocol.var_uint(450_000_000) + b"\x00")

_MEASURE = """
import sys
from sync.journal import Journal
from sync.protocol import SyncError
from sync.room import DocRoom, RoomLimits
room = DocRoom(("", "x"), Journal(None), RoomLimits())
room.writer = False
class Peer:
    replying = False
    def send(self, message, shared=False): pass
    def send_reply(self, message, shared=False): pass
    def notice(self, what): pass
    def terminate(self, error): pass
peer = Peer()
room.join(peer, True)
try:
    room.receive(peer, bytes.fromhex(sys.argv[1]))
except SyncError as exc:
    print(type(exc).__name__)
with open("/proc/self/status") as status:  # VmHWM: this process's own peak (ru_maxrss keeps the parent's)
    print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) // 1024)
"""


def test_an_update_claiming_more_clients_than_it_holds_costs_no_memory() -> None:
    """Measured in a process of its own: the peak RSS of this one would hide a transient 0.5 GB. The peak is
    the new process's VmHWM: ``ru_maxrss`` carries the parent's resident size across fork and exec, so in a
    long suite (pytest at 321 MB) it failed whatever the update cost."""
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, HUGE_CLIENT_COUNT.hex()], capture_output=True, text=True, check=True
    )
    error, peak_mb = proc.stdout.split()
    assert error == "UpdateRejected"
    assert int(peak_mb) < 200, proc.stdout
