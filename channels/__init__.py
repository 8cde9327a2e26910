"""Channels: names, namespace options, publications and the Broker that carries them; and the sans-I/O
pieces of live feeds: fossil deltas (``fossil``), batch ingest parsers (``ingest``, ``lineprotocol``),
threshold alerts (``alerts``), data schemas (``schema``), and a reading's key and a subscriber's rate
(``feeds``).

This package is the bottom layer: it imports no other package of ours.

Error tree::

    ChannelError
     +-- InvalidChannel        the name breaks the grammar (too long, empty, bad characters)
     +-- UnknownNamespace      the name's namespace is not configured
     +-- UnrecoverablePosition a history query asked for a position the stream no longer holds
     +-- BrokerUnavailable     the broker cannot accept or serve a request right now
     +-- TooManyKeys           a publication would add a key past the channel's max_keys (cache recovery)
     +-- BadKey                (channels.feeds) a publication's key cannot be read (also ValueError)
     +-- BadRate               (channels.feeds) a subscriber asked for a bad max_rate (also ValueError)
     +-- BadDelta              a fossil delta is malformed or does not apply to its base (also ValueError)
     +-- InvalidFeedConfig     an alert rule, ingest mapping or data schema in the config is invalid
                               (also ValueError)
     +-- StreamRejected        (channels.streams) a stream chunk was refused: malformed, out of order, after
                               its final, too large, too many open streams
"""

from channels.errors import (
    BadDelta,
    BrokerUnavailable,
    ChannelError,
    InvalidChannel,
    InvalidFeedConfig,
    UnknownNamespace,
    UnrecoverablePosition,
)
from channels.names import ChannelKey, ChannelName, parse_channel
from channels.options import NamespaceOptions, Namespaces
from channels.publication import ClientInfo, HistoryResult, Publication, PublishResult, StreamPosition

__all__ = [
    "BadDelta",
    "BrokerUnavailable",
    "ChannelError",
    "ChannelKey",
    "ChannelName",
    "ClientInfo",
    "HistoryResult",
    "InvalidChannel",
    "InvalidFeedConfig",
    "NamespaceOptions",
    "Namespaces",
    "Publication",
    "PublishResult",
    "StreamPosition",
    "UnknownNamespace",
    "UnrecoverablePosition",
    "parse_channel",
]
