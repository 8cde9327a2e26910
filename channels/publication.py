"""The vocabulary of the channel layer: publications, client info, stream positions.

Data is kept as the bytes of a JSON document (what JSON clients send and receive); a codec embeds those
bytes as they are, so a publication is never parsed again on its way out.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who a connection is, as other subscribers see it in presence, join/leave and publications."""

    user: str
    client: str
    conn_info: bytes | None = None
    chan_info: bytes | None = None


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """A position in a channel's stream: the offset of the last publication and the stream's epoch.

    The epoch changes whenever the stream is lost (broker restart, history expired): positions from
    another epoch can never be recovered from.
    """

    offset: int = 0
    epoch: str = ""


@dataclass(slots=True)
class Publication:
    data: bytes
    offset: int = 0
    """0 when the channel keeps no history."""
    info: ClientInfo | None = None
    tags: dict[str, str] | None = None
    time: int = 0
    """Milliseconds since the epoch at which the broker accepted it."""
    key: str = ""
    """The reading's key in a keyed feed (the namespace's ``key_field``): conflation and the latest value
    per key go by it. '' when the namespace has no key field (one value per channel)."""
    expires_at: float = field(default=0.0, repr=False)
    """Monotonic deadline after which history drops it (broker-internal)."""


@dataclass(frozen=True, slots=True)
class PublishResult:
    position: StreamPosition
    suppressed: bool = False
    """True when an idempotency key matched an earlier publish: nothing new was published."""


@dataclass(frozen=True, slots=True)
class HistoryResult:
    publications: list[Publication]
    position: StreamPosition
    """The top of the stream when the history was read."""
