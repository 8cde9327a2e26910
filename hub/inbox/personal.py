"""Personal channels: Centrifugo's ``user_subscribe_to_personal``, ``user_personal_channel_namespace`` and
``user_personal_single_connection``, with their names and meaning.

- A user's personal channel is ``<user_personal_channel_namespace>:#<user>`` (``#<user>`` when that option
  is empty): a user-limited channel only that user may subscribe to. With ``user_subscribe_to_personal``
  every connection of a named user (anonymous ones are not) is subscribed to it server-side at connect: the
  channel comes in the connect reply's ``subs``, as a token's ``channels`` do, so the SDKs need no code (the
  client's own ``publication`` event gets its pushes, on every node of the hub alike). It is added after the
  ``client_channel_limit`` check of the token's channels, and counts as a subscription afterwards. The inbox
  publishes its pushes there whether the option is on or not (a client may subscribe to the channel itself
  where its namespace allows user-limited channels).
- A user id the channel grammar cannot carry as the only user of a channel (``,`` or ``#`` in it, white
  space or control characters, too long for a 255-character channel name) has no personal channel: such a
  connection is not subscribed and gets no inbox pushes (one WARNING line, at most one per 10 s). Its inbox
  works all the same through ``inbox.*`` RPC.
- ``user_personal_single_connection``: one connection per user across every node. Each new connection of a
  named user claims to be that user's only one. A claim is broadcast on the control channel
  (``Control.claim_connection``), and every node, its sender included, applies the claims in the one order
  the control channel hands them out: a claim closes every local connection of that user (tenant) whose own
  claim came before it, with 3504 "connection limit" (terminal: the SDKs do not reconnect). The connection
  whose claim came last survives, on every node alike; two connections that connect at the same moment on
  two nodes never both survive, nor both go. Centrifugo reads the personal channel's presence at connect
  and disconnects the others when it finds any: two round trips, and two connections that connect together
  can each see the other and close each other. As Centrifugo's, the claims travel at most once (Redis
  pub/sub): a node that loses its control channel's connection at that moment misses them. A connect whose
  claim cannot be sent (the control channel's Redis is away) is refused with 3004 (reconnect), not left
  unenforced.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING

from channels.names import (
    MAX_LENGTH,
    NAMESPACE_BOUNDARY,
    PRIVATE_PREFIX,
    USER_BOUNDARY,
    USER_SEPARATOR,
    ChannelName,
)
from hub import codes
from hub.config import Config
from hub.control import ControlUnavailable, Target
from hub.logs import log_limited

if TYPE_CHECKING:
    from hub.client import Client
    from hub.node import Node

log = logging.getLogger("switchboard.personal")


class PersonalChannels:
    """The personal channels of one node's users, and the single-connection claims it has seen."""

    def __init__(self, config: Config) -> None:
        self.subscribe = config.user_subscribe_to_personal
        self.single_connection = config.user_personal_single_connection
        self.namespace = config.user_personal_channel_namespace
        self.prefix = (
            f"{self.namespace}{NAMESPACE_BOUNDARY}{USER_BOUNDARY}" if self.namespace else USER_BOUNDARY
        )
        self._claimed: weakref.WeakSet[Client] = weakref.WeakSet()
        """This node's connections whose claim it has applied (the older ones, for every later claim)."""

    def channel(self, user: str) -> str | None:
        """The personal channel of ``user``; None for anonymous and for ids the grammar cannot carry."""
        return self.prefix + user if self._carries(user) else None

    def parsed(self, user: str) -> ChannelName | None:
        """``channel(user)`` as ``channels.names.parse_channel`` would parse it."""
        if not self._carries(user):
            return None
        return ChannelName(self.prefix + user, self.namespace, (user,), False)

    def user_of(self, channel: str) -> str | None:
        """The user whose personal channel ``channel`` is, or None."""
        if not channel.startswith(self.prefix):
            return None
        user = channel[len(self.prefix) :]
        return user if self._carries(user) else None

    def _carries(self, user: str) -> bool:
        """Whether ``prefix + user`` parses (``channels.names``) as a channel of the personal namespace whose
        only allowed user is ``user``: checked without parsing (a notify checks 10,000 of them)."""
        return (
            bool(user)
            and len(self.prefix) + len(user) <= MAX_LENGTH
            and USER_SEPARATOR not in user
            and USER_BOUNDARY not in user
            and user.isprintable()
            and " " not in user  # the one white space character isprintable() lets through
            and (bool(self.namespace) or NAMESPACE_BOUNDARY not in user)  # "#a:b" would be namespace "#a"
            and not self.namespace.startswith(PRIVATE_PREFIX)
        )

    def at_connect(self, user: str, channels: tuple[str, ...]) -> tuple[str, ...]:
        """The server-side channels of a connection of ``user``: ``channels`` and, with
        ``user_subscribe_to_personal``, the user's personal channel."""
        if not self.subscribe or not user:
            return channels
        name = self.channel(user)
        if name is None:
            log_limited(log, logging.WARNING, "user id %r cannot name a personal channel", user[:100])
            return channels
        return channels if name in channels else (*channels, name)

    # -- one connection per user ------------------------------------------------------------------

    async def claim(self, node: Node, client: Client) -> None:
        """Broadcast that ``client`` (just connected) is its user's only connection; 3004 if it cannot."""
        if not self.single_connection or not client.user:
            return
        try:
            await node.control.claim_connection(Target(client.tenant, client.user, client.id))
        except ControlUnavailable as exc:
            log.warning("single-connection claim not sent: %s", exc)
            raise codes.SERVER_ERROR.error() from None

    def claimed(self, node: Node, target: Target) -> None:
        """Apply a claim (on every node, in the control channel's order): the user's local connections
        whose claim came earlier are closed with 3504; the claimer's own is remembered."""
        for client in node.registry.user_clients(target.tenant, target.user):
            if client.id == target.client:
                self._claimed.add(client)
            elif client in self._claimed:
                client.disconnect(codes.CONNECTION_LIMIT.error())
