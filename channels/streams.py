"""Streaming replies: a message published token by token, as an agent writes it (sans-I/O).

A stream chunk is an ordinary publication, so every official SDK publishes and receives it unchanged. Its
stream fields live in the data, the one field a client's publish carries (a Centrifuge ``PublishRequest``
has only a channel and data; tags can be set by the server API alone)::

    data  {"stream": {"id": "<id>", "seq": <n>, "final": true}, "text": "<this chunk's text>", ...}

- ``stream.id``: the stream's id, chosen by the publisher (a reply's message id): 1 to 64 of
  ``A-Z a-z 0-9 . _ : -``.
- ``stream.seq``: the chunk's number: 0 for the first, then each one more than the last.
- ``stream.final``: true on the last chunk (its text may be empty); absent or false before.
- ``text``: the chunk's text. Other members (``reply_to``, ``model``, ``finish_reason``...) are kept, a
  later chunk's value replacing an earlier one's. A publication whose data has no ``stream`` member is
  not a stream chunk; the publication's tags (server API) are the application's and travel along.

What the hub sends out (``ChannelStreams``) is one of three kinds of stream publication, told apart by
``stream.from``: a chunk as published (no ``from``: it covers ``seq`` alone); a run of chunks coalesced
into one (``coalesce``; ``from`` is its first seq, ``seq`` its last, its text theirs joined); the whole
text so far (``from`` is 0): what a subscriber that joins or recovers mid-stream is sent first
(``snapshot``), and, marked ``final``, the finished message, which replaces the last chunk and is the one
publication history keeps. A client reassembles a stream so (``StreamView``): a publication from 0
replaces what it had; one that starts right after its last seq is appended; one that ends before its
last seq (or at it, not from 0) is a duplicate and ignored.

Policies, per channel (``StreamLimits``):
- chunks of a stream come in order: the first is seq 0, each next one is the last + 1; a repeated or
  skipped seq is refused (``ChunkOutOfOrder``), so is any chunk after the final one (``ChunkAfterFinal``;
  the last ``remember_finished`` finished ids are remembered);
- bounded memory: at most ``max_open`` streams open at once (``TooManyStreams``), a chunk's data at most
  ``max_chunk_bytes`` (and so the other members kept of a stream), a message's text at most
  ``max_message_bytes`` (``StreamTooLarge``); a stream with no chunk for ``idle_timeout`` seconds is
  abandoned (``expire``): it finishes as it is, marked ``abandoned``, so history keeps what people saw;
- history keeps each message once, finished; the chunks themselves are live only.

Errors (under ``ChannelError``)::

    StreamRejected          a chunk was refused; nothing changed
     +-- MalformedChunk     stream fields or data not as above
     +-- ChunkOutOfOrder    not the next seq of its stream
     +-- ChunkAfterFinal    its stream already finished
     +-- StreamTooLarge     the chunk, or the message it would make, is over its bound
     +-- TooManyStreams     the channel has ``max_open`` streams open
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

from channels.errors import ChannelError
from channels.publication import Publication

STREAM = "stream"
TEXT = "text"
MAX_SEQ = 10**9

_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class StreamRejected(ChannelError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedChunk(StreamRejected):
    pass


class ChunkOutOfOrder(StreamRejected):
    pass


class ChunkAfterFinal(StreamRejected):
    pass


class StreamTooLarge(StreamRejected):
    pass


class TooManyStreams(StreamRejected):
    pass


@dataclass(frozen=True, slots=True)
class StreamLimits:
    max_open: int = 8
    max_chunk_bytes: int = 16 * 1024
    max_message_bytes: int = 256 * 1024
    idle_timeout: float = 120.0
    remember_finished: int = 64


@dataclass(frozen=True, slots=True)
class Chunk:
    stream: str
    seq: int
    final: bool
    text: str
    extras: dict[str, Any]
    """The data's members other than ``text``."""


def stream_of(pub: Publication) -> str | None:
    """The id of the stream a publication belongs to; None for an ordinary publication (or a chunk whose
    stream field is malformed). Cheap for ordinary publications: their bytes are not parsed."""
    data = _with_stream(pub)
    fields = data[STREAM] if data is not None else None
    stream = fields.get("id") if isinstance(fields, dict) else None
    return stream if isinstance(stream, str) else None


def parse_chunk(pub: Publication, limits: StreamLimits = StreamLimits()) -> Chunk | None:
    """The stream fields of a chunk as published; None for an ordinary publication (its data has no
    ``stream`` member). Raises ``MalformedChunk`` or ``StreamTooLarge``."""
    data = _with_stream(pub)
    if data is None:
        return None
    fields = data.pop(STREAM)
    if (
        not isinstance(fields, dict)
        or not isinstance(fields.get("id"), str)
        or not _ID.fullmatch(fields["id"])
    ):
        raise MalformedChunk("stream.id must be 1 to 64 of A-Z a-z 0-9 . _ : -")
    stream = fields["id"]
    unknown = set(fields) - {"id", "seq", "final"}
    if unknown:
        raise MalformedChunk(
            f"stream {stream}: unknown field stream.{sorted(unknown)[0]} (from, abandoned: the hub's)"
        )
    seq = fields.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise MalformedChunk(f"stream {stream}: stream.seq must be an integer from 0 to {MAX_SEQ}")
    final = fields.get("final", False)
    if not isinstance(final, bool):
        raise MalformedChunk(f"stream {stream}: stream.final must be true or false")
    if len(pub.data) > limits.max_chunk_bytes:
        raise StreamTooLarge(f"stream {stream}: a chunk is at most {limits.max_chunk_bytes} bytes")
    text = data.pop(TEXT, None)
    if not isinstance(text, str):
        raise MalformedChunk(f"stream {stream}: data must have a string 'text'")
    return Chunk(stream, seq, final, text, data)


@dataclass(slots=True)
class _Open:
    seq: int
    parts: list[str]
    size: int
    """UTF-8 bytes of the text so far."""
    extras: dict[str, Any]
    pub: Publication
    """The latest chunk (its client info is the publisher's; its tags the application's)."""
    touched: float

    def text(self) -> str:
        if len(self.parts) > 1:
            self.parts = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""


@dataclass(frozen=True, slots=True)
class Outcome:
    deliver: Publication
    """What live subscribers get now: the chunk as published, or on the final chunk the whole message."""
    keep: Publication | None = None
    """What history keeps: the finished message (the same publication as ``deliver``), once; an ordinary
    publication itself."""


@dataclass(slots=True)
class ChannelStreams:
    """The open streams of one channel, and the ids of those that finished lately."""

    limits: StreamLimits = field(default_factory=StreamLimits)
    _open: dict[str, _Open] = field(default_factory=dict)
    _finished: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._open)

    def accept(self, pub: Publication, now: float) -> Outcome:
        """Take a publication of the channel: raise ``StreamRejected`` for a refused chunk (nothing
        changed), or say what goes out live and what history keeps. An ordinary publication passes."""
        chunk = parse_chunk(pub, self.limits)
        if chunk is None:
            return Outcome(pub, pub)
        stream = chunk.stream
        if stream in self._finished:
            raise ChunkAfterFinal(f"stream {stream} has finished")
        current = self._open.get(stream)
        expected = 0 if current is None else current.seq + 1
        if chunk.seq != expected:
            raise ChunkOutOfOrder(f"stream {stream}: chunk {chunk.seq} where {expected} was next")
        if current is None and len(self._open) >= self.limits.max_open:
            raise TooManyStreams(f"{self.limits.max_open} streams are open in this channel")
        size = (0 if current is None else current.size) + len(chunk.text.encode())
        if size > self.limits.max_message_bytes:
            raise StreamTooLarge(
                f"stream {stream}: a message is at most {self.limits.max_message_bytes} bytes"
            )
        extras = {} if current is None else current.extras
        if chunk.extras:
            extras = {**extras, **chunk.extras}
            if len(orjson.dumps(extras)) > self.limits.max_chunk_bytes:
                raise StreamTooLarge(
                    f"stream {stream}: its other data is at most {self.limits.max_chunk_bytes} bytes"
                )
        if current is None:
            current = _Open(chunk.seq, [], 0, {}, pub, now)
            self._open[stream] = current
        current.seq = chunk.seq
        current.parts.append(chunk.text)
        current.size = size
        current.extras = extras
        current.pub = pub
        current.touched = now
        if not chunk.final:
            return Outcome(pub)
        message = self._finish(stream)
        return Outcome(message, message)

    def snapshot(self) -> list[Publication]:
        """The text so far of every open stream, one publication each, oldest stream first: what a
        subscriber that joins (or recovers) now is sent before the chunks that follow."""
        return [self._whole(stream, state) for stream, state in self._open.items()]

    def expire(self, now: float) -> list[Publication]:
        """Finish the streams idle for ``idle_timeout`` as they are (marked abandoned): for live
        subscribers and for history, like a final chunk."""
        idle = [s for s, state in self._open.items() if now - state.touched >= self.limits.idle_timeout]
        return [self._finish(stream, abandoned=True) for stream in idle]

    def next_expiry(self) -> float | None:
        """When the stream idle longest will be abandoned (``expire``); None while none is open."""
        if not self._open:
            return None
        return min(state.touched for state in self._open.values()) + self.limits.idle_timeout

    def drop(self, stream: str) -> None:
        """Forget an open stream without finishing it (its latest chunk could not be published): nothing
        is kept of it, and a later chunk of it is refused as out of order."""
        self._open.pop(stream, None)

    def _finish(self, stream: str, abandoned: bool = False) -> Publication:
        state = self._open.pop(stream)
        message = self._whole(stream, state, final=True, abandoned=abandoned)
        self._finished[stream] = None
        while len(self._finished) > self.limits.remember_finished:
            self._finished.popitem(last=False)
        return message

    @staticmethod
    def _whole(stream: str, state: _Open, final: bool = False, abandoned: bool = False) -> Publication:
        fields: dict[str, Any] = {"id": stream, "seq": state.seq, "from": 0}
        if final:
            fields["final"] = True
        if abandoned:
            fields["abandoned"] = True
        data = orjson.dumps({**state.extras, STREAM: fields, TEXT: state.text()})
        pub = state.pub
        return Publication(data, info=pub.info, tags=pub.tags, time=pub.time)


def coalesce(pubs: list[Publication]) -> list[Publication]:
    """One write's publications to one connection, with runs of chunks of a stream joined into one.

    A chunk joins the latest one of its stream when only chunks of other streams lie between them (their
    order among streams does not matter); anything else (an ordinary publication, a whole message, a
    snapshot) is a barrier that keeps its place, so offsets still only grow.
    """
    out: list[Publication] = []
    parsed: dict[int, dict[str, Any]] = {}
    runs: dict[str, int] = {}
    for pub in pubs:
        data = _stream_data(pub)
        fields = data[STREAM] if data is not None else None
        if data is None or fields is None or fields.get("from") == 0 or fields.get("final"):
            out.append(pub)
            runs.clear()
            continue
        at = runs.get(fields["id"])
        if at is None:
            runs[fields["id"]] = len(out)
            parsed[len(out)] = data
            out.append(pub)
            continue
        before = parsed[at]
        first = before[STREAM].get("from", before[STREAM]["seq"])
        joined = {**before, **data, STREAM: {**fields, "from": first}, TEXT: before[TEXT] + data[TEXT]}
        parsed[at] = joined
        out[at] = Publication(orjson.dumps(joined), info=pub.info, tags=pub.tags, time=pub.time)
    return out


def after_snapshot(snapshot: list[Publication], pubs: list[Publication]) -> list[Publication]:
    """``pubs`` (publications that arrived while a subscription was set up) without the chunks that
    ``snapshot`` (the text so far of each open stream, sent before them) already covers: a chunk or run of
    a stream whose last seq is at or before the snapshot's. Whole messages (from 0) and everything else
    pass, so a subscriber gets each part of a text once."""
    if not snapshot:
        return pubs
    covered: dict[str, int] = {}
    for pub in snapshot:
        data = _stream_data(pub)
        if data is not None:
            covered[data[STREAM]["id"]] = data[STREAM]["seq"]
    out = []
    for pub in pubs:
        data = _stream_data(pub)
        if data is not None and data[STREAM].get("from") != 0:
            seen = covered.get(data[STREAM]["id"])
            if seen is not None and data[STREAM]["seq"] <= seen:
                continue
        out.append(pub)
    return out


def merge_snapshots(snapshots: list[list[Publication]]) -> list[Publication]:
    """The snapshots several holders answered for one channel, as one: each stream once, the one that
    has got furthest (the highest seq) where two hold it."""
    best: dict[str, tuple[int, Publication]] = {}
    for snapshot in snapshots:
        for pub in snapshot:
            data = _stream_data(pub)
            if data is None:
                continue
            stream, seq = data[STREAM]["id"], data[STREAM]["seq"]
            if stream not in best or best[stream][0] < seq:
                best[stream] = (seq, pub)
    return [pub for _, pub in best.values()]


def chunk_run(pub: Publication) -> str | None:
    """The stream id of a chunk as published (no ``from``, not final), which a writer may join with the
    chunk of the same stream queued before it (``coalesce``); None for any other publication. Cheap for
    ordinary publications (their bytes are not parsed)."""
    data = _stream_data(pub)
    if data is None:
        return None
    fields = data[STREAM]
    if "from" in fields or fields.get("final"):
        return None
    stream: str = fields["id"]
    return stream


def _with_stream(pub: Publication) -> dict[str, Any] | None:
    """The data as a JSON object when it has a ``stream`` member; None otherwise (never raises). Data that
    does not mention "stream" is not parsed."""
    if b'"stream"' not in pub.data:
        return None
    try:
        data = orjson.loads(pub.data)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and STREAM in data else None


def _stream_data(pub: Publication) -> dict[str, Any] | None:
    """The data of a stream publication as the hub sends it out (stream id, seq, text); None otherwise."""
    data = _with_stream(pub)
    if data is None:
        return None
    fields = data[STREAM]
    if not isinstance(fields, dict) or not isinstance(fields.get("id"), str):
        return None
    return data if isinstance(fields.get("seq"), int) and isinstance(data.get(TEXT), str) else None


@dataclass(slots=True)
class StreamView:
    """A subscriber's view of the streams of a channel, reassembled from what it receives (the rule in
    the module docstring; what a client does, here for tests and for Python agents that read streams)."""

    texts: dict[str, str] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    gaps: int = 0
    """Publications that could not be placed (a chunk whose start this view never saw)."""
    duplicates: int = 0

    def feed(self, pub: Publication) -> None:
        data = _stream_data(pub)
        if data is None:
            return
        fields = data[STREAM]
        stream, seq = fields["id"], fields["seq"]
        first = fields.get("from", seq)
        known = self.seqs.get(stream)
        if known is not None and (seq < known or (seq == known and first > 0)):
            self.duplicates += 1  # already seen (a whole text from 0 at the same seq may add the final mark)
            return
        if first == 0:
            self.texts[stream] = data[TEXT]
        elif known is not None and first == known + 1:
            self.texts[stream] += data[TEXT]
        else:
            self.gaps += 1
            return
        self.seqs[stream] = seq
        if fields.get("final"):
            self.finished.add(stream)
