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
