"""Streaming replies, without an event loop: chunks checked in order and bounded, live subscribers see
every chunk, history keeps the finished message once, a subscriber that joins mid-stream gets the text so
far then the rest (no gap, no duplicate), and coalescing per write changes nothing a client reassembles."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.publication import ClientInfo, Publication
from channels.streams import (
    ChannelStreams,
    ChunkAfterFinal,
    ChunkOutOfOrder,
    MalformedChunk,
    StreamLimits,
    StreamTooLarge,
    StreamView,
    TooManyStreams,
    after_snapshot,
    chunk_run,
    coalesce,
    merge_snapshots,
    parse_chunk,
    stream_of,
)

BOT = ClientInfo("bot", "c1")


def chunk(stream: str, seq: int, text: str, final: bool = False, **extra: Any) -> Publication:
    fields: dict[str, Any] = {"id": stream, "seq": seq}
    if final:
        fields["final"] = True
    return Publication(orjson.dumps({"stream": fields, "text": text, **extra}), info=BOT, tags={"app": "x"})


def text_of(pub: Publication) -> str:
    return str(orjson.loads(pub.data)["text"])


def fields_of(pub: Publication) -> dict[str, Any]:
    return dict(orjson.loads(pub.data)["stream"])


def test_a_stream_live_and_in_history() -> None:
    streams = ChannelStreams()
    live: list[Publication] = []
    kept: list[Publication] = []
    for seq, (text, final) in enumerate([("Hel", False), ("lo ", False), ("wörld", False), ("", True)]):
        outcome = streams.accept(chunk("m1", seq, text, final, reply_to="q7"), now=0.0)
        live.append(outcome.deliver)
        if outcome.keep is not None:
            kept.append(outcome.keep)
    assert (
        live[0] is not None and live[1].data == chunk("m1", 1, "lo ", reply_to="q7").data
    )  # passed as published
    (message,) = kept
    assert message is live[-1]  # the final chunk goes out as the whole message, the one history keeps
    assert orjson.loads(message.data) == {
        "reply_to": "q7",
        "stream": {"id": "m1", "seq": 3, "from": 0, "final": True},
        "text": "Hello wörld",
    }
    assert message.tags == {"app": "x"} and message.info == BOT
    view = StreamView()
    for pub in live:
        view.feed(pub)
    assert view.texts == {"m1": "Hello wörld"} and view.finished == {"m1"}
    assert len(streams) == 0


def test_other_members_of_the_data_are_kept_the_latest_winning() -> None:
    streams = ChannelStreams()
    streams.accept(chunk("s", 0, "a", model="m", step=1), 0.0)
    streams.accept(chunk("s", 1, "b", step=2), 0.0)
    (snapshot,) = streams.snapshot()
    assert orjson.loads(snapshot.data) == {
        "model": "m",
        "step": 2,
        "stream": {"id": "s", "seq": 1, "from": 0},
        "text": "ab",
    }
    message = streams.accept(chunk("s", 2, "", final=True, finish_reason="stop"), 0.0).deliver
    assert orjson.loads(message.data) == {
        "model": "m",
        "step": 2,
        "finish_reason": "stop",
        "stream": {"id": "s", "seq": 2, "from": 0, "final": True},
        "text": "ab",
    }


def test_chunks_out_of_order_after_the_final_or_duplicated_are_refused_and_change_nothing() -> None:
    streams = ChannelStreams()
    with pytest.raises(ChunkOutOfOrder, match="chunk 1 where 0 was next"):
        streams.accept(chunk("s", 1, "x"), 0.0)
    streams.accept(chunk("s", 0, "a"), 0.0)
    with pytest.raises(ChunkOutOfOrder, match="chunk 0 where 1 was next"):
        streams.accept(chunk("s", 0, "again"), 0.0)  # a retried chunk
    with pytest.raises(ChunkOutOfOrder, match="chunk 2 where 1 was next"):
        streams.accept(chunk("s", 2, "skip"), 0.0)
    assert [text_of(p) for p in streams.snapshot()] == ["a"]
    streams.accept(chunk("s", 1, "b", final=True), 0.0)
    with pytest.raises(ChunkAfterFinal, match="stream s has finished"):
        streams.accept(chunk("s", 2, "late"), 0.0)
    with pytest.raises(ChunkAfterFinal):
        streams.accept(chunk("s", 0, "reused id"), 0.0)


def test_finished_ids_are_remembered_within_a_bound() -> None:
    streams = ChannelStreams(StreamLimits(remember_finished=2))
    for n in range(3):
        streams.accept(chunk(f"s{n}", 0, "x", final=True), 0.0)
    streams.accept(chunk("s0", 0, "a new stream under an id long forgotten"), 0.0)
    with pytest.raises(ChunkAfterFinal):
        streams.accept(chunk("s2", 0, "x"), 0.0)


def test_bounded_memory_per_channel() -> None:
    streams = ChannelStreams(StreamLimits(max_open=2, max_chunk_bytes=128, max_message_bytes=100))
    streams.accept(chunk("a", 0, "x"), 0.0)
    streams.accept(chunk("b", 0, "x"), 0.0)
    with pytest.raises(TooManyStreams, match="2 streams are open"):
        streams.accept(chunk("c", 0, "x"), 0.0)
    with pytest.raises(StreamTooLarge, match="a chunk is at most 128 bytes"):
        streams.accept(chunk("a", 1, "y" * 100), 0.0)
    for seq in range(1, 3):
        streams.accept(chunk("a", seq, "y" * 40), 0.0)
    with pytest.raises(StreamTooLarge, match="a message is at most 100 bytes"):
        streams.accept(chunk("a", 3, "y" * 40), 0.0)
    for n in range(2):
        streams.accept(chunk("b", n + 1, "", **{f"k{n}": "v" * 40}), 0.0)
    with pytest.raises(StreamTooLarge, match="other data"):  # each chunk small, the merged data not
        streams.accept(chunk("b", 3, "", k9="v" * 40), 0.0)
    streams.accept(chunk("a", 3, "", final=True), 0.0)
    streams.accept(chunk("c", 0, "room again"), 0.0)  # a finished stream frees its place


def test_an_abandoned_stream_finishes_as_it_is() -> None:
    streams = ChannelStreams(StreamLimits(idle_timeout=10.0))
    streams.accept(chunk("old", 0, "half a rep"), now=0.0)
    streams.accept(chunk("new", 0, "fresh"), now=8.0)
    assert streams.expire(now=9.0) == []
    (message,) = streams.expire(now=10.0)
    assert text_of(message) == "half a rep"
    assert fields_of(message) == {"id": "old", "seq": 0, "from": 0, "final": True, "abandoned": True}
    assert [text_of(p) for p in streams.snapshot()] == ["fresh"]
    with pytest.raises(ChunkAfterFinal):
        streams.accept(chunk("old", 1, "ly"), now=11.0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"stream": "s", "text": ""}, "stream.id must be"),
        ({"stream": {"seq": 0}, "text": ""}, "stream.id must be"),
        ({"stream": {"id": "", "seq": 0}, "text": ""}, "stream.id must be"),
        ({"stream": {"id": "a b", "seq": 0}, "text": ""}, "stream.id must be"),
        ({"stream": {"id": "x" * 65, "seq": 0}, "text": ""}, "stream.id must be"),
        ({"stream": {"id": "s"}, "text": ""}, "stream.seq must be an integer"),
        ({"stream": {"id": "s", "seq": -1}, "text": ""}, "stream.seq must be an integer"),
        ({"stream": {"id": "s", "seq": "0"}, "text": ""}, "stream.seq must be an integer"),
        ({"stream": {"id": "s", "seq": 1.0}, "text": ""}, "stream.seq must be an integer"),
        ({"stream": {"id": "s", "seq": True}, "text": ""}, "stream.seq must be an integer"),
        ({"stream": {"id": "s", "seq": 10**10}, "text": ""}, "stream.seq must be an integer"),
        ({"stream": {"id": "s", "seq": 0, "final": "yes"}, "text": ""}, "stream.final must be"),
        ({"stream": {"id": "s", "seq": 0, "from": 0}, "text": ""}, "unknown field stream.from"),
        ({"stream": {"id": "s", "seq": 0, "abandoned": True}, "text": ""}, "unknown field stream.abandoned"),
        ({"stream": {"id": "s", "seq": 0}}, "string 'text'"),
        ({"stream": {"id": "s", "seq": 0}, "text": 5}, "string 'text'"),
    ],
)
def test_malformed_chunks(data: Any, message: str) -> None:
    streams = ChannelStreams()
    with pytest.raises(MalformedChunk, match=message):
        streams.accept(Publication(orjson.dumps(data)), 0.0)
    assert len(streams) == 0


def test_ordinary_publications_pass_and_history_keeps_them() -> None:
    streams = ChannelStreams()
    for data in (
        b'{"text": "hi"}',
        b'"a string"',
        b"not json at all",
        b'{"note": "a \\"stream\\" in a value"}',
        b"[1]",
    ):
        pub = Publication(data, offset=0)
        assert stream_of(pub) is None and parse_chunk(pub) is None
        outcome = streams.accept(pub, 0.0)
        assert outcome.deliver is pub and outcome.keep is pub
    assert stream_of(chunk("s", 0, "")) == "s"
    parsed = parse_chunk(chunk("s", 3, "hi", final=True, model="m"))
    assert parsed is not None and parsed.final and parsed.extras == {"model": "m"}


# ---------------------------------------------------------------- properties


@st.composite
def split_messages(draw: st.DrawFn) -> tuple[str, list[str]]:
    message = draw(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
    cuts = sorted(draw(st.lists(st.integers(0, len(message)), max_size=12)))
    bounds = [0, *cuts, len(message)]
    return message, [message[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def publish_all(streams: ChannelStreams, stream: str, parts: list[str]) -> list[Publication]:
    out = []
    for seq, part in enumerate(parts):
        out.append(streams.accept(chunk(stream, seq, part, final=seq == len(parts) - 1), 0.0))
    return [o.deliver for o in out] + [o.keep for o in out if o.keep is not None]


@given(split_messages())
@settings(max_examples=200, deadline=None)
def test_any_split_of_a_message_reassembles_to_it_and_history_keeps_it_once(
    split: tuple[str, list[str]],
) -> None:
    message, parts = split
    streams = ChannelStreams()
    outcomes = [
        streams.accept(chunk("m", seq, part, seq == len(parts) - 1), 0.0) for seq, part in enumerate(parts)
    ]
    kept = [o.keep for o in outcomes if o.keep is not None]
    assert [text_of(p) for p in kept] == [message]
    view = StreamView()
    for outcome in outcomes:
        view.feed(outcome.deliver)
    assert view.texts["m"] == message and view.gaps == view.duplicates == 0


@given(split_messages(), st.data())
@settings(max_examples=200, deadline=None)
def test_a_subscriber_joining_mid_stream_gets_the_prefix_then_the_rest(
    split: tuple[str, list[str]], data: st.DataObject
) -> None:
    message, parts = split
    join = data.draw(st.integers(0, len(parts) - 1))  # joins after this many chunks, before the final one
    # (one that joins later finds the finished message in history)
    streams = ChannelStreams()
    joiner = StreamView()
    received: list[str] = []
    for seq, part in enumerate(parts):
        if seq == join:
            for pub in streams.snapshot():  # sent first, then the live chunks
                joiner.feed(pub)
                received.append(text_of(pub))
        outcome = streams.accept(chunk("m", seq, part, seq == len(parts) - 1), 0.0)
        if seq >= join:
            joiner.feed(outcome.deliver)
            if seq < len(parts) - 1:
                received.append(text_of(outcome.deliver))
    assert "".join(received) == message[: len("".join(received))]  # prefix + rest, nothing twice
    assert joiner.texts.get("m", "") == message and joiner.gaps == 0 and joiner.duplicates == 0
    assert "m" in joiner.finished


@given(st.lists(st.tuples(st.sampled_from("abc"), st.text(max_size=3)), max_size=30), st.data())
@settings(max_examples=200, deadline=None)
def test_coalescing_per_write_changes_nothing_a_client_reassembles(
    steps: list[tuple[str, str]], data: st.DataObject
) -> None:
    """Interleaved streams and ordinary publications, cut into writes at random; each write coalesced."""
    streams = ChannelStreams()
    generation = {"a": 0, "b": 0}  # a finished stream's id is not reused: the next one is a1, a2...
    seqs: dict[str, int] = {}
    outgoing: list[Publication] = []
    for letter, text in steps:
        if letter == "c":
            outgoing.append(Publication(orjson.dumps({"plain": text}), offset=len(outgoing) + 1))
            continue
        stream = f"{letter}{generation[letter]}"
        seq = seqs.get(stream, 0)
        final = data.draw(st.integers(0, 4)) == 0
        outgoing.append(streams.accept(chunk(stream, seq, text, final), 0.0).deliver)
        seqs[stream] = seq + 1
        if final:
            generation[letter] += 1
    cuts = sorted(data.draw(st.lists(st.integers(0, len(outgoing)), max_size=6)))
    bounds = [0, *cuts, len(outgoing)]
    coalesced = [pub for a, b in zip(bounds, bounds[1:], strict=False) for pub in coalesce(outgoing[a:b])]
    plain, joined = StreamView(), StreamView()
    for pub in outgoing:
        plain.feed(pub)
    for pub in coalesced:
        joined.feed(pub)
    assert joined.texts == plain.texts and joined.finished == plain.finished
    assert joined.gaps == plain.gaps == 0 and joined.duplicates == plain.duplicates == 0
    assert len(coalesced) <= len(outgoing)
    offsets = [p.offset for p in coalesced if p.offset]
    assert offsets == sorted(offsets) == [p.offset for p in outgoing if p.offset]  # ordinary ones keep order


def test_what_only_looks_like_a_stream_is_an_ordinary_publication_everywhere() -> None:
    """Binary data (a Protobuf client's), or JSON whose "stream" is something else, mentioning "stream"."""
    odd = [
        Publication(b'\x00"stream"\xff'),
        Publication(b'{"stream": "a name", "text": 1}'),
        Publication(b'["stream"]'),
    ]
    view = StreamView()
    for pub in odd:
        view.feed(pub)
    assert view.texts == {} and view.gaps == 0
    assert coalesce([chunk("a", 0, "x"), *odd, chunk("a", 1, "y")])[1:4] == odd
    assert [stream_of(pub) for pub in odd] == [None, None, None]


def test_coalescing_joins_runs_of_chunks_and_stops_at_barriers() -> None:
    a0, a1, b0, a2 = chunk("a", 0, "x"), chunk("a", 1, "y"), chunk("b", 0, "z"), chunk("a", 2, "w")
    plain = Publication(b'{"n": 1}', offset=5)
    out = coalesce([a0, b0, a1, plain, a2])
    assert [text_of(p) if stream_of(p) else "plain" for p in out] == ["xy", "z", "plain", "w"]
    assert fields_of(out[0]) == {"id": "a", "seq": 1, "from": 0}
    assert out[2] is plain and out[3] is a2


def test_after_a_snapshot_the_chunks_it_covers_are_dropped_and_the_rest_kept() -> None:
    streams = ChannelStreams()
    for seq, text in enumerate(["a", "b"]):
        streams.accept(chunk("m", seq, text), now=0.0)
    snapshot = streams.snapshot()
    later = [chunk("m", 1, "b"), chunk("m", 2, "c"), chunk("other", 0, "x"), Publication(b'{"text":"hi"}')]
    final = streams.accept(chunk("m", 2, "c", final=True), now=0.0).deliver
    kept = after_snapshot(snapshot, [*later, final])
    assert kept == [later[1], later[2], later[3], final]
    assert after_snapshot([], later) == later
    view = StreamView()
    for pub in [*snapshot, *kept]:
        view.feed(pub)
    assert view.texts == {"m": "abc", "other": "x"} and (view.gaps, view.duplicates) == (0, 0)


def test_snapshots_of_several_holders_merge_to_the_furthest_of_each_stream() -> None:
    one, two = ChannelStreams(), ChannelStreams()
    for seq, text in enumerate("abc"):
        one.accept(chunk("m", seq, text), now=0.0)
    two.accept(chunk("m", 0, "a"), now=0.0)
    two.accept(chunk("n", 0, "z"), now=0.0)
    merged = merge_snapshots([two.snapshot(), one.snapshot()])
    assert sorted((fields_of(p)["id"], text_of(p)) for p in merged) == [("m", "abc"), ("n", "z")]


def test_next_expiry_drop_and_chunk_runs() -> None:
    streams = ChannelStreams(StreamLimits(idle_timeout=10.0))
    assert streams.next_expiry() is None
    streams.accept(chunk("m", 0, "a"), now=5.0)
    streams.accept(chunk("n", 0, "a"), now=7.0)
    assert streams.next_expiry() == 15.0
    streams.drop("m")
    assert streams.next_expiry() == 17.0 and len(streams) == 1
    with pytest.raises(ChunkOutOfOrder):
        streams.accept(chunk("m", 1, "b"), now=8.0)  # dropped: its next chunk has no stream to join
    assert chunk_run(chunk("m", 3, "x")) == "m"
    assert chunk_run(chunk("m", 3, "x", final=True)) is None
    assert chunk_run(streams.snapshot()[0]) is None  # from 0: the whole text, never joined
    assert chunk_run(Publication(b'{"text":"stream"}')) is None
