"""The control channel: what one node asks of every node (server-side control of connections, node
discovery, surveys), so that a hub of many nodes acts as one.

Two implementations of ``Control``:

- ``LocalControl(node)``: one process. Every operation acts on this node only (the embedded default).
- ``RedisControl(node, shards)``: nodes sharing a Redis. Messages are msgpack maps on two pub/sub channels of
  the first shard (the only one in cluster mode): ``<prefix>:control:{}``, which every node listens to
  (operations, announcements, surveys), and ``<prefix>:control:{:<node id>}``, this node's own inbox
  (answers to its surveys, emulation requests for its sessions), so directed traffic does not reach every
  node.

Policies (``RedisControl``):

- An operation (subscribe, unsubscribe, disconnect, refresh, message) is published first, then applied on
  this node and awaited; every other node applies it when it arrives, in the order it was published (one
  worker per node applies them one at a time). Redis down: ``ControlUnavailable`` and nothing is applied
  anywhere, never a claimed success. The caller's reply does not wait for the other nodes (as Centrifugo's).
- Each node applies an operation to its own connections of the operation's tenant only: a tenant-bound
  caller never reaches another tenant, on any node.
- Every ``node_info_interval`` a node announces ``node.info()``; a node silent for ``SILENT_INTERVALS`` of
  its own intervals is dropped; a node leaving cleanly says so (``close``) and is dropped at once. A node
  that hears a newcomer announces itself at once, so a new node learns the others within one round trip.
- A dropped node's presence entries are purged at once (``PresenceManager.purge`` of the presence owner it
  announced), not left to their ttl; so are those of its previous incarnation when a node comes back under
  the same name before anyone dropped it. Every node that drops it asks; the presence backend does it once.
- A single-connection claim (``claim_connection``, ``hub.inbox.personal``) is the one operation this node
  does not apply at once: every node, this one included, applies the claims in the order the control
  channel hands them out, so all agree which connection came last.
- A survey (``channels``, ``info`` of one tenant, the subscribers of a channel, an emulation request) asks
  the live nodes (or the one named) and waits for every answer, up to ``survey_timeout``; a node that
  leaves meanwhile is not waited for. A missing answer is ``ControlUnavailable``, not a partial result
  presented as the whole. Answers are bounded (``subscribers``: at most ``limit`` + 1 users per node).
- Other parts add surveys of their own (``answer(op, handler)``, then ``survey(op, args)``: the console's
  connections of a user, open documents); every node must register the same ones, as the app does.

Error tree::

    ConnectionError (builtin)
     +-- ControlUnavailable    the control channel's Redis cannot be reached, or a node did not answer
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgpack  # type: ignore[import-untyped]
import orjson

from channels.pattern import compile_pattern
from channels.redis_shards import RedisShards, ShardUnavailable, route_of
from presence.presence import PresenceError

if TYPE_CHECKING:
    from hub.node import Node

log = logging.getLogger("switchboard.control")

SILENT_INTERVALS = 3
"""A node not heard from for this many of its announcement intervals is gone."""
SURVEY_TIMEOUT = 5.0
"""Seconds a survey waits for the answers of every live node."""
NO_CLIENT = ""
"""A client id no connection has: the target of a ``session`` that matches none on a node."""


SurveyHandler = Callable[[list[Any]], Awaitable[Any]]
"""Answers one node's share of an added survey: args (msgpack-able values) in, a msgpack-able value out."""


class ControlUnavailable(ConnectionError):
    """The control channel's Redis cannot be reached now, or a live node did not answer a survey."""


@dataclass(frozen=True, slots=True)
class Target:
    """Whose connections an operation acts on: every connection of ``user`` in ``tenant``, or only the one
    with id ``client`` and/or session id ``session`` (a session no connection has matches none)."""

    tenant: str
    user: str
    client: str | None = None
    session: str | None = None


class Control(Protocol):
    """What a node asks of every node of the hub. Each operation acts on the target's connections on every
    node (including this one); a failure to reach the other nodes raises ``ControlUnavailable``."""

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Leave: tell the other nodes (if any), stop listening."""

    async def subscribe_user(self, target: Target, channel: str) -> None: ...

    async def unsubscribe_user(self, target: Target, channel: str) -> None: ...

    async def disconnect_user(
        self, target: Target, code: int, reason: str, whitelist: Sequence[str] = ()
    ) -> None:
        """Disconnect the target's connections, except those whose client id is in ``whitelist``."""

    async def refresh_user(self, target: Target, *, expired: bool, expire_at: float) -> None: ...

    async def send_message(self, target: Target, data: Any) -> None:
        """An asynchronous ``message`` push with ``data`` (any JSON value) to the target's connections."""

    async def nodes(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every live node's ``info`` (only ``tenant``'s share of its counts, when given), sorted by name."""

    async def channels(self, tenant: str, pattern: str = "") -> dict[str, int]:
        """Channels of ``tenant`` with subscribers on any node (those matching the glob ``pattern``), each
        with its number of subscribed connections summed over the nodes."""

    async def emulate(self, node_id: str, session: str, data: bytes) -> bool:
        """Hand commands of an emulation session to the node holding it; False when there is no such live
        node or session. Returns once that node handled them."""

    def answer(self, op: str, handler: SurveyHandler) -> None:
        """Answer the added survey ``op`` on this node with ``handler``."""

    async def survey(self, op: str, args: list[Any]) -> dict[str, Any]:
        """Every live node's answer (this node's included) to the added survey ``op``, by node id."""

    async def subscribers(self, tenant: str, channel: str, limit: int) -> set[str]:
        """The users (named ones, not anonymous) subscribed to ``channel`` on any node: at most ``limit``
        + 1 of them (more than ``limit`` means "too many", not the whole audience)."""

    async def claim_connection(self, target: Target) -> None:
        """The connection ``target.client`` claims to be its user's only one: every node, this one
        included, applies the claims in one order (``PersonalChannels.claimed``). Returns once sent."""


# ---------------------------------------------------------------- what every node does locally


def _client_id(node: Node, target: Target) -> str | None:
    if target.session is None:
        return target.client
    for c in node.registry.user_clients(target.tenant, target.user):
        if c.session == target.session and (target.client is None or c.id == target.client):
            return c.id
    return NO_CLIENT


async def _apply(node: Node, op: str, target: Target, args: Sequence[Any]) -> None:
    """Apply one operation to this node's connections."""
    user, tenant, cid = target.user, target.tenant, _client_id(node, target)
    if op == "subscribe":
        await node.subscribe_user(user, args[0], tenant=tenant, client_id=cid)
    elif op == "unsubscribe":
        await node.unsubscribe_user(user, args[0], tenant=tenant, client_id=cid)
    elif op == "disconnect":
        code, reason, whitelist = args
        ids = [
            c.id
            for c in node.registry.user_clients(tenant, user)
            if (cid is None or c.id == cid) and c.id not in whitelist
        ]
        for one in ids:
            node.disconnect_user(user, tenant=tenant, client_id=one, code=code, reason=reason)
    elif op == "refresh":
        expired, expire_at = args
        node.refresh_user(user, tenant=tenant, client_id=cid, expired=expired, expire_at=expire_at)
    elif op == "message":
        node.send_message(user, orjson.Fragment(args[0]), tenant=tenant, client_id=cid)
    elif op == "claim":
        node.personal.claimed(node, target)
    else:
        raise ValueError(f"unknown control operation {op!r}")


def _channel_counts(node: Node, tenant: str, pattern: str) -> dict[str, int]:
    return node.channel_counts(tenant, compile_pattern(pattern) if pattern else None)


def _channel_users(node: Node, tenant: str, channel: str, limit: int) -> set[str]:
    """The named users subscribed to ``channel`` on this node, at most ``limit`` + 1."""
    users: set[str] = set()
    for table in node.registry.fanout.get((tenant, channel), ()):
        for client in table:
            if client.user:
                users.add(client.user)
                if len(users) > limit:
                    return users
    return users


async def _emulate_local(node: Node, session: str, data: bytes) -> bool:
    client = node.streams.get(session)
    if client is None:
        return False
    await client.handle_emulated(data)
    return True


class LocalControl:
    """One node alone: every operation acts here, ``nodes`` is this node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.handlers: dict[str, SurveyHandler] = {}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def subscribe_user(self, target: Target, channel: str) -> None:
        await _apply(self.node, "subscribe", target, (channel,))

    async def unsubscribe_user(self, target: Target, channel: str) -> None:
        await _apply(self.node, "unsubscribe", target, (channel,))

    async def disconnect_user(
        self, target: Target, code: int, reason: str, whitelist: Sequence[str] = ()
    ) -> None:
        await _apply(self.node, "disconnect", target, (code, reason, list(whitelist)))

    async def refresh_user(self, target: Target, *, expired: bool, expire_at: float) -> None:
        await _apply(self.node, "refresh", target, (expired, expire_at))

    async def send_message(self, target: Target, data: Any) -> None:
        await _apply(self.node, "message", target, (_json_text(data),))

    async def nodes(self, tenant: str | None = None) -> list[dict[str, Any]]:
        return [self.node.info(tenant)]

    async def channels(self, tenant: str, pattern: str = "") -> dict[str, int]:
        return _channel_counts(self.node, tenant, pattern)

    async def emulate(self, node_id: str, session: str, data: bytes) -> bool:
        return node_id == self.node.id and await _emulate_local(self.node, session, data)

    def answer(self, op: str, handler: SurveyHandler) -> None:
        self.handlers[op] = handler

    async def survey(self, op: str, args: list[Any]) -> dict[str, Any]:
        return {self.node.id: await self.handlers[op](args)}

    async def subscribers(self, tenant: str, channel: str, limit: int) -> set[str]:
        return _channel_users(self.node, tenant, channel, limit)

    async def claim_connection(self, target: Target) -> None:
        await _apply(self.node, "claim", target, ())


def _json_text(data: Any) -> bytes:
    """``data`` as JSON text (ValueError when it cannot be written)."""
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"data cannot be encoded: {exc}") from None


# ---------------------------------------------------------------- many nodes over Redis


def _pack(msg: dict[str, Any]) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)  # type: ignore[no-any-return]


def _target(raw: Sequence[Any]) -> Target:
    tenant, user, client, session = raw
    return Target(tenant, user, client, session)


@dataclass(slots=True)
class _Peer:
    info: dict[str, Any]
    seen: float
    """When we last heard it (monotonic)."""
    interval: float
    """Its announcement interval: silent for SILENT_INTERVALS of them, it is gone."""
    owner: str = ""
    """The presence owner it announced: whose entries to purge once it is gone."""


@dataclass(slots=True)
class _Survey:
    waiting: set[str]
    done: asyncio.Future[None]
    answers: dict[str, Any] = field(default_factory=dict)


class RedisControl:
    """The control channel of nodes sharing a Redis (see the module docstring for its policies).

    ``node_info_interval`` (seconds between two announcements) defaults to the node's config.
    """

    def __init__(
        self,
        node: Node,
        shards: RedisShards,
        *,
        node_info_interval: float | None = None,
        survey_timeout: float = SURVEY_TIMEOUT,
    ) -> None:
        self.node = node
        self.shard = shards.shards[0]
        self.interval = (
            node_info_interval if node_info_interval is not None else node.config.node_info_interval
        )
        self.survey_timeout = survey_timeout
        self.everyone = shards.channel("control", "", shard=self.shard)
        self.inbox = self.inbox_of(shards, node.id)
        self._shards = shards
        self._peers: dict[str, _Peer] = {}
        """The other live nodes, by id."""
        self._surveys: dict[str, _Survey] = {}
        self.handlers: dict[str, SurveyHandler] = {}
        """Added surveys this node answers (``answer``)."""
        self._ops: asyncio.Queue[tuple[str, Target, list[Any]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._answering: set[asyncio.Task[None]] = set()
        self._listening = False
        self._changed = asyncio.Event()
        self._started = False
        self.shard.on_reconnect(self._reconnected)

    @staticmethod
    def inbox_of(shards: RedisShards, node_id: str) -> str:
        return shards.channel("control", route_of("", node_id), shard=shards.shards[0])

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen and start announcing. Never fails on a down Redis: listening starts when it is back."""
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen(), name="control listen"),
            loop.create_task(self._announce_loop(), name="control announce"),
            loop.create_task(self._work(), name="control operations"),
        ]

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        for task in self._tasks + list(self._answering):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        with contextlib.suppress(ShardUnavailable):
            await self.shard.publish(self.everyone, _pack({"k": "bye", "n": self.node.id}))
        for channel in (self.everyone, self.inbox):
            with contextlib.suppress(ShardUnavailable):
                await self.shard.unsubscribe(channel)
        self._listening = False
        for survey in self._surveys.values():
            if not survey.done.done():
                survey.done.set_exception(ControlUnavailable("the node is leaving"))
        self._peers.clear()
        self._notify()

    async def _listen(self) -> None:
        """Subscribe both channels, retrying with backoff while Redis is down (once subscribed, the shard
        resubscribes them by itself after a reconnect)."""
        delay = 0.05
        while True:
            try:
                await self.shard.subscribe(self.everyone, self._received)
                await self.shard.subscribe(self.inbox, self._received)
            except ShardUnavailable as exc:
                log.warning("control channel not reachable (retrying): %s", exc)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # backoff, not a wait for an effect
                delay = min(2.0, delay * 2)
                continue
            self._listening = True
            await self._announce()
            return

    def _reconnected(self) -> None:
        # Others may have dropped us while we were gone: announce at once.
        if self._started and self._listening:
            self.node.spawn(self._announce(), "control announcement")

    # ------------------------------------------------------------ nodes

    async def _announce_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)  # the announcement period itself
            self._prune()
            if self._listening:
                await self._announce()

    async def _announce(self) -> None:
        if not self._started:
            return  # closed (a spawned announcement must not follow our "bye" and revive us elsewhere)
        msg = {
            "k": "info",
            "n": self.node.id,
            "i": self.node.info(),
            "t": self.interval,
            "p": self.node.presence.owner,
        }
        try:
            await self.shard.publish(self.everyone, _pack(msg))
        except ShardUnavailable as exc:
            log.info("node announcement not sent: %s", exc)

    def _prune(self) -> None:
        now = time.monotonic()
        gone = [n for n, p in self._peers.items() if now - p.seen > SILENT_INTERVALS * p.interval]
        for node_id in gone:
            log.warning("node %s is silent: dropped", node_id)
            self._drop(node_id)

    def _drop(self, node_id: str) -> None:
        peer = self._peers.pop(node_id, None)
        if peer is None:
            return
        self._purge_presence(node_id, peer.owner)
        for survey in self._surveys.values():
            survey.waiting.discard(node_id)
            if not survey.waiting and not survey.done.done():
                survey.done.set_result(None)
        self._notify()

    def _purge_presence(self, node_id: str, owner: str) -> None:
        """Remove the presence entries ``owner`` (of node ``node_id``) left behind, in the background."""
        if not owner:
            return

        async def purge() -> None:
            try:
                removed = await self.node.presence.purge(owner)
            except PresenceError as exc:  # they expire with their ttl all the same
                log.warning("presence of node %s not purged: %s", node_id, exc)
                return
            if removed:
                log.info("node %s: %d presence entries purged", node_id, removed)

        self.node.spawn(purge(), "presence purge")
        if self.node.events is not None:  # the channels only it held are vacated (events out)
            self.node.spawn(self.node.events.node_gone(owner), "occupancy purge")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def peers(self) -> list[str]:
        """Ids of the other live nodes, as this node knows them now."""
        self._prune()
        return sorted(self._peers)

    def peer_info(self, node_id: str) -> dict[str, Any] | None:
        """The last ``info`` node ``node_id`` announced; None for a node not (or no longer) live."""
        self._prune()
        peer = self._peers.get(node_id)
        return peer.info if peer is not None else None

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, checked after every announcement heard and every node dropped
        (operations and tests; wrap it in a timeout)."""
        while not predicate():
            await self._changed.wait()

    def _check_up(self) -> None:
        if not self._listening or not self.shard.connected:
            raise ControlUnavailable("the control channel's Redis is not reachable")

    async def nodes(self, tenant: str | None = None) -> list[dict[str, Any]]:
        self._check_up()
        if tenant is None:
            self._prune()
            infos = [self.node.info()] + [p.info for p in self._peers.values()]
        else:
            answers = await self._survey("info", [tenant])
            infos = [self.node.info(tenant), *answers.values()]
        return sorted(infos, key=lambda i: (str(i.get("name")), str(i.get("uid"))))

    async def channels(self, tenant: str, pattern: str = "") -> dict[str, int]:
        self._check_up()
        counts = _channel_counts(self.node, tenant, pattern)
        answers = await self._survey("channels", [tenant, pattern])
        for theirs in answers.values():
            for name, n in theirs.items():
                counts[name] = counts.get(name, 0) + n
        return counts

    async def emulate(self, node_id: str, session: str, data: bytes) -> bool:
        if node_id == self.node.id:
            return await _emulate_local(self.node, session, data)
        self._check_up()
        if node_id not in self.peers():
            return False
        answers = await self._survey("emulate", [session, data], to=node_id)
        return bool(answers.get(node_id))

    def answer(self, op: str, handler: SurveyHandler) -> None:
        self.handlers[op] = handler

    async def survey(self, op: str, args: list[Any]) -> dict[str, Any]:
        self._check_up()
        mine = await self.handlers[op](args)
        answers = await self._survey("x", [op, args])
        return {self.node.id: mine, **answers}

    async def subscribers(self, tenant: str, channel: str, limit: int) -> set[str]:
        self._check_up()
        users = _channel_users(self.node, tenant, channel, limit)
        for theirs in (await self._survey("subscribers", [tenant, channel, limit])).values():
            users.update(theirs)
            if len(users) > limit:
                break
        return users

    async def claim_connection(self, target: Target) -> None:
        # Not applied here at once, unlike the other operations: this node applies its own claim when
        # the control channel hands it back, in the order every other node sees it (``_received``).
        self._check_up()
        t = [target.tenant, target.user, target.client, target.session]
        msg = {"k": "op", "n": self.node.id, "o": "claim", "t": t}
        try:
            await self.shard.publish(self.everyone, _pack(msg))
        except ShardUnavailable as exc:
            raise ControlUnavailable(str(exc)) from exc

    # ------------------------------------------------------------ operations

    async def subscribe_user(self, target: Target, channel: str) -> None:
        await self._operate("subscribe", target, [channel])

    async def unsubscribe_user(self, target: Target, channel: str) -> None:
        await self._operate("unsubscribe", target, [channel])

    async def disconnect_user(
        self, target: Target, code: int, reason: str, whitelist: Sequence[str] = ()
    ) -> None:
        await self._operate("disconnect", target, [code, reason, list(whitelist)])

    async def refresh_user(self, target: Target, *, expired: bool, expire_at: float) -> None:
        await self._operate("refresh", target, [expired, expire_at])

    async def send_message(self, target: Target, data: Any) -> None:
        await self._operate("message", target, [_json_text(data)])

    async def _operate(self, op: str, target: Target, args: list[Any]) -> None:
        self._check_up()
        t = [target.tenant, target.user, target.client, target.session]
        msg = {"k": "op", "n": self.node.id, "o": op, "t": t, "a": args}
        try:
            await self.shard.publish(self.everyone, _pack(msg))
        except ShardUnavailable as exc:
            raise ControlUnavailable(str(exc)) from exc
        await _apply(self.node, op, target, args)

    async def _work(self) -> None:
        """Apply the other nodes' operations one at a time, in the order they arrived."""
        while True:
            op, target, args = await self._ops.get()
            try:
                await _apply(self.node, op, target, args)
            except Exception:
                log.exception("control operation %s for %s failed", op, target)

    # ------------------------------------------------------------ surveys

    async def _survey(self, op: str, args: list[Any], *, to: str | None = None) -> dict[str, Any]:
        """Ask every live node (or only ``to``) and return their answers by node id."""
        waiting = {to} if to is not None else set(self.peers())
        if not waiting:
            return {}
        request = uuid.uuid4().hex
        survey = _Survey(waiting, asyncio.get_running_loop().create_future())
        self._surveys[request] = survey
        msg = {"k": "ask", "n": self.node.id, "r": request, "o": op, "a": args}
        channel = self.everyone if to is None else self.inbox_of(self._shards, to)
        try:
            await self.shard.publish(channel, _pack(msg))
            async with asyncio.timeout(self.survey_timeout):
                await survey.done
        except ShardUnavailable as exc:
            raise ControlUnavailable(str(exc)) from exc
        except TimeoutError:
            missing = ", ".join(sorted(survey.waiting))
            raise ControlUnavailable(f"no answer to {op} from {missing} in {self.survey_timeout} s") from None
        finally:
            del self._surveys[request]
        return survey.answers

    async def _answer(self, asker: str, request: str, op: str, args: list[Any]) -> None:
        value: Any = None
        error = ""
        try:
            if op == "info":
                value = self.node.info(args[0])
            elif op == "channels":
                value = _channel_counts(self.node, args[0], args[1])
            elif op == "emulate":
                value = await _emulate_local(self.node, args[0], args[1])
            elif op == "x" and args[0] in self.handlers:
                value = await self.handlers[args[0]](args[1])
            elif op == "subscribers":
                value = sorted(_channel_users(self.node, args[0], args[1], int(args[2])))
            else:
                error = f"unknown survey {op!r}"
        except Exception as exc:
            log.exception("control survey %s failed", op)
            error = repr(exc)
        msg = {"k": "ans", "n": self.node.id, "r": request, "v": value, "e": error}
        try:
            await self.shard.publish(self.inbox_of(self._shards, asker), _pack(msg))
        except ShardUnavailable as exc:
            log.info("answer to %s's %s not sent: %s", asker, op, exc)

    # ------------------------------------------------------------ incoming

    def _received(self, data: bytes) -> None:
        try:
            msg = msgpack.unpackb(data, raw=False)
            kind, sender = msg["k"], msg["n"]
        except Exception:
            log.warning("control message that is not ours: %r", data[:100])
            return
        if kind == "op" and msg.get("o") == "claim":
            # Claims are applied in the channel's order by every node, ours included (``claim_connection``).
            self._ops.put_nowait(("claim", _target(msg["t"]), []))
            return
        if sender == self.node.id:
            return  # our own broadcast: already applied
        if kind == "info":
            before = self._peers.get(sender)
            known = before is not None
            owner = str(msg.get("p") or "")
            self._peers[sender] = _Peer(
                msg["i"], time.monotonic(), float(msg.get("t") or self.interval), owner
            )
            if before is not None and before.owner and before.owner != owner:
                # restarted under the same name before anyone dropped it: its old entries are orphans
                self._purge_presence(sender, before.owner)
            self._notify()
            if not known:
                log.info("node %s joined", sender)
                # The newcomer does not know us yet: answer its first announcement with ours.
                self.node.spawn(self._announce(), "control announcement")
        elif kind == "bye":
            log.info("node %s left", sender)
            self._drop(sender)
        elif kind == "op":
            self._ops.put_nowait((msg["o"], _target(msg["t"]), msg["a"]))
        elif kind == "ask":
            task = asyncio.get_running_loop().create_task(self._answer(sender, msg["r"], msg["o"], msg["a"]))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
        elif kind == "ans":
            survey = self._surveys.get(msg["r"])
            if survey is None or sender not in survey.waiting or survey.done.done():
                return
            if msg.get("e"):
                survey.done.set_exception(ControlUnavailable(f"node {sender}: {msg['e']}"))
                return
            survey.answers[sender] = msg["v"]
            survey.waiting.discard(sender)
            if not survey.waiting:
                survey.done.set_result(None)
