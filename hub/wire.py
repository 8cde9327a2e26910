"""The wire formats a client session can speak, each with its codec.

A format is an index into ``CODECS``; the registry keeps one fan-out table per format, so the node encodes a
publication once per format that has subscribers, never once per subscriber.

- ``JSON``: Centrifuge protocol v2 JSON (WebSocket text frames, the HTTP-streaming and SSE emulation).
- ``JSON_UNI``: the same JSON with bare pushes, for the unidirectional ``uni_sse``/``uni_http_stream``.
- ``PROTOBUF``: the Protobuf variant (WebSocket subprotocol ``centrifuge-protobuf``, binary frames).
- ``JSON_EVENTS``: ``JSON_UNI`` for ``uni_sse``, whose every event carries a resume id: its subscribers are
  handed the publication beside the frame (``push(frame, pub)``) to advance their stream positions.
"""

from __future__ import annotations

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

PROTOBUF_SUBPROTOCOL = "centrifuge-protobuf"
