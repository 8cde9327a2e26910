"""The JSON of the unidirectional transports (``uni_sse``, ``uni_http_stream``), sans-I/O.

A unidirectional client sends one connect request and then only reads. Every message it reads is a bare
``Push`` object, not wrapped in ``{"push": ...}`` as on the bidirectional transports: the connect result
arrives as ``{"connect": {...}}``, a publication as ``{"channel": "news", "pub": {...}}``, a disconnect as
``{"disconnect": {"code": 3001, "reason": "shutdown"}}``; ``{}`` is a ping, which needs no pong.
"""

from __future__ import annotations

from typing import Any

import orjson

from channels.publication import ClientInfo, Publication
from hub.codec_json import (
    PING,
    DecodeError,
    Fragment,
    data_bytes,
    decode_commands,
    info_dict,
    join_messages,
    publication_dict,
)

__all__ = [
    "PING",
    "DecodeError",
    "Fragment",
    "data_bytes",
    "decode_commands",
    "encode",
    "encode_error",
    "encode_join_push",
    "encode_leave_push",
    "encode_publication_push",
    "encode_push",
    "encode_reply",
    "info_dict",
    "join_messages",
    "publication_dict",
]


def encode(message: dict[str, Any]) -> bytes:
    """A message shaped for the bidirectional protocol (``{"push": {...}}``) as a bare push."""
    push = message.get("push")
    return orjson.dumps(push if push is not None else message)


def encode_reply(cmd_id: int, method: str, result: dict[str, Any]) -> bytes:
    """The only reply a unidirectional client gets is its connect result, as a ``connect`` push."""
    return orjson.dumps({method: result})


def encode_error(cmd_id: int, code: int, message: str, temporary: bool = False) -> bytes:
    raise RuntimeError("a unidirectional connection has no command replies")  # the session maps errors


def encode_push(channel: str, kind: str, body: dict[str, Any]) -> bytes:
    if channel:
        return orjson.dumps({"channel": channel, kind: body})
    return orjson.dumps({kind: body})


def encode_publication_push(channel: str, pub: Publication) -> bytes:
    return orjson.dumps({"channel": channel, "pub": publication_dict(pub)})


def encode_join_push(channel: str, info: ClientInfo) -> bytes:
    return encode_push(channel, "join", {"info": info_dict(info)})


def encode_leave_push(channel: str, info: ClientInfo) -> bytes:
    return encode_push(channel, "leave", {"info": info_dict(info)})
