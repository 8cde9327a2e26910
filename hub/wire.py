"""The wire formats a client session can speak, each with its codec.

A format is an index into ``CODECS``; the registry keeps one fan-out table per format, so the node encodes a
publication once per format that has subscribers, never once per subscriber.

- ``JSON``: Centrifuge protocol v2 JSON (WebSocket text frames, the HTTP-streaming and SSE emulation).
- ``JSON_UNI``: the same JSON with bare pushes, for the unidirectional ``uni_sse``/``uni_http_stream``.
- ``PROTOBUF``: the Protobuf variant (WebSocket subprotocol ``centrifuge-protobuf``, binary frames).
- ``JSON_EVENTS``: ``JSON_UNI`` for ``uni_sse``, whose every event carries a resume id: its subscribers are
  handed the publication beside the frame (``push(frame, pub)``) to advance their stream positions.

Binary data (namespaces with ``data_format = "binary"``): a publication's data is any bytes. The Protobuf
format carries them as they are; every JSON format (and every other JSON surface: the server API, the
console) carries them as a JSON string holding their base64 (RFC 4648 section 4, padded): ``json_view``
makes that publication once per publication, beside the raw one. JSON speakers publish binary data the
same way, as a base64 string (``binary_data``); the server API also takes Centrifugo's ``b64data``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any, Protocol

from channels.publication import ClientInfo, Publication
from hub import codec_json, codec_json_uni, codec_protobuf


class Codec(Protocol):
    """What a session needs of a codec module (``hub.codec_json`` and its siblings satisfy it)."""

    @property
    def PING(self) -> bytes: ...  # noqa: N802 - module constants

    @property
    def DecodeError(self) -> type[ValueError]: ...  # noqa: N802

    def Fragment(self, data: bytes) -> Any: ...  # noqa: N802 - mirrors orjson.Fragment

    def decode_commands(self, data: str | bytes) -> list[dict[str, Any]]: ...

    def data_bytes(self, value: Any) -> bytes: ...

    def info_dict(self, info: ClientInfo) -> dict[str, Any]: ...

    def publication_dict(self, pub: Publication) -> dict[str, Any]: ...

    def encode(self, message: dict[str, Any]) -> bytes: ...

    def encode_reply(self, cmd_id: int, method: str, result: dict[str, Any]) -> bytes: ...

    def encode_error(self, cmd_id: int, code: int, message: str, temporary: bool = False) -> bytes: ...

    def encode_push(self, channel: str, kind: str, body: dict[str, Any]) -> bytes: ...

    def encode_publication_push(self, channel: str, pub: Publication) -> bytes: ...

    def encode_join_push(self, channel: str, info: ClientInfo) -> bytes: ...

    def encode_leave_push(self, channel: str, info: ClientInfo) -> bytes: ...

    def join_messages(self, messages: list[bytes]) -> bytes: ...


JSON, JSON_UNI, PROTOBUF, JSON_EVENTS = 0, 1, 2, 3
CODECS: tuple[Codec, ...] = (codec_json, codec_json_uni, codec_protobuf, codec_json_uni)
"""Indexed by format."""

FEED = len(CODECS)
"""Not a format: the registry's fan-out table after the formats' tables holds the feed subscriptions
(conflated, or delta-encoded: ``hub.feeds``), each of which takes every publication and frames it itself."""

PROTOBUF_SUBPROTOCOL = "centrifuge-protobuf"


class BadData(ValueError):
    """Data its namespace cannot take; the message says why, in words for the sender."""


def json_view(pub: Publication) -> Publication:
    """``pub`` as JSON speakers get a binary publication: its data a JSON string of its base64."""
    return dataclasses.replace(pub, data=b'"' + base64.b64encode(pub.data) + b'"')


def binary_data(value: Any) -> bytes:
    """A binary namespace's data from a publisher: bytes as they are (Protobuf, hooks, the embedding API),
    a string as base64 (JSON speakers). BadData for anything else or for a string that is not base64."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if not isinstance(value, str):
        raise BadData("a binary namespace takes data as a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):  # a non-ASCII string is a ValueError
        raise BadData("data is not base64 (RFC 4648, standard alphabet, padded)") from None
