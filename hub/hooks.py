"""Application hooks: how an embedding program decides who connects, subscribes and publishes, and serves
named RPC methods, in Python.

Every hook is an ``async def`` taking a context. A hook denies by raising ``ClientError`` (e.g.
``hub.codes.error_permission_denied()``) or ``Disconnect``; it allows by returning ``None`` or a result
object that adds to what the hub decided.

- ``on_connecting(ConnectingContext) -> ConnectingResult | None``: runs after the token (if any) is
  verified. Returning a result with ``user`` set authenticates a client that came without a token.
- ``on_subscribe(SubscribeContext) -> SubscribeResult | None``: runs for client-side subscriptions not
  authorized by a subscription token. ``ctx.allowed`` says what the namespace options decided; returning
  ``None`` keeps that decision, returning a ``SubscribeResult`` allows.
- ``on_publish(PublishContext) -> PublishResult | None``: runs after the namespace allowed a client publish;
  a result may replace the data.
- ``on_message(MessageContext) -> None``: asynchronous ``send`` messages from clients.
- RPC handlers: ``rpc[name](RPCContext) -> Any`` (JSON-serializable, returned as the reply's data).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hub.auth import ConnectClaims


@dataclass(slots=True)
class ConnectingContext:
    client_id: str
    transport: str
    claims: ConnectClaims | None
    data: Any
    headers: dict[str, str]
    remote: str
    name: str = ""
    version: str = ""


@dataclass(slots=True)
class ConnectingResult:
    user: str | None = None
    info: Any = None
    channels: list[str] | None = None
    tenant: str | None = None
    data: Any = None
    """Returned to the client in the connect reply."""


@dataclass(slots=True)
class SubscribeContext:
    client_id: str
    user: str
    tenant: str
    channel: str
    data: Any
    allowed: bool


@dataclass(slots=True)
class SubscribeResult:
    info: Any = None
    """Channel info of this subscriber, seen by others in presence and join/leave."""
    data: Any = None
    """Returned to the client in the subscribe reply."""


@dataclass(slots=True)
class PublishContext:
    client_id: str
    user: str
    tenant: str
    channel: str
    data: Any


_KEEP: Any = object()


@dataclass(slots=True)
class PublishResult:
    data: Any = _KEEP

    @property
    def replaces_data(self) -> bool:
        return self.data is not _KEEP


@dataclass(slots=True)
class RPCContext:
    client_id: str
    user: str
    tenant: str
    method: str
    data: Any


@dataclass(slots=True)
class MessageContext:
    client_id: str
    user: str
    tenant: str
    data: Any


H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


@dataclass
class Hooks:
    on_connecting: Callable[[ConnectingContext], Awaitable[ConnectingResult | None]] | None = None
    on_subscribe: Callable[[SubscribeContext], Awaitable[SubscribeResult | None]] | None = None
    on_publish: Callable[[PublishContext], Awaitable[PublishResult | None]] | None = None
    on_message: Callable[[MessageContext], Awaitable[None]] | None = None
    rpc: dict[str, Callable[[RPCContext], Awaitable[Any]]] = field(default_factory=dict)
