"""The MQTT bridge: readings from an MQTT broker into channels, and channels out to MQTT topics.

Its candidates are the nodes with ``[mqtt]`` configured and ``mqtt_enabled`` (the default), and
``switchboard worker`` processes with ``[mqtt]``; exactly one of them runs it at a time, the one holding
the bridge's lease (``workers.lease``: in Redis, one per deployment; a process without Redis runs it
alone), since each bridge would publish every message it receives. The others stand by: they take over
within a third of ``mqtt_lease_ttl`` when the holder stops, within ``mqtt_lease_ttl`` when it dies. The
mapping is ``channels.topics`` (routes, the guard on what a topic level may put in a channel name), the
settings ``hub.ingest.settings.MqttSettings``.

Policies:

- **In**: every ``[[mqtt.subscribe]]`` filter is subscribed with QoS 1 (the broker resends what was not
  acknowledged); a message goes through the first route whose filter matches its topic. Its payload is
  the publication's data: in a JSON namespace it must be JSON (re-encoded compact: a pretty-printed
  payload's line breaks would split line-delimited frames), in a binary namespace any bytes; then it
  passes ``Node.publish_to`` (the namespace's ``data_schema``). A payload over ``max_payload``, one that is
  not JSON, one the schema refuses, a topic no channel can be made of: refused, counted
  (``switchboard_mqtt_messages_total{direction="in",result="refused"}``) and logged (one rate-limited line
  each). Bridged publications carry the client info ``{"user": "", "client": "mqtt"}``.
- **Keys**: a route's ``key`` template makes the reading's key, keyed as a client publish is
  (``channels.feeds.publication_key``: in a keyed namespace it must agree with the data's ``key_field``
  member when the data has one), so conflation and the latest value per key hold for bridged feeds.
- **Retained messages** (what a broker hands a new subscriber) are each topic's last value: published
  into the channel like any reading, with its key, so the channel's history and its latest value per key
  (cache recovery) hold it and a new subscriber gets it at once; once per distinct payload (the same
  retained message handed again after a reconnect is not published again).
- **Out**: the publications of every channel a ``[[mqtt.publish]]`` route matches (found as they are
  published to: ``hub.watch``) go to the route's topic with QoS 1, as their data's bytes; never the bridge's
  own publications (no loop). Up to ``max_queue`` wait while the link is down; past it the oldest are
  dropped (counted, logged). One over ``max_payload`` is dropped.
- **The link**: reconnects with exponential backoff (``reconnect_min`` doubling to ``reconnect_max``, with
  jitter) and subscribes again; its state is the gauge ``switchboard_mqtt_link_up`` and one log line per
  change (rate-limited, for a broker that flaps).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import socket
import ssl
from collections import deque
from typing import TYPE_CHECKING

import aiomqtt
import orjson

from channels.errors import InvalidChannel, UnknownNamespace
from channels.names import ChannelKey, parse_channel
from channels.publication import ClientInfo, Publication
from hub import codec_json
from hub.codes import ClientError
from hub.ingest.settings import MqttSettings
from hub.logs import log_limited

if TYPE_CHECKING:
    from hub.node import Node

log = logging.getLogger("switchboard.mqtt")

BRIDGE_INFO = ClientInfo("", "mqtt")
"""The client info of every publication the bridge makes (and how it knows its own)."""
RETAINED_KEPT = 100_000
"""Topics whose last retained payload the bridge remembers (then it starts over)."""


class MqttBridge:
    def __init__(self, node: Node, settings: MqttSettings) -> None:
        self.node = node
        self.settings = settings
        self.client_id = settings.client_id or f"switchboard-{node.id}"[:64]
        self.metrics = node.feed_metrics
        self.metrics.mqtt_up = 0
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._outbox: deque[tuple[str, bytes, bool]] = deque()
        self._outbox_ready = asyncio.Event()
        self._retained: dict[str, bytes] = {}
        """Topic -> digest of the last retained payload published from it."""
        self._task: asyncio.Task[None] | None = None
        if settings.publish:
            routes = settings.publish
            node.watch.listen(lambda name: any(route.matches(name) for route in routes), self)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._up(False, "closed")

    # ------------------------------------------------------------ the link

    def _up(self, up: bool, why: str) -> None:
        if bool(self.metrics.mqtt_up) == up:
            return
        self.metrics.mqtt_up = int(up)
        self.metrics.mqtt_link_changes += 1
        if up:
            self.connected.set()
            log_limited(
                log, logging.INFO, "mqtt bridge connected to %s as %s", self.settings.url, self.client_id
            )
        else:
            self.connected.clear()
            log_limited(log, logging.WARNING, "mqtt bridge lost %s: %s", self.settings.url, why)

    def _client_for(self) -> aiomqtt.Client:
        s = self.settings
        return aiomqtt.Client(
            s.host,
            s.port,
            username=s.username or None,
            password=s.password or None,
            identifier=self.client_id,
            clean_session=False,  # the broker keeps QoS 1 messages for us while the link is down
            keepalive=s.keepalive,
            timeout=10.0,
            tls_context=ssl.create_default_context() if s.tls else None,
            max_queued_incoming_messages=s.max_queue,
            # PUBACKs go out at once: Nagle's algorithm held each tiny one back until the broker's delayed
            # ACK (~40 ms), and the broker sends only a window of QoS 1 messages per round trip.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def _run(self) -> None:
        delay = self.settings.reconnect_min
        while True:
            try:
                async with self._client_for() as client:
                    self._client = client
                    for route in self.settings.subscribe:
                        await client.subscribe(route.filter.text, qos=1)
                    self._up(True, "")
                    delay = self.settings.reconnect_min
                    sender = asyncio.get_running_loop().create_task(self._send(client))
                    try:
                        async for message in client.messages:
                            await self._received(message)
                    finally:
                        sender.cancel()
                        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                            await sender
            except aiomqtt.MqttError as exc:
                self._up(False, str(exc) or type(exc).__name__)
            finally:
                self._client = None
            wait = min(delay, self.settings.reconnect_max) * random.uniform(0.5, 1.0)
            await asyncio.sleep(wait)  # backoff before the next attempt
            delay = min(delay * 2, self.settings.reconnect_max)

    # ------------------------------------------------------------ in

    async def _received(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        reason = await self.bring_in(topic, payload, retained=bool(message.retain))
        result = "published" if reason is None else "refused" if reason else "skipped"
        self.metrics.mqtt_messages[("in", result)] += 1
        if reason:
            log_limited(log, logging.INFO, "mqtt message on %s refused: %s", topic[:200], reason)

    async def bring_in(self, topic: str, payload: bytes, *, retained: bool = False) -> str | None:
        """Publish one message's payload into its channel: None when published, "" when skipped (a retained
        payload published before, a topic no route takes), else why it was refused."""
        if len(payload) > self.settings.max_payload:
            return f"payload of {len(payload)} bytes over max_payload ({self.settings.max_payload})"
        for route in self.settings.subscribe:
            routed = route.route(topic)
            if routed is not None:
                break
        else:
            return ""
        if isinstance(routed, str):
            return routed
        name, key = routed
        digest = b""
        if retained:
            digest = hashlib.blake2b(payload, digest_size=16).digest()
            if self._retained.get(topic) == digest:
                return ""
        try:
            channel = parse_channel(name)
            opts = self.node.namespaces.options_for(channel)
        except (InvalidChannel, UnknownNamespace) as exc:
            return f"channel {name!r}: {type(exc).__name__}: {exc}"
        if opts.binary:
            data = payload
        else:
            try:
                data = codec_json.data_bytes(orjson.loads(payload))
            except (orjson.JSONDecodeError, codec_json.DecodeError) as exc:
                return f"payload is not JSON ({exc}) and {name!r} is in a JSON namespace"
        try:
            await self.node.publish_to(
                self.settings.tenant, channel, opts, data, info=BRIDGE_INFO, feed_key=key
            )
        except ClientError as exc:
            return exc.message
        if retained:
            if len(self._retained) >= RETAINED_KEPT:
                self._retained.clear()
            self._retained[topic] = digest
        return None

    # ------------------------------------------------------------ out (ChannelTap, on the fan-out path)

    def publication(self, key: ChannelKey, pub: Publication) -> None:
        if self._task is None:  # a standby candidate (or closed): the running bridge sends it
            return
        if key[0] != self.settings.tenant or (pub.info is not None and pub.info.client == BRIDGE_INFO.client):
            return
        for route in self.settings.publish:
            topic = route.topic_for(key[1])
            if topic is not None:
                break
        else:
            return
        if len(pub.data) > self.settings.max_payload:
            self.metrics.mqtt_messages[("out", "refused")] += 1
            log_limited(log, logging.INFO, "publication of %s not sent to MQTT: over max_payload", key[1])
            return
        if len(self._outbox) >= self.settings.max_queue:
            self._outbox.popleft()
            self.metrics.mqtt_messages[("out", "dropped")] += 1
            log_limited(
                log, logging.WARNING, "mqtt outbox full (%d): the oldest dropped", self.settings.max_queue
            )
        self._outbox.append((topic, pub.data, route.retain))
        self._outbox_ready.set()

    def join(self, key: ChannelKey, info: ClientInfo) -> None:
        pass

    def leave(self, key: ChannelKey, info: ClientInfo) -> None:
        pass

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            while not self._outbox:
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
            topic, payload, retain = self._outbox[0]
            await client.publish(topic, payload, qos=1, retain=retain)  # a lost link raises: kept for later
            if self._outbox and self._outbox[0][0] == topic and self._outbox[0][1] is payload:
                self._outbox.popleft()
            self.metrics.mqtt_messages[("out", "published")] += 1
