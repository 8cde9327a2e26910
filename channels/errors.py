"""Errors of the channels layer (the tree is drawn in the package docstring)."""


class ChannelError(Exception):
    """Base of every error this package raises."""


class InvalidChannel(ChannelError):
    """The channel name breaks the grammar."""


class UnknownNamespace(ChannelError):
    """The channel's namespace is not configured."""


class UnrecoverablePosition(ChannelError):
    """The stream does not hold the requested range (wrong epoch, or trimmed)."""


class BrokerUnavailable(ChannelError):
    """The broker cannot take or serve the request now; nothing was published."""


class BadDelta(ChannelError, ValueError):
    """A fossil delta is malformed or does not build its target from the given base."""


class InvalidFeedConfig(ChannelError, ValueError):
    """A feed setting from the operator's config (alert rule, ingest mapping, data schema) is invalid; the
    message names the setting and what is wrong with it."""


class TooManyKeys(ChannelError):
    """A publication would add a key to a channel that keeps the latest value of ``max_keys`` keys already;
    nothing was published."""
