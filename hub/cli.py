"""``switchboard serve``, ``switchboard worker`` and ``switchboard token``."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from hub.auth import mint_token
from hub.codes import ConfigError
from hub.config import Config, dev_requested, load_config, redis_urls, validate
from hub.devmode import exposures, is_loopback, refusal
from hub.metrics import Metrics

log = logging.getLogger("switchboard")


def _config(args: argparse.Namespace) -> Config:
    try:
        return load_config(args.config, allow_dev_mode=True)
    except ConfigError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def uvicorn_config(app: Any, cfg: Config, metrics: Metrics | None = None) -> Any:
    """uvicorn's settings for serving ``app`` with ``cfg``: the hub's HTTP protocol (request timeouts and
    the cap on requests still arriving, counted into ``metrics``) and WebSocket protocol."""
    import uvicorn

    from hub.http_uvicorn import HttpGuard, http_protocol
    from hub.ws_uvicorn import SwitchboardWebSocketProtocol

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - platforms without uvloop
        loop = "asyncio"
    return uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        loop=loop,
        http=http_protocol(
            HttpGuard(
                header_timeout=cfg.http_header_timeout,
                body_timeout=cfg.http_body_timeout,
                max_unfinished=cfg.http_max_unfinished_requests,
                refused=metrics.http_refused if metrics is not None else None,
            )
        ),
        # in every mode: its shutdown code, its one-line logging of a peer's protocol errors, documents' frame
        # limit and pings; whether the hub writes frames through it is websocket_fast_path's to say
        ws=SwitchboardWebSocketProtocol,
        ws_max_size=cfg.client_max_message_size,
        ws_ping_interval=None,
        ws_per_message_deflate=cfg.websocket_compression,
        lifespan="on",
        log_level="warning" if cfg.log_level.lower() != "debug" else "debug",
        log_config=None,  # uvicorn's lines go through our handler (hub.logs), in our format
        access_log=False,
        timeout_graceful_shutdown=max(1, round(cfg.shutdown_timeout)),
        timeout_keep_alive=cfg.http_keep_alive_timeout,  # type: ignore[arg-type]  # a float works (call_later)
        backlog=4096,
    )


def settle_heap() -> int:
    """Collect once, then freeze what is alive (``gc.freeze``): the objects of start-up live as long as the
    process, and every full collection would otherwise walk them again. Under documents at 5,000 updates/s
    (bench/crdt.py capacity, 500 connections) a full collection took 2.1-2.5 s of wall time on the loaded
    2-vCPU box, and 0.9 s with the start-up heap frozen; gen-1 collections 44 ms at p50 against 27 ms.
    Returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def _server_class() -> Any:
    import uvicorn

    from hub.listener import Listener, bind_sockets

    class Server(uvicorn.Server):
        """uvicorn's server, with its own accepting (``hub.listener``: a node out of descriptors says so,
        and still answers ``/health`` and ``/ready``), and two changes for a graceful shutdown:

        - before uvicorn closes every connection at once, it stops accepting new ones and lets ``drain``
          (the node's batched disconnect of every session, of every transport) run; uvicorn then finishes
          what is left within what remains of ``shutdown_timeout``;
        - a SIGTERM/SIGINT that led to a clean shutdown ends the process with 0 (uvicorn re-raises the
          signal after shutting down, so the process would die by it).

        Once it listens, what start-up built (modules, config, the app: about 60,000 objects) is moved out
        of the collector's reach (``settle_heap``).
        """

        drain: Callable[[], Awaitable[None]] | None = None
        shutdown_timeout = 10.0
        metrics: Metrics | None = None

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            config = self.config
            if sockets is not None or config.fd is not None or config.uds is not None:
                await super().startup(sockets)
                return
            await self.lifespan.startup()
            if self.lifespan.should_exit:
                raise SystemExit(3)

            protocol_class: Any = config.http_protocol_class

            def create_protocol() -> Any:
                state = self.lifespan.state
                return protocol_class(config=config, server_state=self.server_state, app_state=state)

            try:
                listening = bind_sockets(config.host, config.port, config.backlog)
            except OSError as exc:
                log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
                await self.lifespan.shutdown()
                raise SystemExit(1) from None
            metrics = self.metrics or Metrics()
            listeners: list[Any] = []  # uvicorn's shutdown needs close() and wait_closed() of each
            for sock in listening:
                listener = Listener(
                    sock, create_protocol, accept_errors=metrics.accept_errors, refused=metrics.http_refused
                )
                listener.start()
                listeners.append(listener)
            self.servers = listeners
            self._log_started_message(listening)
            self.started = True
            settle_heap()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if self.drain is not None:
                started = time.monotonic()
                for server in self.servers:
                    server.close()  # stop accepting first: no new connection joins during the batches
                try:
                    await self.drain()
                except Exception:
                    log.exception("draining the node failed; closing connections at once")
                left = self.shutdown_timeout - (time.monotonic() - started)
                self.config.timeout_graceful_shutdown = max(1, int(left))
            await super().shutdown(sockets)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            sigs = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in sigs}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return Server


def serve(args: argparse.Namespace) -> None:

    from hub.app import Switchboard
    from hub.logs import setup_logging

    cfg = _config(args)
    if args.host:
        cfg.host = args.host
    if args.port:
        cfg.port = args.port
    try:
        if args.redis:
            cfg.redis_urls = redis_urls(args.redis)
        if args.redis_cluster:
            cfg.redis_cluster = True
        if args.node_name:
            cfg.node_name = args.node_name
        if args.data_dir:
            cfg.data_dir = args.data_dir
        if args.doc_store:
            cfg.doc_store = args.doc_store
        validate(cfg)
    except ConfigError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if cfg.dev_mode and not is_loopback(cfg.host) and not (args.dev or dev_requested()):
        print(f"switchboard: {refusal(cfg.host)}", file=sys.stderr)
        raise SystemExit(2)
    setup_logging(cfg.log_level, cfg.log_format)
    if cfg.dev_mode:
        log.warning(
            "development mode (no config file, no token key), not for production; open to anyone who "
            "reaches %s:%d:",
            cfg.host,
            cfg.port,
        )
        for line in exposures(cfg):
            log.warning("development mode: %s", line)
    app = Switchboard(cfg)
    log.info("listening on http://%s:%d", cfg.host, cfg.port)
    server = _server_class()(uvicorn_config(app, cfg, app.node.metrics))
    server.metrics = app.node.metrics
    server.drain = app.drain
    server.shutdown_timeout = cfg.shutdown_timeout
    server.run()


def worker(args: argparse.Namespace) -> None:
    """Deliver webhooks and email from the outbox the nodes write to, and be a candidate for the ``[mqtt]``
    bridge (one per deployment, by a lease in Redis), until SIGTERM (``workers.process``)."""
    import asyncio

    from hub.logs import setup_logging
    from workers.process import run

    try:
        cfg = load_config(args.config)
        if args.data_dir:
            cfg.data_dir = args.data_dir
        if args.node_name:
            cfg.node_name = args.node_name
        validate(cfg)
    except ConfigError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(cfg.log_level, cfg.log_format)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - platforms without uvloop
        pass
    asyncio.run(run(cfg, metrics_port=args.metrics_port))


def token(args: argparse.Namespace) -> None:
    cfg = _config(args)
    if not cfg.token_hmac_secret_key:
        print("switchboard: token_hmac_secret_key is not configured", file=sys.stderr)
        raise SystemExit(2)
    info = None
    if args.info:
        try:
            info = json.loads(args.info)
        except json.JSONDecodeError as exc:
            print(f"switchboard: --info is not JSON: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    channels = [c for c in (args.channels or "").split(",") if c]
    print(
        mint_token(
            cfg.token_hmac_secret_key,
            args.user,
            ttl=args.ttl,
            info=info,
            channels=channels or None,
            tenant=args.tenant,
            channel=args.channel,
        )
    )


def admin_hash(args: argparse.Namespace) -> None:
    """Print a hash of the console password read from stdin (or asked for on a terminal)."""
    import getpass

    from hub.admin.auth import hash_password

    password = (
        getpass.getpass("console password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    )
    if not password:
        print("switchboard: no password given", file=sys.stderr)
        raise SystemExit(2)
    print(hash_password(password, args.scheme))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="switchboard", description="Switchboard realtime hub")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the hub")
    p_serve.add_argument("--host", default=None)
    p_serve.add_argument("--port", type=int, default=None)
    p_serve.add_argument("--config", default=None, help="TOML config file (default: $SWITCHBOARD_CONFIG)")
    p_serve.add_argument(
        "--dev",
        action="store_true",
        help="allow development mode (no config, no token key) on a non-loopback address (SWITCHBOARD_DEV=1)",
    )
    p_serve.add_argument(
        "--redis",
        action="append",
        default=[],
        metavar="URL",
        help="a Redis server shared by the nodes (repeat it to shard channels over several servers)",
    )
    p_serve.add_argument(
        "--redis-cluster", action="store_true", help="the --redis URLs are seed nodes of one Redis Cluster"
    )
    p_serve.add_argument("--node-name", default=None, help="this node's name (default: host and a random id)")
    p_serve.add_argument("--data-dir", default=None)
    p_serve.add_argument("--doc-store", choices=("auto", "sqlite", "redis"), default=None)
    p_serve.set_defaults(func=serve)
    p_worker = sub.add_parser(
        "worker",
        help="deliver webhooks and email, and run the [mqtt] bridge (one per deployment, by a Redis lease)",
    )
    p_worker.add_argument("--config", default=None, help="TOML config file (default: $SWITCHBOARD_CONFIG)")
    p_worker.add_argument(
        "--data-dir", default=None, help="the nodes' data directory (their outbox, on SQLite)"
    )
    p_worker.add_argument(
        "--node-name", default=None, help="a name for this worker's attempts (default: host)"
    )
    p_worker.add_argument("--metrics-port", type=int, default=0, help="serve /metrics of the deliveries here")
    p_worker.set_defaults(func=worker)
    p_token = sub.add_parser("token", help="print a connection (or subscription) JWT")
    p_token.add_argument("--user", required=True)
    p_token.add_argument("--ttl", type=int, default=None, help="seconds until it expires")
    p_token.add_argument("--info", default=None, help="JSON info claim")
    p_token.add_argument("--channels", default=None, help="comma-separated server-side channels")
    p_token.add_argument("--tenant", default=None)
    p_token.add_argument("--channel", default=None, help="make a subscription token for this channel")
    p_token.add_argument("--config", default=None, help="TOML config file (default: $SWITCHBOARD_CONFIG)")
    p_token.set_defaults(func=token)
    p_hash = sub.add_parser("admin-hash", help="print a hash for admin_password_hash (password from stdin)")
    p_hash.add_argument("--scheme", choices=("scrypt", "pbkdf2_sha256"), default="scrypt")
    p_hash.set_defaults(func=admin_hash)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":  # pragma: no cover
    main()
