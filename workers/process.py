"""Running deliveries: in the node (``start_worker``, the embedded default) or as ``switchboard worker``
(``run``), a process of its own that shares the outbox with the nodes and other workers (the store's lease
keeps two of them from delivering one task at the same time). With ``[mqtt]`` (and Redis) the worker is also
a candidate for the MQTT bridge: it runs a node without HTTP (``Switchboard.start_bridge``) and the bridge
while it holds the bridge's lease (``workers.lease``); set ``mqtt_enabled = false`` on the web nodes to
keep the bridge in worker processes.

The worker process builds the hub's composition root (``hub.app.Switchboard``) without serving, for its
store and settings, so it uses exactly the store the nodes write to (the inbox's, or the outbox's own in
``data_dir``). It stops on SIGTERM or SIGINT: it claims nothing more and lets the deliveries in flight
finish for a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from hub.config import Config
from hub.metrics import OutboxCollector, OutboxMetrics
from inbox.inbox import InboxStore
from workers.email import EmailSender
from workers.outbox import OutboxWorker, Sender, worker_name
from workers.webhook import WebhookSender

log = logging.getLogger("switchboard.workers")


def senders(config: Config, origin: str) -> list[Sender]:
    """A sender per configured destination (``origin``: the store's, for the webhook-id)."""
    out: list[Sender] = [WebhookSender(hook, origin) for hook in config.webhooks]
    if config.email is not None:
        out.append(EmailSender(config.email, origin))
    return out


async def start_worker(config: Config, node: str, store: InboxStore, metrics: OutboxMetrics) -> OutboxWorker:
    """A started worker on the open ``store`` for every configured destination."""
    worker = OutboxWorker(
        store,
        senders(config, store.origin),
        name=worker_name(node),
        metrics=metrics,
        retention=config.outbox_retention,
    )
    worker.start()
    return worker


async def run(config: Config, *, metrics_port: int = 0) -> None:
    """``switchboard worker``: deliver, and be a candidate for the MQTT bridge, until SIGTERM/SIGINT."""
    from hub.app import Switchboard
    from hub.ingest.metrics import FeedCollector
    from hub.metrics import MetricsServer, build_registry

    sb = Switchboard(config)
    store = sb.outbox_store()
    bridge = config.mqtt is not None and config.mqtt_enabled
    if bridge and not config.redis_urls:
        log.warning(
            "[mqtt] needs redis_urls in a worker (the nodes' broker, and the bridge's lease): no bridge"
        )
        bridge = False
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if store is None and not bridge:  # idle rather than exit: a platform would restart it again and again
        log.warning("nothing to do: no [[webhooks]], no [email], no [mqtt] configured; idle until stopped")
        await stop.wait()
        return
    metrics = OutboxMetrics()
    registry = build_registry(OutboxCollector(metrics))
    worker: OutboxWorker | None = None
    server = None
    try:
        if store is not None:
            await store.open()
            worker = await start_worker(config, config.node_name, store, metrics)
        if bridge:
            await sb.start_bridge()
            registry.register(FeedCollector(sb.node.feed_metrics))
        if metrics_port:
            server = MetricsServer(registry, config.host, metrics_port)
            await server.start()
        await stop.wait()
    finally:
        log.info("worker %s stopping", config.node_name)
        if bridge:
            await sb.stop_bridge()
        if worker is not None:
            await worker.stop()
        if store is not None:
            with contextlib.suppress(Exception):
                await store.close()
        if server is not None:
            await server.stop()
