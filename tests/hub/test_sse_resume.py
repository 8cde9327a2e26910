"""SSE resume, in-process: a ``uni_sse`` session against a real Node, its byte stream cut anywhere, and a new
session resuming from the last complete event's id. Property: the two streams together hold every
publication exactly once, in order per channel. Plus the resume id's round trip."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub import sse, wire
from hub.auth import mint_token
from hub.client import Client
from hub.node import Node
from hub.transport_http import _resume_from
from hub.writer import EventWriter, FlushScheduler
from tests.hub.test_session import SECRET, make_node


class SseSink:
    """An SSE stream that keeps the bytes it was given."""

    name = "uni_sse"
    fmt = wire.JSON_EVENTS
    unidirectional = True
    emulation = False
    writer_class = EventWriter

    def __init__(self) -> None:
        self.data = b""
        self.closed: tuple[int, str] | None = None

    def write_messages(self, messages: list[bytes]) -> int:
        self.data += b"".join(messages)
        return 0

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def events(data: bytes) -> list[dict[str, Any]]:
    """The complete events in ``data`` (a cut stream may end inside one)."""
    out = []
    for block in data.split(b"\n\n")[:-1]:
        ev: dict[str, Any] = {}
        for line in block.split(b"\n"):
            name, _, value = line.partition(b": ")
            ev[name.decode()] = value.decode()
        out.append(ev)
    return out


def pubs(evs: list[dict[str, Any]]) -> list[tuple[str, int]]:
    got = []
    for ev in evs:
        if "event" in ev or "data" not in ev:
            continue
        push = orjson.loads(ev["data"])
        if "pub" in push:
            got.append((push["channel"], push["pub"]["data"]))
    return got


async def open_stream(node: Node, channels: list[str], last_event_id: str = "") -> tuple[Client, SseSink]:
    sink = SseSink()
    client = node.new_session(sink, scope={})
    params: dict[str, Any] = {"token": mint_token(SECRET, "u", channels=channels)}
    if last_event_id:
        _resume_from(client, last_event_id)
    await client.connect_unidirectional(params)
    node.scheduler.flush()
    return client, sink


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    plan=st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=12),
    split=st.integers(min_value=0, max_value=12),
    cut=st.floats(min_value=0.0, max_value=1.0),
    flush_each=st.booleans(),
)
async def test_resume_from_any_cut_gets_every_publication_once(
    plan: list[str], split: int, cut: float, flush_each: bool
) -> None:
    node = make_node()
    await node.start()
    try:
        first, sink = await open_stream(node, ["a", "b"])
        connect_end = len(sink.data)
        sent: list[tuple[str, int]] = []
        for i, ch in enumerate(plan[:split]):
            await node.publish(ch, i)
            sent.append((ch, i))
            if flush_each:  # else one batch: every event in it must still carry its own resume point
                node.scheduler.flush()
        node.scheduler.flush()
        # The connection drops somewhere after the connect event: maybe inside an event.
        received = sink.data[: connect_end + int((len(sink.data) - connect_end) * cut)]
        seen = events(received)
        last_id = [ev["id"] for ev in seen if "id" in ev][-1]
        await node.end_session(first)
        for i, ch in enumerate(plan[split:], start=split):
            await node.publish(ch, i)
            sent.append((ch, i))
        second, sink2 = await open_stream(node, ["a", "b"], last_id)
        resumed = events(sink2.data)
        assert not any(ev.get("event") == "unrecovered" for ev in resumed)
        got = pubs(seen) + pubs(resumed)
        assert sorted(got, key=lambda p: p[1]) == sent  # every publication exactly once
        for ch in ("a", "b"):
            assert [i for c, i in got if c == ch] == [i for c, i in sent if c == ch]  # in order per channel
        await node.end_session(second)
    finally:
        await node.stop()


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=20),
        st.tuples(st.integers(min_value=0, max_value=2**63), st.text(max_size=12)),
        max_size=6,
    )
)
def test_resume_id_round_trip(positions: dict[str, tuple[int, str]]) -> None:
    encoded = sse.encode_resume_id(positions)
    assert b"\n" not in encoded and b"\r" not in encoded and b"\0" not in encoded
    point = sse.decode_resume_id(encoded.decode())
    assert point.complete
    assert {ch: point.position(ch) for ch in positions} == positions
    assert point.position("a channel it does not name") is None


NAMES = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), min_size=1, max_size=255)
EPOCHS = st.text("0123456789abcdef", min_size=8, max_size=8)


@settings(max_examples=30, deadline=None)
@given(
    st.dictionaries(NAMES, st.tuples(st.integers(0, 2**64 - 1), EPOCHS), max_size=600),
    st.integers(0, 600),
)
def test_every_resume_id_given_out_is_one_the_hub_takes_back(
    positions: dict[str, tuple[int, str]], forgotten: int
) -> None:
    """(Issue 10.) Ids grew with the names of the stream's channels and could pass what the hub accepted
    back (its own bound, and what proxies pass in a header): the stream then resumed with every channel
    unrecovered. Whatever the channels (names of 255 characters of any script, any offsets), an id is at
    most MAX_RESUME_ID and is read back; each channel either has its exact position, or the id says it is
    partial and the channel resumes unrecovered; never a silent fresh start."""
    writer = sse_writer()
    for ch, (offset, epoch) in positions.items():
        writer.set_position(ch, offset, epoch)
    for ch in list(positions)[:forgotten]:
        writer.forget(ch)
        del positions[ch]
    assert len(writer.event_id) <= sse.MAX_RESUME_ID
    point = sse.decode_resume_id(writer.event_id.decode())
    named = 0
    for ch, position in positions.items():
        got = point.position(ch)
        assert got == position or (not point.complete and got == (0, ""))
        named += got == position
    assert point.complete == (named == len(positions))
    if len(positions) <= 250:  # ~20 bytes a position: 250 of any name always fit
        assert point.complete


def test_an_id_names_every_channel_of_the_default_limit_with_the_longest_names() -> None:
    writer = sse_writer()
    names = ["\U0001f600" * 255, '"' * 255, *(f"{i:03d}" + "x" * 252 for i in range(126))]
    for i, name in enumerate(names):
        writer.set_position(name, 2**64 - 1 - i, "0123abcd")
    assert len(names) == 128 and len(writer.event_id) <= sse.MAX_RESUME_ID
    point = sse.decode_resume_id(writer.event_id.decode())
    assert point.complete and all(
        point.position(n) == (2**64 - 1 - i, "0123abcd") for i, n in enumerate(names)
    )


def test_ids_of_the_previous_layout_are_still_read() -> None:
    """Streams resume across an upgrade: the old id was base64 of a JSON list of [channel, offset, epoch]."""
    old = base64.urlsafe_b64encode(orjson.dumps([["chat:a", 7, "ep"], ["b", 0, "xy"]])).rstrip(b"=")
    point = sse.decode_resume_id(old.decode())
    assert point.complete and point.position("chat:a") == (7, "ep") and point.position("b") == (0, "xy")
    assert point.position("c") is None


def sse_writer() -> EventWriter:
    return EventWriter(SseSink(), FlushScheduler(asyncio.new_event_loop()), 1 << 20, lambda: None)


@given(
    st.one_of(
        st.text(max_size=60), st.binary(max_size=80).map(lambda b: base64.urlsafe_b64encode(b).decode())
    )
)
def test_foreign_resume_ids_are_refused_not_crashing(value: str) -> None:
    try:
        sse.decode_resume_id(value)
    except sse.BadResumeId:
        pass
