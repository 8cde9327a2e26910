"""The JSON variant of the Centrifuge client protocol v2 (sans-I/O).

Frames: a client frame holds one or more commands separated by "\\n"; a server frame holds one or more
replies/pushes separated by "\\n". An empty object ``{}`` from the server is a ping, from a client a pong.

Data fields are JSON values; the hub keeps them as the bytes of their JSON text and embeds those bytes
unchanged with ``orjson.Fragment``, so a publication is serialized once per format, not per subscriber.
"""

from __future__ import annotations

from typing import Any

import orjson

from channels.publication import ClientInfo, Publication

Fragment = orjson.Fragment
PING = b"{}"


class DecodeError(ValueError):
    """A frame is not a sequence of JSON command objects."""


def decode_commands(data: str | bytes) -> list[dict[str, Any]]:
    """Split a frame into commands. Raises DecodeError on anything but JSON objects, one per line."""
    if isinstance(data, bytes):
        lines = data.split(b"\n")
    else:
        lines = data.split("\n")  # type: ignore[assignment]
    commands: list[dict[str, Any]] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            cmd = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"malformed JSON: {exc}") from None
        if not isinstance(cmd, dict):
            raise DecodeError("a command must be a JSON object")
        commands.append(cmd)
    if not commands:
        raise DecodeError("empty frame")
    return commands


def data_bytes(value: Any) -> bytes:
    """The JSON text of a command's data field (absent data is JSON null).

    DecodeError when it cannot be written back (orjson nests at most 254 levels deep when writing). The
    bytes take no more memory than their length (see below).
    """
    try:
        data = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise DecodeError(f"data cannot be encoded: {exc}") from None
    # orjson (3.12 on) returns bytes that keep its whole output buffer: 4 KiB for any short document, 32 KiB
    # for 4 KB. A publication's data is kept (history, subscription buffers), so it gets a copy of its size.
    return bytes(memoryview(data))


def info_dict(info: ClientInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"user": info.user, "client": info.client}
    if info.conn_info is not None:
        out["conn_info"] = Fragment(info.conn_info)
    if info.chan_info is not None:
        out["chan_info"] = Fragment(info.chan_info)
    return out


def publication_dict(pub: Publication) -> dict[str, Any]:
    out: dict[str, Any] = {"data": Fragment(pub.data)}
    if pub.offset:
        out["offset"] = pub.offset
    if pub.info is not None:
        out["info"] = info_dict(pub.info)
    if pub.tags:
        out["tags"] = pub.tags
    return out


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


def encode_reply(cmd_id: int, method: str, result: dict[str, Any]) -> bytes:
    return orjson.dumps({"id": cmd_id, method: result})


def encode_error(cmd_id: int, code: int, message: str, temporary: bool = False) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if temporary:
        err["temporary"] = True
    return orjson.dumps({"id": cmd_id, "error": err})


def encode_push(channel: str, kind: str, body: dict[str, Any]) -> bytes:
    return orjson.dumps({"push": {"channel": channel, kind: body}})


def encode_publication_push(channel: str, pub: Publication) -> bytes:
    return orjson.dumps({"push": {"channel": channel, "pub": publication_dict(pub)}})


def encode_delta_publication_push(channel: str, pub: Publication, payload: bytes, delta: bool) -> bytes:
    """``pub`` for a subscription that negotiated delta compression: its ``data`` is a JSON *string*, the
    full JSON text of the data (``delta`` False) or a fossil delta against what the subscriber holds
    (``delta`` True), as the SDKs expect once ``delta: true`` was in the subscribe result. ``payload`` is
    UTF-8 (JSON text, or a delta of it: ``channels.fossil`` keeps deltas of UTF-8 valid UTF-8)."""
    return orjson.dumps({"push": {"channel": channel, "pub": delta_publication_dict(pub, payload, delta)}})


def delta_publication_dict(pub: Publication, payload: bytes, delta: bool) -> dict[str, Any]:
    """``publication_dict`` for a delta subscription (see ``encode_delta_publication_push``). Data that is
    not UTF-8 (no JSON text; not a delta of one) cannot be a JSON string: it goes as ``publication_dict``
    has it, never as a delta."""
    out = publication_dict(pub)
    try:
        out["data"] = payload.decode()
    except UnicodeDecodeError:
        return out
    if delta:
        out["delta"] = True
    return out


def encode_join_push(channel: str, info: ClientInfo) -> bytes:
    return encode_push(channel, "join", {"info": info_dict(info)})


def encode_leave_push(channel: str, info: ClientInfo) -> bytes:
    return encode_push(channel, "leave", {"info": info_dict(info)})


def join_messages(messages: list[bytes]) -> bytes:
    """Several replies/pushes as one frame's payload."""
    return messages[0] if len(messages) == 1 else b"\n".join(messages)
