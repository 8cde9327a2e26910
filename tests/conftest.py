"""Shared fixtures: a real hub on a free loopback port (uvicorn in the test's loop, the same protocol
class as production), tokens, a raw protocol client, and the official centrifuge-python SDK.

Wait on events with generous timeouts; never sleep to let something happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
import websockets
from hypothesis import HealthCheck, settings
from websockets.asyncio.client import ClientConnection

from channels.options import NamespaceOptions
from hub.app import Switchboard
from hub.auth import mint_token
from hub.cli import uvicorn_config
from hub.config import DEV_CHANNEL_OPTIONS, Config
from hub.hooks import Hooks
from hub.logs import LIMITER
from tests.postgres_servers import PostgresServer
from tests.redis_servers import RedisCluster, RedisServer, redis_servers

SECRET = "test-secret-of-at-least-32-bytes-length!"
TIMEOUT = 10.0
"""Generous: the suite must pass on a busy 2-core machine."""

START_TIMEOUT = 3 * TIMEOUT
"""For a ``python -m hub`` process to start, or refuse to, and exit: importing the hub alone is 2.5 s of
CPU, and took 17 s at a load average of 20 (two test workers and their nodes on two cores)."""

OPEN = DEV_CHANNEL_OPTIONS
"""Everything allowed to everyone, with presence, forced join/leave, history and recovery."""

# Hypothesis draws new examples on every run (never ``derandomize``): a property that holds only for the
# examples of one seed is not a property. A failure prints the shrunk example and a ``@reproduce_failure``
# blob (and, when the blob cannot replay it, ``--hypothesis-seed=N``): paste either to replay it exactly.
# ``ci`` (the default): no deadline, since a busy 2-core machine makes timings meaningless, and at most
# 100 examples for a test that names no number. ``soak`` draws more, for a long local run:
# ``HYPOTHESIS_PROFILE=soak pytest tests/fuzz``.
settings.register_profile(
    "ci", deadline=None, print_blob=True, max_examples=100, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("soak", settings.get_profile("ci"), max_examples=5_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


LOOPBACK_TLS = ssl.create_default_context()
"""The one TLS context of the suite's httpx clients (``http_client``): httpx builds a context for every
client it creates, about 70 ms of CPU loading the CA bundle, and the tests' clients speak plain HTTP to
loopback; helpers that open a client per request (and poll with it) spent most of their time there."""


def http_client(**kw: Any) -> httpx.AsyncClient:
    """``httpx.AsyncClient(**kw)`` sharing ``LOOPBACK_TLS``: what every test uses."""
    kw.setdefault("verify", LOOPBACK_TLS)
    return httpx.AsyncClient(**kw)


def test_config(**overrides: Any) -> Config:
    """The suite's configuration: an open unnamed namespace plus namespaces with specific rules.

    - ``chat``: subscribers may publish, read history and presence; recovery forced; join/leave on demand.
    - ``locked``: nothing allowed without a subscription token.
    - ``nohist``: subscribe/publish allowed, no history, no presence.
    - ``personal``: user-limited channels (``personal:inbox#alice``).
    """
    namespaces = {
        "chat": NamespaceOptions(
            presence=True,
            join_leave=True,
            history_size=100,
            history_ttl=300.0,
            force_recovery=True,
            allow_subscribe_for_client=True,
            allow_publish_for_subscriber=True,
            allow_history_for_subscriber=True,
            allow_presence_for_subscriber=True,
        ),
        "locked": NamespaceOptions(presence=True, history_size=10, history_ttl=60.0),
        "nohist": NamespaceOptions(allow_subscribe_for_client=True, allow_publish_for_client=True),
        "personal": NamespaceOptions(
            allow_user_limited_channels=True,
            history_size=10,
            history_ttl=60.0,
            allow_publish_for_subscriber=True,
        ),
    }
    cfg = Config(
        token_hmac_secret_key=SECRET,
        allow_anonymous_connect_without_token=True,
        channel=OPEN,
        namespaces=namespaces,
        client_expired_close_delay=1.0,
        shutdown_timeout=2.0,
    )
    return dataclasses.replace(cfg, **overrides)


def token(user: str, **kw: Any) -> str:
    return mint_token(SECRET, user, **kw)


@pytest.fixture(autouse=True)
def _fresh_log_limiter() -> None:
    """Every test starts with the rate limit of repeatable log lines (hub.logs.LIMITER) unspent: the lines
    one test expects are not left out because the tests before it spent their kind's burst."""
    LIMITER.reset()


@dataclasses.dataclass
class RunningHub:
    sb: Switchboard
    server: uvicorn.Server
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


HubFactory = Callable[..., Awaitable[RunningHub]]

WEBSOCKET_MODES: dict[str, dict[str, Any]] = {
    "fast": {},
    "asgi": {"websocket_fast_path": False},
    "deflate": {"websocket_compression": True},
}
"""The hub's WebSocket modes: the fast path (pre-built frames written to the socket, the default), the
portable ASGI ``send()``, and permessage-deflate (which rules out the fast path)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "all_websocket_modes: run the module's in-process hubs in every WEBSOCKET_MODES mode"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "websocket_mode" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "all_websocket_modes"
    ):
        metafunc.parametrize("websocket_mode", list(WEBSOCKET_MODES), indirect=True)


@pytest.fixture
def websocket_mode(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Config overrides of the in-process hubs' WebSocket mode: the fast path unless the module is marked
    ``all_websocket_modes`` (then every test runs once per mode)."""
    return WEBSOCKET_MODES[getattr(request, "param", "fast")]


@contextlib.asynccontextmanager
async def asgi_servers() -> AsyncIterator[Callable[[Any, Config], Awaitable[tuple[uvicorn.Server, int]]]]:
    """Serve any ASGI app under uvicorn with the hub's WebSocket protocol, on a free port; every server
    started is stopped on leaving (``serve_asgi``, and fixtures on another event loop, e.g.
    tests/browser.py)."""
    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(app: Any, cfg: Config) -> tuple[uvicorn.Server, int]:
        ucfg = uvicorn_config(app, cfg)
        ucfg.port = 0
        server = uvicorn.Server(ucfg)
        task = asyncio.get_running_loop().create_task(server.serve())
        running.append((server, task))
        async with asyncio.timeout(TIMEOUT):
            while not server.started:  # uvicorn offers no start event; poll it, bounded
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        return server, server.servers[0].sockets[0].getsockname()[1]

    try:
        yield start
    finally:
        for server, _task in running:
            server.should_exit = True
        for _server, task in running:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, TIMEOUT)


@pytest.fixture
async def serve_asgi() -> AsyncIterator[Callable[[Any, Config], Awaitable[tuple[uvicorn.Server, int]]]]:
    """Serve any ASGI app under uvicorn with the hub's WebSocket protocol, on a free port."""
    async with asgi_servers() as start:
        yield start


@pytest.fixture
async def make_hub(serve_asgi: Any, websocket_mode: dict[str, Any]) -> AsyncIterator[HubFactory]:
    async def factory(
        config: Config | None = None, *, hooks: Hooks | None = None, **overrides: Any
    ) -> RunningHub:
        if config is not None:
            cfg = dataclasses.replace(config, **websocket_mode) if websocket_mode else config
        else:
            cfg = test_config(**{**websocket_mode, **overrides})
        sb = Switchboard(cfg, hooks=hooks)
        server, port = await serve_asgi(sb, cfg)
        return RunningHub(sb, server, port)

    yield factory


@pytest.fixture
async def hub(make_hub: HubFactory) -> RunningHub:
    return await make_hub()


class RawClient:
    """A protocol-level client: send commands, read replies and pushes one by one."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._next_id = 0
        self._inbox: list[dict[str, Any]] = []

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def command(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one command and return its reply (pushes meanwhile are kept for ``push()``)."""
        self._next_id += 1
        cmd_id = self._next_id
        await self.ws.send(orjson.dumps({"id": cmd_id, method: params or {}}).decode())
        return await self.reply(cmd_id)

    async def reply(self, cmd_id: int) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            while True:
                for i, msg in enumerate(self._inbox):
                    if msg.get("id") == cmd_id:
                        return self._inbox.pop(i)
                await self._read()

    async def push(self, kind: str | None = None) -> dict[str, Any]:
        """The next push (of ``kind``: pub, join, leave, ...), skipping pings."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                for i, msg in enumerate(self._inbox):
                    if "push" in msg and (kind is None or kind in msg["push"]):
                        return self._inbox.pop(i)["push"]  # type: ignore[no-any-return]
                await self._read()

    async def _read(self) -> None:
        frame = await self.ws.recv()
        for line in (frame if isinstance(frame, str) else frame.decode()).split("\n"):
            if line.strip():
                msg = orjson.loads(line)
                if msg:  # {} is a ping
                    self._inbox.append(msg)
                else:
                    await self.ws.send("{}")

    async def closed(self) -> tuple[int, str]:
        """Wait for the server to close; return (code, reason)."""
        async with asyncio.timeout(TIMEOUT):
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    await self._read()
        assert self.ws.close_code is not None
        return self.ws.close_code, self.ws.close_reason or ""


@pytest.fixture
async def raw_client() -> AsyncIterator[Callable[..., Awaitable[RawClient]]]:
    opened: list[ClientConnection] = []

    async def connect(hub: RunningHub, *, connect: dict[str, Any] | None = None, **kw: Any) -> RawClient:
        ws = await websockets.connect(hub.url, max_size=None, open_timeout=TIMEOUT, **kw)
        opened.append(ws)
        client = RawClient(ws)
        if connect is not None:
            reply = await client.command("connect", connect)
            assert "connect" in reply, reply
        return client

    yield connect
    for ws in opened:
        with contextlib.suppress(Exception):
            await ws.close()


def _json_payloads_over_protobuf() -> Any:
    """centrifuge-python in Protobuf mode, with the application's JSON payloads encoded to bytes and back
    (what an app using the Protobuf SDKs does itself), so every SDK test runs unchanged over both protocols:
    the wire between SDK and hub is Protobuf throughout."""
    from centrifuge import Client

    class ProtobufClient(Client):  # type: ignore[misc]
        def _encode_data(self, data: Any) -> Any:
            return super()._encode_data(orjson.dumps(data))

        def _decode_data(self, data: Any) -> Any:
            raw = super()._decode_data(data)
            return None if raw is None else orjson.loads(raw)

    return ProtobufClient


@pytest.fixture(params=["json", "protobuf"])
async def sdk(request: Any) -> AsyncIterator[Callable[..., Any]]:
    """Factory of official centrifuge-python clients, once per protocol (JSON, Protobuf); all are
    disconnected at the end."""
    from centrifuge import Client

    protobuf = request.param == "protobuf"
    cls = _json_payloads_over_protobuf() if protobuf else Client
    clients: list[Any] = []

    def make(hub: RunningHub, **kw: Any) -> Any:
        kw.setdefault("timeout", TIMEOUT)
        client = cls(hub.url, use_protobuf=protobuf, **kw)
        clients.append(client)
        return client

    yield make
    for client in clients:
        with contextlib.suppress(Exception):
            await client.disconnect()


# --- Redis: real redis-server processes on free loopback ports (tests/redis_servers.py) ---------------------


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """One fresh, empty standalone server per test (no persistence); always cleaned up."""
    with redis_servers(1) as servers:
        yield servers[0]


@pytest.fixture
def redis_two() -> Iterator[list[RedisServer]]:
    """Two fresh standalone servers per test."""
    with redis_servers(2) as servers:
        yield servers


@pytest.fixture(scope="session")
def _redis_cluster_session() -> Iterator[RedisCluster]:
    cluster = RedisCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def redis_cluster(_redis_cluster_session: RedisCluster) -> RedisCluster:
    """A 3-master Redis Cluster shared by the session, FLUSHALLed on every master before each test;
    ``.urls`` are its seed URLs. Tests must not stop its servers (use ``redis_server`` for that)."""
    _redis_cluster_session.flushall()
    return _redis_cluster_session


# --- PostgreSQL: one throwaway cluster per session (tests/postgres_servers.py), started on first use -----


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL cluster (fsync off); tests take a fresh schema each (``fresh_database``)."""
    server = PostgresServer({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
    try:
        server.start()
        yield server
    finally:
        server.stop()


# --- Browser screenshots (tests/browser.py): where they are, said at the end of the run ---------------------


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """A pytest-xdist worker ended: keep where its browser tests saved their screenshots."""
    from tests.browser import collect_worker_artifacts

    collect_worker_artifacts(node)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    from tests.browser import report_artifacts

    report_artifacts(config, terminalreporter)


# --- Many nodes (tests/nodes.py): a failed test's report carries the logs of the hub processes it used -----


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        from tests.nodes import node_logs_section

        logs = node_logs_section(item)
        if logs:
            report.sections.append(("hub node logs", logs))
    return report
