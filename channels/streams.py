"""Streaming replies: a message published token by token, as an agent writes it (sans-I/O).

A stream chunk is an ordinary publication, so every official SDK carries it unchanged. Its stream fields
are tags (Centrifuge publications carry a ``map<string, string>`` of tags; centrifuge-js hands them to the
``publication`` handler as ``ctx.tags``, centrifuge-python as ``ctx.pub.tags``); its text is in the data::

    tags  {"stream": "<id>", "stream.seq": "<n>", "stream.final": "true"}      (final only on the last)
    data  {"text": "<this chunk's text>", ...}

- ``stream``: the stream's id, chosen by the publisher (a reply's message id): 1 to 64 of
  ``A-Z a-z 0-9 . _ : -``. Other tags are the application's and travel along.
- ``stream.seq``: the chunk's number, in decimal: 0 for the first, then each one more than the last.
- ``stream.final``: ``"true"`` on the last chunk (its text may be empty); absent (or ``"false"``) before.
- ``data``: a JSON object; ``text`` (a string) is the chunk's text; other members (``reply_to``,
  ``model``, ``finish_reason``...) are kept, a later chunk's value replacing an earlier one's.

What the hub sends out (``ChannelStreams``) is one of three kinds of stream publication, told apart by
the ``stream.from`` tag: a chunk as published (no ``stream.from``: it covers ``stream.seq`` alone); a run
of chunks coalesced into one (``coalesce``; ``stream.from`` is its first seq, ``stream.seq`` its last,
its text theirs joined); the whole text so far (``stream.from`` is ``"0"``): what a subscriber that joins
or recovers mid-stream is sent first (``snapshot``), and, with ``stream.final``, the finished message
that replaces the last chunk and is the one publication history keeps. A client reassembles a stream so
(``StreamView``): a publication from 0 replaces what it had; one that starts right after its last seq is
appended; one that ends at or before its last seq is a duplicate and ignored.

Policies, per channel (``StreamLimits``):
- chunks of a stream come in order: the first is seq 0, each next one is the last + 1; a repeated or
  skipped seq is refused (``ChunkOutOfOrder``), so is any chunk after the final one (``ChunkAfterFinal``;
  the last ``remember_finished`` finished ids are remembered);
- bounded memory: at most ``max_open`` streams open at once (``TooManyStreams``), a chunk's data at most
  ``max_chunk_bytes``, a message's text at most ``max_message_bytes`` (``StreamTooLarge``); a stream with
  no chunk for ``idle_timeout`` seconds is abandoned (``expire``): it finishes as it is, marked
  ``stream.abandoned``, so history keeps what people saw;
- history keeps each message once, finished; the chunks themselves are live only.

Errors (under ``ChannelError``)::

    StreamRejected          a chunk was refused; nothing changed
     +-- MalformedChunk     stream tags or data not as above
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
SEQ = "stream.seq"
FINAL = "stream.final"
FROM = "stream.from"
ABANDONED = "stream.abandoned"
STREAM_TAGS = frozenset({STREAM, SEQ, FINAL, FROM, ABANDONED})

_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_SEQ = re.compile(r"0|[1-9][0-9]{0,8}")


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
    """The stream a publication belongs to (None: an ordinary publication). Cheap: looks at tags only."""
    return pub.tags.get(STREAM) if pub.tags else None


def parse_chunk(pub: Publication, limits: StreamLimits = StreamLimits()) -> Chunk:
    """The stream fields of a chunk as published (``MalformedChunk``, ``StreamTooLarge``)."""
    tags = pub.tags or {}
    stream = tags.get(STREAM, "")
    if not _ID.fullmatch(stream):
        raise MalformedChunk("stream id must be 1 to 64 of A-Z a-z 0-9 . _ : -")
    seq = tags.get(SEQ)
    if seq is None or not _SEQ.fullmatch(seq):
        raise MalformedChunk(f"stream {stream}: {SEQ} must be a decimal number")
    final = tags.get(FINAL, "false")
    if final not in ("true", "false"):
        raise MalformedChunk(f"stream {stream}: {FINAL} must be 'true' or 'false'")
    if FROM in tags or ABANDONED in tags:
        raise MalformedChunk(f"stream {stream}: {FROM} and {ABANDONED} are set by the hub")
    if len(pub.data) > limits.max_chunk_bytes:
        raise StreamTooLarge(f"stream {stream}: a chunk is at most {limits.max_chunk_bytes} bytes")
    try:
        data = orjson.loads(pub.data)
    except orjson.JSONDecodeError:
        raise MalformedChunk(f"stream {stream}: data must be a JSON object") from None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise MalformedChunk(f"stream {stream}: data must be a JSON object with a string 'text'")
    text = data.pop("text")
    return Chunk(stream, int(seq), final == "true", text, data)


@dataclass(slots=True)
class _Open:
    seq: int
    parts: list[str]
    size: int
    """UTF-8 bytes of the text so far."""
    extras: dict[str, Any]
    tags: dict[str, str]
    """The application's tags (the latest chunk's)."""
    pub: Publication
    """The latest chunk (its client info is the publisher's)."""
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
    """What history keeps: the finished message (the same publication as ``deliver``), once."""


@dataclass(slots=True)
class ChannelStreams:
    """The open streams of one channel, and the ids of those that finished lately."""

    limits: StreamLimits = field(default_factory=StreamLimits)
    _open: dict[str, _Open] = field(default_factory=dict)
    _finished: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._open)

    def accept(self, pub: Publication, now: float) -> Outcome:
        """Take a published chunk; raise ``StreamRejected`` (nothing changed) or say what goes where."""
        chunk = parse_chunk(pub, self.limits)
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
        tags = {k: v for k, v in (pub.tags or {}).items() if k not in STREAM_TAGS}
        if current is None:
            current = _Open(chunk.seq, [], 0, {}, tags, pub, now)
            self._open[stream] = current
        current.seq = chunk.seq
        current.parts.append(chunk.text)
        current.size = size
        current.extras = extras
        current.tags = tags
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

    def _finish(self, stream: str, abandoned: bool = False) -> Publication:
        state = self._open.pop(stream)
        message = self._whole(stream, state, final=True, abandoned=abandoned)
        self._finished[stream] = None
        while len(self._finished) > self.limits.remember_finished:
            self._finished.popitem(last=False)
        return message

    @staticmethod
    def _whole(stream: str, state: _Open, final: bool = False, abandoned: bool = False) -> Publication:
        tags = {**state.tags, STREAM: stream, SEQ: str(state.seq), FROM: "0"}
        if final:
            tags[FINAL] = "true"
        if abandoned:
            tags[ABANDONED] = "true"
        data = orjson.dumps({**state.extras, "text": state.text()})
        return Publication(data, info=state.pub.info, tags=tags, time=state.pub.time)


def coalesce(pubs: list[Publication]) -> list[Publication]:
    """One write's publications to one connection, with runs of chunks of a stream joined into one.

    A chunk joins the latest one of its stream when only chunks of other streams lie between them (their
    order among streams does not matter); anything else (an ordinary publication, a whole message, a
    snapshot) is a barrier that keeps its place, so offsets still only grow.
    """
    out: list[Publication] = []
    runs: dict[str, int] = {}
    for pub in pubs:
        stream = stream_of(pub)
        tags = pub.tags or {}
        if stream is None or tags.get(FROM) == "0" or tags.get(FINAL) == "true" or SEQ not in tags:
            out.append(pub)
            runs.clear()
            continue
        at = runs.get(stream)
        if at is None:
            runs[stream] = len(out)
            out.append(pub)
            continue
        out[at] = _join(out[at], pub)
    return out


def _join(first: Publication, second: Publication) -> Publication:
    """Two adjacent chunks of a stream as one (the second's tags and extras win)."""
    before = orjson.loads(first.data)
    after = orjson.loads(second.data)
    data = {**before, **after, "text": before["text"] + after["text"]}
    tags = {**(second.tags or {}), FROM: (first.tags or {}).get(FROM, (first.tags or {})[SEQ])}
    return Publication(orjson.dumps(data), info=second.info, tags=tags, time=second.time)


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
        stream = stream_of(pub)
        if stream is None:
            return
        tags = pub.tags or {}
        seq = int(tags[SEQ])
        first = int(tags.get(FROM, seq))
        text = orjson.loads(pub.data)["text"]
        if stream in self.seqs and (seq < self.seqs[stream] or (seq == self.seqs[stream] and first > 0)):
            self.duplicates += 1  # already seen (a whole text from 0 at the same seq may add the final mark)
            return
        if first == 0:
            self.texts[stream] = text
        elif stream in self.seqs and first == self.seqs[stream] + 1:
            self.texts[stream] += text
        else:
            self.gaps += 1
            return
        self.seqs[stream] = seq
        if tags.get(FINAL) == "true":
            self.finished.add(stream)
