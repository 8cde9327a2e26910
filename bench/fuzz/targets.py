"""Coverage-guided fuzz targets for the hub's byte-level decoders (run them with ``bench/fuzz/run.py``).

A target takes one input (bytes) and checks the decoder's contract: it returns a value or raises its
documented error. Anything else it raises is a finding: atheris stops, prints the traceback and writes the
input to ``crash-<sha1>``; an input that takes over ``-timeout`` seconds or ``-rss_limit_mb`` of memory is
a finding too. Each target has seeds (well-formed messages) to start from: ``run.py --seeds`` writes them.

Targets (decoder, and the errors its contract allows)::

    json_commands      hub.codec_json.decode_commands, data_bytes        DecodeError
    protobuf_commands  hub.codec_protobuf.decode_commands,               DecodeError
                       decode_emulation_request
    ysync              sync.protocol.decode, decode_awareness,           ProtocolError
                       sync.room.decode_state_vector
    yupdate            sync.update.client_ranges, root_kinds             ProtocolError
    awareness          sync.protocol.decode_awareness then               ProtocolError
                       sync.awareness.AwarenessStates (apply, expire)
    room               sync.room.DocRoom.receive (pycrdt integrates)     SyncError
    sse_resume_id      hub.sse.decode_resume_id (and back)               BadResumeId
    jwt                hub.auth.TokenVerifier.verify_*                   TokenError
    api_body           hub.api.decode_params, decode_root and the        BadBody, ClientError
                       params readers
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import orjson
from pycrdt import Array, Doc, Map, Text

from hub import api, codec_json, codec_protobuf, sse
from hub.auth import TokenError, TokenVerifier, mint_token
from hub.codes import ClientError
from sync import protocol
from sync.awareness import AwarenessStates
from sync.journal import Journal
from sync.protocol import AwarenessEntry, ProtocolError, SyncError
from sync.room import DocRoom, RoomLimits, decode_state_vector
from sync.update import client_ranges, root_kinds

SECRET = "fuzz-secret-of-at-least-32-bytes-long!!"

Target = Callable[[bytes], None]


# ---------------------------------------------------------------- Centrifuge frames


def json_commands(data: bytes) -> None:
    try:
        commands = codec_json.decode_commands(data)
    except codec_json.DecodeError:
        return
    assert commands and all(type(c) is dict for c in commands)
    for command in commands:
        for value in command.values():
            try:
                codec_json.data_bytes(value)
            except codec_json.DecodeError:
                pass


def protobuf_commands(data: bytes) -> None:
    try:
        commands = codec_protobuf.decode_commands(data)
        assert commands and all(type(c) is dict for c in commands)
    except codec_protobuf.DecodeError:
        pass
    try:
        node, session, inner = codec_protobuf.decode_emulation_request(data)
        assert type(node) is str and type(session) is str and type(inner) is bytes
    except codec_protobuf.DecodeError:
        pass


def _pb_frame(*commands: dict[str, Any]) -> bytes:
    out = b""
    for command in commands:
        body = codec_protobuf._encode(codec_protobuf._COMMAND, command)
        out += protocol.var_uint(len(body)) + body
    return out


def _command_examples() -> list[dict[str, Any]]:
    return [
        {"id": 1, "connect": {"token": mint_token(SECRET, "alice"), "name": "js", "version": "1.0"}},
        {"id": 2, "subscribe": {"channel": "chat:room", "recover": True, "offset": 7, "epoch": "ab"}},
        {"id": 3, "publish": {"channel": "news", "data": {"text": "hello", "n": [1, 2.5, None]}}},
        {"id": 4, "history": {"channel": "news", "limit": 10, "since": {"offset": 3, "epoch": "e"}}},
        {"id": 5, "rpc": {"method": "echo", "data": "x"}},
        {"id": 6, "presence": {"channel": "news"}},
        {"id": 7, "sub_refresh": {"channel": "news", "token": "t"}},
        {"id": 8, "unsubscribe": {"channel": "news"}},
        {},
    ]


def _json_command_seeds() -> list[bytes]:
    commands = [orjson.dumps(c) for c in _command_examples()]
    return [*commands, b"\n".join(commands)]


def _protobuf_data(command: dict[str, Any]) -> dict[str, Any]:
    """A JSON-shaped command with its data fields as the bytes Protobuf carries."""
    out: dict[str, Any] = {}
    for name, value in command.items():
        if name == "data":
            out[name] = orjson.dumps(value)
        elif isinstance(value, dict):
            out[name] = _protobuf_data(value)
        else:
            out[name] = value
    return out


def _protobuf_command_seeds() -> list[bytes]:
    commands = [_protobuf_data(c) for c in _command_examples()]
    filters = {"op": "and", "nodes": [{"key": "k", "cmp": "eq", "val": "v", "vals": ["a", "b"]}]}
    commands.append({"id": 9, "subscribe": {"channel": "f", "tf": filters, "flag": 2, "delta": "fossil"}})
    commands.append(
        {"id": 10, "connect": {"subs": {"news": {"recover": True, "offset": 2**63}}, "headers": {}}}
    )
    seeds = [_pb_frame(c) for c in commands] + [_pb_frame(*commands)]
    request = {"node": "n1", "session": "s1", "data": _pb_frame(commands[2])}
    seeds.append(codec_protobuf._encode(codec_protobuf._SCHEMA["EmulationRequest"], request))
    return seeds


# ---------------------------------------------------------------- y-sync, Yjs updates, awareness


def _doc_updates() -> list[bytes]:
    """Updates of a document with every kind of root and content (what editors send)."""
    doc: Doc[Any] = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    doc["text"] = Text("hello")
    doc["map"] = Map({"a": 1, "b": [True, None, 2.5, "s"], "nested": Map({"c": b"bin"})})
    doc["list"] = Array([1, "two", Text("three")])
    text = doc["text"]
    assert isinstance(text, Text)
    text.insert(5, " world é😀")
    del text[0:2]
    return [*updates, doc.get_update()]


def _awareness_update(entries: list[tuple[int, int, bytes]]) -> bytes:
    return protocol.encode_awareness([AwarenessEntry(*e) for e in entries])


def _awareness_seeds() -> list[bytes]:
    return [
        _awareness_update([(1, 1, b'{"user":{"name":"ann","color":"#f00"},"cursor":{"anchor":3}}')]),
        _awareness_update([(1, 2, b"null"), (2, 5, b'{"x":1}'), (2**53 - 1, 1, b"[]")]),
        _awareness_update([]),
    ]


def _ysync_seeds() -> list[bytes]:
    doc: Doc[Any] = Doc()
    doc["text"] = Text("hi")
    updates = _doc_updates()
    return [
        protocol.sync_step1(doc.get_state()),
        protocol.sync_step2(updates[-1]),
        protocol.update(updates[0]),
        *(protocol.awareness(a) for a in _awareness_seeds()),
        protocol.query_awareness(),
        protocol.permission_denied("no"),
    ]


def ysync(data: bytes) -> None:
    try:
        message = protocol.decode(data)
    except ProtocolError:
        return
    assert protocol.decode(protocol.encode(message)) == message
    try:
        if isinstance(message, protocol.AwarenessMessage):
            protocol.decode_awareness(message.update)
        elif isinstance(message, protocol.SyncStep1):
            decode_state_vector(message.state_vector)
    except ProtocolError:
        pass


def yupdate(data: bytes) -> None:
    for read in (client_ranges, root_kinds, decode_state_vector):
        try:
            read(data)
        except ProtocolError:
            pass


def awareness(data: bytes) -> None:
    try:
        entries = protocol.decode_awareness(data)
    except ProtocolError:
        return
    states = AwarenessStates()
    first, second = object(), object()
    accepted = states.apply(entries, first, 0.0)
    states.apply(entries, second, 1.0)  # the same again over another connection: stale
    assert len(states) <= len(accepted)
    states.remove_owner(first, 2.0)
    states.expire(100.0)
    assert len(states) == 0


class _Peer:
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


def room(data: bytes) -> None:
    """One message into a fresh room holding a small document, from a writer and from a reader."""
    doc_room = DocRoom(("", "fuzz"), Journal(None), RoomLimits(max_document_size=1 << 20))  # type: ignore[arg-type]
    doc_room.writer = False  # no journal: replies and relays go out at once
    doc_room.doc["text"] = Text("seed")
    writer, reader = _Peer(), _Peer()
    doc_room.join(writer, True)
    doc_room.join(reader, False)
    for peer in (writer, reader):
        try:
            doc_room.receive(peer, data, now=0.0)
        except SyncError:
            pass
    for peer in (writer, reader):
        for message in peer.sent:
            protocol.decode(message)  # everything the room sends is well formed
    doc_room.leave(writer, now=1.0)
    doc_room.leave(reader, now=1.0)
    doc_room.close()  # unobserves its document: the callback would otherwise keep both alive


# ---------------------------------------------------------------- SSE, JWT, server API bodies


def sse_resume_id(data: bytes) -> None:
    value = data.decode("latin-1")  # as the ASGI server hands a header value over
    try:
        point = sse.decode_resume_id(value)
    except sse.BadResumeId:
        return
    for key, (offset, epoch) in point.positions.items():  # a resume point: 64-bit offsets and epochs by key
        assert isinstance(key, bytes) and isinstance(epoch, str) and 0 <= offset < 2**64


def _sse_seeds() -> list[bytes]:
    return [
        sse.encode_resume_id({"news": (5, "abc"), "chat:room": (2**63, "")}),
        sse.encode_resume_id({}),
        sse.encode_resume_id({"a" * 255: (1, "e")}),
    ]


_VERIFIER = TokenVerifier(hmac_secret=SECRET)


def jwt(data: bytes) -> None:
    """``header NUL payload`` (JSON texts, say) signed with the hub's key, so that the claims are read; an
    input without NUL is the token itself."""
    if b"\x00" in data:
        header, _, payload = data.partition(b"\x00")
        token = _signed(header, payload).decode()
    else:
        token = data.decode("utf-8", "replace")
    for verify in (_VERIFIER.verify_connect, _VERIFIER.verify_subscription, _VERIFIER.verify_document):
        try:
            verify(token)
        except TokenError:
            pass


def _signed(header: bytes, payload: bytes) -> bytes:
    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    head = b64(header) + b"." + b64(payload)
    return head + b"." + b64(hmac.new(SECRET.encode(), head, hashlib.sha256).digest())


def _jwt_seeds() -> list[bytes]:
    header = b'{"alg":"HS256","typ":"JWT"}'
    return [
        mint_token(SECRET, "ann", ttl=3600, info={"name": "Ann"}, channels=["news"], tenant="acme").encode(),
        mint_token(SECRET, "alice", channel="chat:room", ttl=60).encode(),
        header + b'\x00{"sub":"a","exp":1e300,"iat":1,"nbf":0,"info":[1,{"b":null}],"channels":["x"]}',
        header + b'\x00{"sub":"b","channel":"news","tenant":"t","exp":99999999999}',
        header + b'\x00{"sub":"c","docs":{"read":["notes/*"],"write":["notes/c"]},"aud":"x"}',
    ]


def api_body(data: bytes) -> None:
    bodies: list[Any] = []
    try:
        bodies.append(api.decode_params(data))
    except api.BadBody:
        pass
    try:
        is_batch, objects = api.decode_root(data)
        bodies.extend(objects)
        if is_batch:
            commands = objects[0].get("commands")
            if isinstance(commands, list):
                bodies.extend(c for c in commands if isinstance(c, dict))
    except api.BadBody:
        pass
    for body in bodies:
        for params in [body, *(v for v in body.values() if isinstance(v, dict))]:
            for read in (
                api._payload,
                api._tags,
                lambda p: api._position(p.get("since")),
                lambda p: api._int(p, "limit"),
                lambda p: api._str(p, "channel"),
                lambda p: api._bool(p, "reverse"),
                lambda p: api._optional_str(p, "idempotency_key"),
            ):
                try:
                    read(params)
                except ClientError:
                    pass


def _api_seeds() -> list[bytes]:
    return [
        b'{"channel":"news","data":{"text":"hi"},"tags":{"k":"v"},"idempotency_key":"x"}',
        b'{"channel":"news","b64data":"eyJhIjoxfQ==","skip_history":true}',
        b'{"channel":"news","limit":10,"since":{"offset":3,"epoch":"e"},"reverse":true}',
        b'{"commands":[{"publish":{"channel":"a","data":1}},{"history":{"channel":"a"}}],"parallel":true}',
        b'{"method":"publish","params":{"channel":"a","data":1}}\n{"method":"info","params":{}}',
    ]


# ---------------------------------------------------------------- the table

TARGETS: dict[str, tuple[Target, Callable[[], list[bytes]]]] = {
    "json_commands": (json_commands, _json_command_seeds),
    "protobuf_commands": (protobuf_commands, _protobuf_command_seeds),
    "ysync": (ysync, _ysync_seeds),
    "yupdate": (yupdate, _doc_updates),
    "awareness": (awareness, _awareness_seeds),
    "room": (room, lambda: [*_ysync_seeds(), *(protocol.update(u) for u in _doc_updates())]),
    "sse_resume_id": (sse_resume_id, _sse_seeds),
    "jwt": (jwt, _jwt_seeds),
    "api_body": (api_body, _api_seeds),
}
"""name -> (target, seeds)"""
