"""Centrifuge client protocol v2 codes, and the two exceptions a command handler raises.

Error tree of the hub package::

    HubError
     +-- ClientError      a command fails: reply {"error": {"code": 100-112, ...}}; the connection stays
     +-- Disconnect       the connection ends with a close code (3000-3499 reconnect, 3500-3999 terminal)
     +-- ConfigError      the configuration is invalid (raised at start-up, never at run time)
     +-- TokenError       (hub.auth) a JWT is malformed, badly signed or expired
"""

from __future__ import annotations

from typing import NamedTuple


class HubError(Exception):
    """Base of the hub's errors."""


class ClientError(HubError):
    """A command failed. ``code`` is one of the protocol's error codes (or an application's 400-1999)."""

    def __init__(self, code: int, message: str, temporary: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.temporary = temporary


class Disconnect(HubError):
    """The connection must end. Codes 3000-3499 (and 4000-4499) ask the client to reconnect."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason

    @property
    def reconnect(self) -> bool:
        return not (3500 <= self.code < 4000 or 4500 <= self.code < 5000)


class ConfigError(HubError):
    """The configuration is invalid."""


# Error codes (replies). centrifugal.dev "Error and disconnect codes".
def error_internal() -> ClientError:
    return ClientError(100, "internal server error", temporary=True)


def error_unauthorized() -> ClientError:
    return ClientError(101, "unauthorized")


def error_unknown_channel() -> ClientError:
    return ClientError(102, "unknown channel")


def error_permission_denied() -> ClientError:
    return ClientError(103, "permission denied")


def error_method_not_found() -> ClientError:
    return ClientError(104, "method not found")


def error_already_subscribed() -> ClientError:
    return ClientError(105, "already subscribed")


def error_limit_exceeded() -> ClientError:
    return ClientError(106, "limit exceeded")


def error_bad_request() -> ClientError:
    return ClientError(107, "bad request")


def error_invalid_data(reason: str = "its namespace refuses it") -> ClientError:
    """Data its namespace refuses (``data_schema``, ``data_format``): 107, with the reason in one line.
    Centrifugo has no such error: a bad request it is, and the message tells the sender what to fix."""
    return ClientError(107, f"invalid data: {reason}")


def error_not_available() -> ClientError:
    return ClientError(108, "not available")


def error_token_expired() -> ClientError:
    return ClientError(109, "token expired")


def error_expired() -> ClientError:
    return ClientError(110, "expired")


def error_too_many_requests() -> ClientError:
    return ClientError(111, "too many requests", temporary=True)


def error_unrecoverable_position() -> ClientError:
    return ClientError(112, "unrecoverable position")


class DisconnectCode(NamedTuple):
    """A disconnect code and its reason; ``.error()`` makes the exception to raise."""

    code: int
    reason: str

    def error(self, reason: str | None = None) -> Disconnect:
        return Disconnect(self.code, reason or self.reason)


# Disconnect codes (close frames).
CONNECTION_CLOSED = DisconnectCode(3000, "connection closed")
SHUTDOWN = DisconnectCode(3001, "shutdown")
SERVER_ERROR = DisconnectCode(3004, "internal server error")
EXPIRED = DisconnectCode(3005, "connection expired")
SUB_EXPIRED = DisconnectCode(3006, "subscription expired")
SLOW = DisconnectCode(3008, "slow")
WRITE_ERROR = DisconnectCode(3009, "write error")
INSUFFICIENT_STATE = DisconnectCode(3010, "insufficient state")
FORCE_RECONNECT = DisconnectCode(3011, "force reconnect")
NO_PONG = DisconnectCode(3012, "no pong")
TOO_MANY_REQUESTS = DisconnectCode(3013, "too many requests")
INVALID_TOKEN = DisconnectCode(3500, "invalid token")
BAD_REQUEST = DisconnectCode(3501, "bad request")
STALE = DisconnectCode(3502, "stale")
FORCE_NO_RECONNECT = DisconnectCode(3503, "force disconnect")
CONNECTION_LIMIT = DisconnectCode(3504, "connection limit")
CHANNEL_LIMIT = DisconnectCode(3505, "channel limit")
INAPPROPRIATE_PROTOCOL = DisconnectCode(3506, "inappropriate protocol")
PERMISSION_DENIED = DisconnectCode(3507, "permission denied")
NOT_AVAILABLE = DisconnectCode(3508, "not available")
TOO_MANY_ERRORS = DisconnectCode(3509, "too many errors")
MESSAGE_TOO_BIG = DisconnectCode(1009, "message too big")
"""RFC 6455 7.4.1: 1009, a message too big to process. The WebSocket layer's own close code."""

# Unsubscribe codes (the ``unsubscribe`` push): below 2500 final for the client, from 2500 it resubscribes.
UNSUBSCRIBE_SERVER = 2000
UNSUBSCRIBE_INSUFFICIENT = 2500
"""The node missed publications of the channel: the client resubscribes and recovers from history."""
