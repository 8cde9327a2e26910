"""Server frames, checked with websockets' own sans-I/O parser (no event loop)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from hub import ws_frames
from hub.ws_frames import FrameCache, frame

LENGTHS = [0, 1, 124, 125, 126, 127, 65534, 65535, 65536, 65537]


def parse_with_frame_parser(data: bytes) -> tuple[Frame, bytes]:
    """Parse one frame as a client does (server frames are unmasked); return it and the bytes left."""
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=False, max_size=None)
    try:
        next(parser)
    except StopIteration as done:
        parsed: Frame = done.value
    else:  # pragma: no cover - the parser wanted more bytes
        raise AssertionError("incomplete frame")
    return parsed, bytes(reader.buffer)


def client_protocol() -> ClientProtocol:
    return ClientProtocol(parse_uri("ws://localhost/connection/websocket"), state=State.OPEN, max_size=None)


def payload_of(n: int) -> bytes:
    return bytes((i * 7 + 3) % 256 for i in range(n))


@pytest.mark.parametrize("n", LENGTHS)
def test_frame_parses_back(n: int) -> None:
    payload = payload_of(n)
    built = frame(payload, ws_frames.OP_BINARY)
    parsed, rest = parse_with_frame_parser(built)
    assert rest == b""
    assert parsed.fin and parsed.opcode is Opcode.BINARY and parsed.data == payload
    assert not (parsed.rsv1 or parsed.rsv2 or parsed.rsv3)
    # RFC 6455 5.2: 7-bit length up to 125, 16-bit up to 65535, 64-bit beyond; never masked (5.1).
    header = 2 if n <= 125 else 4 if n <= 65535 else 10
    assert len(built) == header + n
    assert built[1] & 0x80 == 0


@pytest.mark.parametrize("n", LENGTHS)
def test_client_protocol_receives_text_frames(n: int) -> None:
    text = ("é" * n)[: max(0, n // 2)]  # multi-byte UTF-8
    payload = text.encode()
    proto = client_protocol()
    proto.receive_data(frame(payload))
    events = proto.events_received()
    assert len(events) == 1 and isinstance(events[0], Frame)
    assert events[0].opcode is Opcode.TEXT and events[0].fin
    assert events[0].data == payload
    assert proto.parser_exc is None


def test_client_protocol_receives_back_to_back_frames() -> None:
    payloads = [payload_of(n) for n in (125, 126, 65535, 65536, 0)]
    proto = client_protocol()
    proto.receive_data(b"".join(frame(p, ws_frames.OP_BINARY) for p in payloads))
    events = proto.events_received()
    assert all(isinstance(e, Frame) for e in events)
    assert [e.data for e in events if isinstance(e, Frame)] == payloads


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=70_000), st.sampled_from([ws_frames.OP_TEXT, ws_frames.OP_BINARY]))
def test_any_payload_parses_back(payload: bytes, opcode: int) -> None:
    parsed, rest = parse_with_frame_parser(frame(payload, opcode))
    assert rest == b"" and parsed.data == payload and parsed.opcode.value == opcode and parsed.fin


def test_opcodes_match_rfc() -> None:
    assert ws_frames.OP_TEXT == Opcode.TEXT.value == 1
    assert ws_frames.OP_BINARY == Opcode.BINARY.value == 2


def test_frame_cache_reuses_the_frame_of_the_same_payload_object() -> None:
    cache = FrameCache()
    payload = b"x" * 200
    first = cache.frame(payload, ws_frames.OP_TEXT)
    assert first == frame(payload)
    assert cache.frame(payload, ws_frames.OP_TEXT) is first
    # another opcode, or an equal but distinct payload object, is framed anew and correctly
    binary = cache.frame(payload, ws_frames.OP_BINARY)
    assert binary == frame(payload, ws_frames.OP_BINARY) and binary is not first
    other = cache.frame(b"y" * 3, ws_frames.OP_TEXT)
    assert other == frame(b"yyy")
    assert cache.frame(payload, ws_frames.OP_TEXT) == first


def test_a_fragmented_message_is_reassembled_by_a_client() -> None:
    """RFC 6455 5.4: the first fragment carries the opcode, continuations opcode 0, the last FIN; a ping
    between fragments is allowed."""
    payload = payload_of(200_000)
    parts = [payload[i : i + 65536] for i in range(0, len(payload), 65536)]
    frames_out = [
        ws_frames.fragment(part, ws_frames.OP_BINARY, i == 0, i == len(parts) - 1)
        for i, part in enumerate(parts)
    ]
    ping = bytes((0x89, 0))
    client = client_protocol()
    client.receive_data(b"".join([frames_out[0], ping, *frames_out[1:]]))
    frames = client.events_received()
    assert [f.opcode for f in frames] == [Opcode.BINARY, Opcode.PING, Opcode.CONT, Opcode.CONT, Opcode.CONT]
    assert [f.fin for f in frames if f.opcode != Opcode.PING] == [False, False, False, True]
    assert b"".join(f.data for f in frames if f.opcode != Opcode.PING) == payload
