"""Fuzzing the client session (``Client.handle_frame``) with structured-but-wrong commands, in JSON and in
Protobuf, against a real Node (MemoryBroker, MemoryPresence, the suite's namespaces, an RPC hook).

The contract, for every frame whatever it holds:

- ``handle_frame`` returns (it never raises, never hangs);
- the session answers with the protocol: replies with error codes 101-112 (never 100, "internal"), or a
  close with a disconnect code (never 3004, "internal server error"); nothing is logged at ERROR (a
  traceback is a crash the node survived, not an answer);
- every byte written is a well-formed reply of the connection's protocol;
- once the session ends the node holds nothing of it; and the node stays up: one subscriber connected
  before the first example still receives a publication made by a new connection after the last.

The node lives across the examples (an event loop of its own, driven by each example), so the state a
frame leaves behind meets the frames of later examples.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Coroutine, Iterator
from typing import Any

import jwt
import orjson
import pytest
from hypothesis import currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from channels.broker_memory import MemoryBroker
from hub import codec_protobuf, wire
from hub.auth import mint_token
from hub.hooks import Hooks, RPCContext
from hub.node import Node
from presence.presence_memory import MemoryPresence
from tests.conftest import SECRET, TIMEOUT
from tests.conftest import test_config as hub_config
from tests.fuzz.strategies import (
    error_log,
    examples,
    huge_ints,
    json_object_text,
    json_texts,
    json_values,
    mostly,
    nested_text,
    sometimes_mutated,
    valid_json_texts,
)
from tests.fuzz.test_auth import signed
from tests.fuzz.test_codec_protobuf import frame as pb_frame
from tests.fuzz.test_codec_protobuf import message as pb_message

PROTOCOL_ERRORS = set(range(101, 113))
"""Reply codes a bad command may get (100 is "internal server error": a crash, never an answer)."""
PROTOCOL_CLOSES = {1009, 3000, 3005, 3008, 3010, 3013, 3500, 3501, 3503, 3504, 3505, 3507, 3508, 3509}
"""Close codes bad input may get (3004 is "internal server error")."""


class Transport:
    """Keeps what the session writes, in the connection's format; the close code."""

    name = "fuzz"

    def __init__(self, fmt: int) -> None:
        self.fmt = fmt
        self.messages: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def write_messages(self, messages: list[bytes]) -> int:
        assert self.closed is None, "written after the close"
        self.messages.extend(messages)
        return 0

    def close(self, code: int, reason: str) -> None:
        self.closed = self.closed or (code, reason)

    def replies(self) -> list[dict[str, Any]]:
        """Every message written, read back strictly (a malformed one fails the test)."""
        if self.fmt == wire.JSON:
            return [orjson.loads(line) for m in self.messages for line in m.split(b"\n")]
        out: list[dict[str, Any]] = []
        for m in self.messages:
            pos = 0
            while pos < len(m):
                size, pos = codec_protobuf._varint(m, pos, len(m))
                reply: dict[str, Any] = {}
                codec_protobuf._parse(m, pos, pos + size, codec_protobuf._REPLY, reply)
                out.append(reply)
                pos += size
        return out


def _echo(ctx: RPCContext) -> Coroutine[Any, Any, Any]:
    async def run() -> Any:
        return ctx.data

    return run()


def make_node() -> Node:
    hooks = Hooks()
    hooks.rpc["echo"] = _echo
    cfg = dataclasses.replace(hub_config(), node_name="fuzz", client_channel_limit=8)
    return Node(cfg, MemoryBroker(), MemoryPresence(), hooks)


# ---------------------------------------------------------------- commands, right shape and wrong content

CHANNELS = [
    "news",
    "chat:room",
    "locked:x",
    "nohist:x",
    "personal:inbox#alice",
    "personal:inbox#bob,alice",
    "$private",
    "nope:x",
    "",
    "a" * 256,
    "ch\x00an",
    "chat:",
    ":x",
    "#",
]
channels = st.sampled_from(CHANNELS).map(json.dumps) | valid_json_texts


@st.composite
def tokens(draw: st.DrawFn) -> str:
    """Connection and subscription tokens: good, expired, badly signed, with claims of every type."""
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return mint_token(
            SECRET, draw(st.sampled_from(["alice", "bob", ""])), ttl=draw(st.sampled_from([None, 60]))
        )
    if kind == 1:
        return mint_token(SECRET, "alice", channel=draw(st.sampled_from(CHANNELS)), ttl=60)
    if kind == 2:  # well signed, claims of any type and value
        claims = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "sub": json_values,
                    "exp": json_values | st.sampled_from([float("inf"), float("nan"), 1e300, 2**70]),
                    "iat": json_values,
                    "nbf": json_values,
                    "info": json_values,
                    "channels": st.lists(st.sampled_from(CHANNELS)) | json_values,
                    "channel": json_values,
                    "tenant": json_values,
                },
            )
        )
        return jwt.encode(claims, SECRET, algorithm="HS256")
    if kind == 3:  # someone else's key, or no signature at all
        return jwt.encode({"sub": "alice"}, "another-secret-of-at-least-32-bytes!!", algorithm="HS256")
    return draw(st.text(max_size=40) | st.sampled_from(["a.b.c", "..", "eyJ.eyJ.x", "e30.e30."]))


def _text(value: Any) -> str:
    return json.dumps(value)


def right(value: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A field's JSON text: mostly of the right type, else any JSON at all."""
    return mostly(value, valid_json_texts)


flags = right(st.just("true"))
PARAMS: dict[str, st.SearchStrategy[str]] = {
    "channel": right(st.sampled_from(CHANNELS).map(_text)),
    "token": mostly(tokens().map(_text), valid_json_texts, 9),
    "data": valid_json_texts,
    "name": valid_json_texts,
    "version": valid_json_texts,
    "subs": right(st.dictionaries(st.sampled_from(CHANNELS), json_values, max_size=3).map(_text)),
    "recover": flags,
    "offset": right((huge_ints | st.integers(-5, 5)).map(_text)),
    "epoch": right(st.text(max_size=8).map(_text)),
    "positioned": flags,
    "recoverable": flags,
    "join_leave": flags,
    "flag": right((huge_ints | st.integers(0, 7)).map(_text)),
    "limit": right((huge_ints | st.integers(-2, 400)).map(_text)),
    "since": right(
        st.fixed_dictionaries({}, optional={"offset": huge_ints, "epoch": json_values}).map(_text)
    ),
    "reverse": flags,
    "method": right(st.sampled_from(["echo", "missing", ""]).map(_text)),
}
FIELDS = {
    "connect": ["token", "data", "subs", "name", "version"],
    "subscribe": ["channel", "token", "recover", "offset", "epoch", "positioned", "recoverable", "join_leave"]
    + ["flag", "data"],
    "unsubscribe": ["channel"],
    "publish": ["channel", "data"],
    "presence": ["channel"],
    "presence_stats": ["channel"],
    "history": ["channel", "limit", "since", "reverse"],
    "rpc": ["method", "data"],
    "send": ["data"],
    "refresh": ["token"],
    "sub_refresh": ["channel", "token"],
    "frobnicate": ["channel"],
}
"""The fields each method reads, the one it needs most first (a field of another method may come too)."""

ids = mostly(
    st.integers(1, 2**32 - 1).map(_text),
    st.sampled_from(["0", "-1", "true", '"1"', "1.5", "18446744073709551616", "null"]),
    9,
)


@st.composite
def json_command(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(list(FIELDS)))
    first, *rest = FIELDS[method]
    names = [first] if draw(st.integers(0, 9)) else []  # the field the method needs most
    names += draw(st.lists(st.sampled_from(rest), unique=True, max_size=3)) if rest else []
    names += draw(st.lists(st.sampled_from(list(PARAMS)), max_size=1))
    params = json_object_text({name: draw(PARAMS[name]) for name in names})
    body = draw(mostly(st.just(params), json_texts, 9))
    return json_object_text({"id": draw(ids), method: body}).encode()


json_frames = st.lists(json_command(), min_size=1, max_size=3).map(b"\n".join).flatmap(sometimes_mutated)


def connect_frame(fmt: int, token: str) -> bytes:
    if fmt == wire.JSON:
        return orjson.dumps({"id": 1, "connect": {"token": token} if token else {}})
    body = codec_protobuf._encode(codec_protobuf._COMMAND, {"id": 1, "connect": {"token": token}})
    return pb_frame([body])


def protobuf_command(body: bytes) -> bytes:
    """A drawn Command with an id up front, so that more of them get past the id check."""
    return b"\x08\x02" + body


protobuf_frames = st.lists(pb_message("Command").map(protobuf_command), min_size=1, max_size=3).map(pb_frame)
protobuf_frames = protobuf_frames.flatmap(sometimes_mutated)


# ---------------------------------------------------------------- the harness


def note(outcome: str) -> None:
    """Count an outcome in hypothesis' statistics (``--hypothesis-show-statistics``): how deep it got."""
    if currently_in_test_context():
        event(outcome)


class Hub:
    """A node in a loop of its own, and one subscriber that must stay served throughout."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.node = make_node()
        self.run(self.node.start())
        self.witness = Transport(wire.JSON)
        self.witness_client = self.node.new_session(self.witness, scope={})
        self.run(self.witness_client.handle_frame(connect_frame(wire.JSON, "")))
        self.run(self.witness_client.handle_frame(b'{"id":2,"subscribe":{"channel":"news"}}'))
        self.sessions = 0

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))

    def pong(self) -> None:
        """Answer the node's ping as a live client does: a long run outlasts ``client_ping_interval``, and
        the node closes a witness that never answers with 3012."""
        if self.witness_client.awaiting_pong:
            self.run(self.witness_client.handle_frame(b"{}"))

    def frames(self, fmt: int, before: list[bytes], frames: list[bytes]) -> None:
        """One session: ``before`` (a good connect, or nothing), then ``frames``; check the contract."""
        self.pong()
        transport = Transport(fmt)
        node = self.node
        with error_log() as errors:
            client = node.new_session(transport, scope={})
            for data in [*before, *frames]:
                self.run(client.handle_frame(data))  # never raises, never hangs (wait_for)
                node.scheduler.flush()
            self.run(node.end_session(client))
            node.scheduler.flush()
            assert errors.take() == []
        if transport.closed is not None:
            assert transport.closed[0] in PROTOCOL_CLOSES, transport.closed
        note(f"closed {transport.closed[0]}" if transport.closed else "open")
        for reply in transport.replies():
            error = reply.get("error")
            if error is not None:
                assert error.get("code") in PROTOCOL_ERRORS, reply
            note(f"error {error.get('code')}" if error is not None else f"reply {sorted(reply)}")
        assert client.id not in node.registry.clients and client not in node.sessions
        assert all(client not in subs for subs in node.registry.channels.values())
        self.sessions += 1

    def still_serving(self) -> None:
        """A new connection publishes; the witness, subscribed before every example, receives it."""
        marker = f"after {self.sessions} sessions"
        publisher = Transport(wire.JSON)
        client = self.node.new_session(publisher, scope={})
        self.run(client.handle_frame(connect_frame(wire.JSON, "")))
        publish = {"id": 2, "publish": {"channel": "news", "data": {"marker": marker}}}
        self.run(client.handle_frame(orjson.dumps(publish)))
        self.node.scheduler.flush()
        assert {"id": 2, "publish": {}} in publisher.replies()
        pubs = [r["push"]["pub"]["data"] for r in self.witness.replies() if "pub" in r.get("push", {})]
        assert pubs[-1] == {"marker": marker}
        assert self.witness.closed is None

    def close(self) -> None:
        self.run(self.node.end_session(self.witness_client))
        self.run(self.node.stop())
        self.loop.close()


@pytest.fixture
def hub() -> Iterator[Hub]:
    running = Hub()
    try:
        yield running
    finally:
        running.close()


@st.composite
def json_connect(draw: st.DrawFn) -> bytes:
    """A connect command of fuzzed fields (tokens above all), as the first frame of a connection."""
    names = draw(st.lists(st.sampled_from(FIELDS["connect"]), unique=True))
    params = json_object_text({name: draw(PARAMS[name]) for name in names})
    return json_object_text({"id": draw(ids), "connect": params}).encode()


def openings(fmt: int) -> st.SearchStrategy[list[bytes]]:
    """What a connection sends before the fuzzed frames: a good connect (anonymous or alice's), a fuzzed
    one (JSON only), or nothing (then every command but connect is refused with 3501)."""
    good = st.sampled_from(["alice", ""]).map(
        lambda who: [connect_frame(fmt, mint_token(SECRET, who) if who else "")]
    )
    fuzzed = json_connect().map(lambda c: [c]) if fmt == wire.JSON else st.just([])
    return st.one_of(good, good, fuzzed, st.just([]))


def test_json_commands(hub: Hub) -> None:
    @settings(max_examples=examples(120))
    @given(openings(wire.JSON), st.lists(json_frames, min_size=1, max_size=3))
    def property(opening: list[bytes], frames: list[bytes]) -> None:
        hub.frames(wire.JSON, opening, frames)

    property()
    hub.still_serving()


def test_json_commands_as_text(hub: Hub) -> None:
    """A WebSocket text frame arrives as str: the same commands, and text that was never UTF-8."""

    @settings(max_examples=examples(50))
    @given(openings(wire.JSON), json_frames)
    def property(opening: list[bytes], frame: bytes) -> None:
        hub.frames(wire.JSON, opening, [frame.decode(errors="surrogateescape")])  # type: ignore[list-item]

    property()
    hub.still_serving()


def test_protobuf_commands(hub: Hub) -> None:
    @settings(max_examples=examples(120))
    @given(openings(wire.PROTOBUF), st.lists(protobuf_frames, min_size=1, max_size=3))
    def property(opening: list[bytes], frames: list[bytes]) -> None:
        hub.frames(wire.PROTOBUF, opening, frames)

    property()
    hub.still_serving()


# ---------------------------------------------------------------- findings, kept as regression tests

FINDINGS = [
    # An echo RPC handed back data nested past what orjson writes: "rpc crashed", a traceback and 100.
    b'{"id":2,"rpc":{"method":"echo","data":' + nested_text(300).encode() + b"}}",
    # A connect's name nested past Python's recursion limit: str() raised RecursionError ("connect crashed").
    b'{"id":1,"connect":{"name":' + nested_text(1_000).encode() + b"}}",
    b'{"id":1,"connect":{"version":' + nested_text(1_020).encode() + b"}}",
    # Tokens whose exp is not a finite number, whose info cannot be written back, whose alg is no string:
    # OverflowError, ValueError, TypeError from the token check ("connect crashed").
    *(
        orjson.dumps({"id": 1, "connect": {"token": signed(header, payload)}})
        for header, payload in [
            ('{"alg":"HS256"}', '{"sub":"alice","exp":Infinity}'),
            ('{"alg":"HS256"}', '{"sub":"alice","exp":NaN}'),
            ('{"alg":"HS256"}', '{"sub":"alice","info":' + nested_text(300) + "}"),
            ('{"alg":"HS256"}', '{"sub":"alice","info":' + str(2**70) + "}"),
            ('{"alg":["HS256"]}', '{"sub":"alice"}'),
        ]
    ),
]


@pytest.mark.parametrize("frame", FINDINGS)
def test_findings(hub: Hub, frame: bytes) -> None:
    connected = b'"connect"' not in frame
    hub.frames(
        wire.JSON, [connect_frame(wire.JSON, mint_token(SECRET, "alice"))] if connected else [], [frame]
    )
    hub.still_serving()
