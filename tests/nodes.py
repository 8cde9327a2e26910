"""Hub nodes as real processes: several ``switchboard serve`` subprocesses sharing a Redis deployment (or,
without Redis, separate single-process hubs: how the harness itself is checked).

Every node runs ``python -m hub serve`` (the venv's interpreter, ``sys.executable``) on a free loopback port
with a TOML config written under the test's temporary directory, its own data directory and its output in
a log file. ``start()`` returns once ``GET /ready`` answers 200 (polled with a deadline: there is no event
to wait on from outside a process); ``stop()`` is SIGTERM and a wait for exit 0, ``kill()`` SIGKILL (a
crash: no shutdown handshake, presence entries left to expire); ``start()`` again reuses the same port.

Fixtures (import them into a test module to use them): ``make_nodes`` (a factory: ``await make_nodes(3,
redis=[url], cluster=False, doc_store=None, shared_data_dir=False, **config)``), ``nodes`` (three nodes on
one fresh Redis), ``sharded_nodes`` (three over two Redis servers), ``cluster_nodes`` (three over the Redis
Cluster); ``module_nodes`` (with tests/redis_servers.py's ``redis_servers``) builds the same for a
module-scoped fixture.

When a test fails, the logs of every node it started are added to its report (``node_logs_section``,
called from the report hook in tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import httpx
import pytest

from tests.conftest import SECRET, START_TIMEOUT, TIMEOUT, http_client, token
from tests.ports import free_port
from tests.redis_servers import RedisCluster, RedisServer

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "nodes-api-key"
STARTUP_TIMEOUT = START_TIMEOUT
"""Generous: three interpreters importing the hub at once on a busy 2-core machine."""

PRESENCE_TTL = 2.0
PRESENCE_UPDATE_INTERVAL = 0.5
NODE_INFO_INTERVAL = 0.5

# The namespaces every node serves. "chat": presence, join/leave, history and recovery, subscribers may
# publish and read presence/history (what the centrifuge SDK tests use); the unnamed namespace: everything
# open to everyone, with history and recovery; "nohist": plain fan-out; "feeds": a keyed sensor feed
# (conflation at 10 a second per sensor, the latest of each on subscribe, fossil deltas).
CONFIG_TEMPLATE = """\
token_hmac_secret_key = "{secret}"
allow_anonymous_connect_without_token = true
api_key = "{api_key}"
client_expired_close_delay = 1.0
shutdown_timeout = 3.0
shutdown_batch_pause = 0.01
presence_ttl = {presence_ttl}
presence_update_interval = {presence_update_interval}
node_info_interval = {node_info_interval}
doc_anonymous_access = "write"
doc_token_access = "write"
doc_unload_delay = 1.0
{extra}
[channel]
presence = true
join_leave = true
force_push_join_leave = true
history_size = 1000
history_ttl = 300
force_recovery = true
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_client = true
allow_publish_for_anonymous = true
allow_history_for_client = true
allow_history_for_anonymous = true
allow_presence_for_client = true
allow_presence_for_anonymous = true

[[namespaces]]
name = "chat"
presence = true
join_leave = true
history_size = 100
history_ttl = 300
force_recovery = true
allow_subscribe_for_client = true
allow_publish_for_subscriber = true
allow_history_for_subscriber = true
allow_presence_for_subscriber = true

[[namespaces]]
name = "nohist"
allow_subscribe_for_client = true
allow_publish_for_client = true

[[namespaces]]
name = "feeds"
conflation = "latest"
max_rate = 10
key_field = "/sensor"
history_size = 1
history_ttl = 300
force_recovery_mode = "cache"
allowed_delta_types = ["fossil"]
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_client = true
allow_publish_for_anonymous = true
"""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def write_config(path: Path, *, tables: str = "", **settings: Any) -> Path:
    """The suite's node config with top-level ``settings`` added or replacing the defaults above (a list of
    dicts is an array of tables: ``webhooks=[{...}]``), and ``tables`` (TOML text: more namespaces,
    ``[[alerts]]``, ``[mqtt]``...) at its end."""
    defaults = {
        "presence_ttl": PRESENCE_TTL,
        "presence_update_interval": PRESENCE_UPDATE_INTERVAL,
        "node_info_interval": NODE_INFO_INTERVAL,
    }
    named = {k: settings.pop(k) for k in list(settings) if k in defaults}
    values = {**defaults, **named}
    arrays = {
        k: settings.pop(k)
        for k in list(settings)
        if isinstance(settings[k], list) and settings[k] and all(isinstance(e, dict) for e in settings[k])
    }
    top, rest = CONFIG_TEMPLATE.split("{extra}")
    lines = top.splitlines()
    for i, line in enumerate(lines):  # a setting the template has already: replaced in place
        key = line.partition(" = ")[0]
        if key in settings:
            lines[i] = f"{key} = {_toml_value(settings.pop(key))}"
    extra = "\n".join(f"{k} = {_toml_value(v)}" for k, v in settings.items())
    for name, entries in arrays.items():  # arrays of tables ([[webhooks]]) after the top-level keys
        for entry in entries:
            extra += f"\n[[{name}]]\n" + "\n".join(f"{k} = {_toml_value(v)}" for k, v in entry.items())
    template = "\n".join(lines) + "\n" + extra + rest
    text = template.format(secret=SECRET, api_key=API_KEY, **values)
    path.write_text(text + ("\n" + tables if tables else ""))
    return path


def process_rss(pid: int) -> int:
    """A process's resident memory in bytes, from /proc/<pid>/status (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Samples a process's RSS in a thread while an attack runs: ``start`` (the RSS before), ``peak`` (the
    highest sample), ``last``. Use it as a context manager around the attack; the thread stops on exit."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.start = self.peak = self.last = process_rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.last = process_rss(self.pid)
            except (OSError, AssertionError):
                return  # the process is gone
            self.peak = max(self.peak, self.last)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError, AssertionError):
            self.last = process_rss(self.pid)
            self.peak = max(self.peak, self.last)

    def __repr__(self) -> str:
        mb = 1024 * 1024
        return (
            f"RssSampler(start={self.start / mb:.1f} MB, peak={self.peak / mb:.1f} MB, "
            f"last={self.last / mb:.1f} MB)"
        )


class HubNode:
    """One ``switchboard serve`` process; ``start()`` after ``stop()``/``kill()`` keeps port and data dir."""

    def __init__(
        self, name: str, workdir: Path, config: Path, args: Sequence[str] = (), data_dir: Path | None = None
    ) -> None:
        self.name = name
        self.port = free_port()
        self.config = config
        self.args = list(args)
        self.data_dir = data_dir if data_dir is not None else workdir / f"{name}-data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.max_descriptors: int | None = None
        """When set, the process starts with this RLIMIT_NOFILE (soft and hard): a node that runs out."""

    # addresses
    @property
    def url(self) -> str:
        """The WebSocket endpoint of the client protocol (what RawClient and the SDK connect to)."""
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def doc_url(self, name: str) -> str:
        return f"ws://127.0.0.1:{self.port}/doc/{name}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "hub", "serve",
            "--port", str(self.port),
            "--config", str(self.config),
            "--node-name", self.name,
            "--data-dir", str(self.data_dir),
            *self.args,
        ]  # fmt: skip

    def start_blocking(self) -> None:
        """Start (again) and return once ``/ready`` answers 200; fails with the log if the process exits."""
        if self.running:
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._limit_descriptors if self.max_descriptors is not None else None,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with httpx.Client(timeout=2.0) as http:
            while True:
                if not self.running:
                    raise AssertionError(f"node {self.name} exited:\n{self.log()}")
                with contextlib.suppress(httpx.TransportError):
                    if http.get(f"{self.http}/ready").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"node {self.name} not ready in {STARTUP_TIMEOUT} s:\n{self.log()}")
                time.sleep(0.05)  # polling interval of the probe: there is no event to wait on from outside

    def _limit_descriptors(self) -> None:
        """In the child, before exec: its descriptor limit (``max_descriptors``)."""
        assert self.max_descriptors is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.max_descriptors, self.max_descriptors))

    def _end(self, sig: signal.Signals) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=STARTUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"node {self.name} did not exit on {sig.name}:\n{self.log()}") from None

    async def start(self) -> None:
        """``start_blocking`` in a thread: the test's clients keep being served meanwhile."""
        await asyncio.to_thread(self.start_blocking)

    async def stop(self) -> int | None:
        """SIGTERM (graceful: clients get 3001) and the exit code (0 for a clean shutdown)."""
        return await asyncio.to_thread(self._end, signal.SIGTERM)

    async def kill(self) -> None:
        """SIGKILL: a crash. Clients see the TCP connection drop; nothing is cleaned up."""
        await asyncio.to_thread(self._end, signal.SIGKILL)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"node {self.name} is not running"
        return self.proc.pid

    def rss(self) -> int:
        """The process's resident memory now, in bytes (VmRSS)."""
        return process_rss(self.pid)

    def sample_rss(self, interval: float = 0.05) -> RssSampler:
        """A sampler of this node's RSS (``with node.sample_rss() as s: ...attack...; s.peak``)."""
        return RssSampler(self.pid, interval)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # the server API of this node
    async def api(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """``POST /api/<method>``; returns the decoded body (``{"result": ...}`` or ``{"error": ...}``)."""
        async with http_client(timeout=TIMEOUT) as http:
            response = await http.post(
                f"{self.http}/api/{method}", json=params or {}, headers={"X-API-Key": API_KEY}
            )
        assert response.status_code == 200, (response.status_code, response.text)
        body: dict[str, Any] = response.json()
        return body

    def __repr__(self) -> str:
        return f"HubNode({self.name}, port={self.port}, running={self.running})"


class NodeSet(Sequence[HubNode]):
    """The nodes of one test (or one module): ``add`` starts more, ``close()`` kills what is left; the
    logs stay for the failure report. Indexable: ``nodes[0]`` is the first node started."""

    def __init__(self, workdir: Path, *, redis: Sequence[str] = (), cluster: bool = False) -> None:
        self.workdir = workdir
        self.redis = list(redis)
        self.cluster = cluster
        self.nodes: list[HubNode] = []
        self._configs = 0

    def __len__(self) -> int:
        return len(self.nodes)

    @overload
    def __getitem__(self, index: int) -> HubNode: ...
    @overload
    def __getitem__(self, index: slice) -> list[HubNode]: ...
    def __getitem__(self, index: int | slice) -> HubNode | list[HubNode]:
        return self.nodes[index]

    def add_blocking(
        self,
        count: int = 3,
        *,
        redis: Sequence[str] | None = None,
        cluster: bool | None = None,
        doc_store: str | None = None,
        shared_data_dir: bool = False,
        max_descriptors: int | None = None,
        tables: str = "",
        **settings: Any,
    ) -> list[HubNode]:
        """Start ``count`` nodes sharing ``redis`` (default: the set's) with ``settings`` in their config;
        the processes start at once and are awaited together. Each node has a data directory of its own
        unless ``shared_data_dir`` (one disk for all, as SQLite documents across nodes need);
        ``max_descriptors`` is each process's RLIMIT_NOFILE; ``tables`` is TOML text added to the config."""
        self._configs += 1
        config = write_config(self.workdir / f"hub-{self._configs}.toml", tables=tables, **settings)
        args: list[str] = []
        for url in self.redis if redis is None else redis:
            args += ["--redis", url]
        if self.cluster if cluster is None else cluster:
            args.append("--redis-cluster")
        if doc_store is not None:
            args += ["--doc-store", doc_store]
        shared = self.workdir / f"shared-data-{self._configs}" if shared_data_dir else None
        new = [
            HubNode(f"n{len(self.nodes) + i + 1}", self.workdir, config, args, data_dir=shared)
            for i in range(count)
        ]
        for n in new:
            n.max_descriptors = max_descriptors
        self.nodes += new
        failures: list[BaseException] = []
        threads = []
        for n in new:
            t = threading.Thread(target=_start_collecting, args=(n, failures))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        if failures:
            raise failures[0]
        if (self.redis if redis is None else redis) and len(self.running()) > 1:
            self.wait_until_acquainted()
        return new

    def running(self) -> list[HubNode]:
        return [n for n in self.nodes if n.running]

    def wait_until_acquainted(self) -> None:
        """Return once every running node lists every other in the server API's ``info`` (the control
        channel's announcements): a node ready on its own may not know the others yet, and what it asks of
        "every node" (a survey, a watch announcement) would leave out the ones it has not heard."""
        names = {n.name for n in self.running()}
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with httpx.Client(timeout=2.0) as http:
            for node in self.running():
                while True:
                    with contextlib.suppress(httpx.TransportError, KeyError, ValueError):
                        answer = http.post(f"{node.http}/api/info", json={}, headers={"X-API-Key": API_KEY})
                        if {n["name"] for n in answer.json()["result"]["nodes"]} >= names:
                            break
                    if time.monotonic() > deadline:
                        raise AssertionError(f"node {node.name} does not know all of {sorted(names)}")
                    time.sleep(0.05)  # polling interval: announcements are another process's events

    async def add(self, count: int = 3, **kw: Any) -> list[HubNode]:
        return await asyncio.to_thread(self.add_blocking, count, **kw)

    def logs(self, tail: int = 400) -> str:
        """The last ``tail`` lines of every node's log."""
        parts = []
        for n in self.nodes:
            lines = n.log().splitlines()
            parts.append(f"===== {n.name} (port {n.port}) =====\n" + "\n".join(lines[-tail:]))
        return "\n".join(parts)

    def close(self) -> None:
        for n in self.nodes:
            n._end(signal.SIGKILL)


def _start_collecting(node: HubNode, failures: list[BaseException]) -> None:
    try:
        node.start_blocking()
    except BaseException as exc:  # reported by the caller after every start finished
        failures.append(exc)


NODE_SETS = pytest.StashKey[list[NodeSet]]()


def node_logs_section(item: pytest.Item) -> str | None:
    """The logs of the nodes a failed test used: sets it started (``make_nodes``) and module sets among its
    fixture values. None if it used none."""
    started = item.stash.get(NODE_SETS, None)
    sets = list(started) if started is not None else []
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    sets += [v for v in funcargs.values() if isinstance(v, NodeSet) and v not in sets]
    text = "\n".join(s.logs() for s in sets if s.nodes)
    return text or None


NodesFactory = Callable[..., Awaitable[list[HubNode]]]


@pytest.fixture
def make_nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NodesFactory]:
    """``await make_nodes(3, redis=[url, ...], cluster=False, doc_store=None, **config)``: nodes of one hub,
    started for this test and killed at its end."""
    node_set = NodeSet(tmp_path)
    request.node.stash.setdefault(NODE_SETS, []).append(node_set)
    yield node_set.add
    node_set.close()


@pytest.fixture
async def nodes(make_nodes: NodesFactory, redis_server: RedisServer) -> list[HubNode]:
    """Three nodes sharing one fresh standalone Redis (``redis_server`` from tests/conftest.py), for one
    test. Modules that can share their nodes use ``module_nodes`` instead (faster)."""
    return await make_nodes(3, redis=[redis_server.url])


@pytest.fixture
async def sharded_nodes(make_nodes: NodesFactory, redis_two: list[RedisServer]) -> list[HubNode]:
    """Three nodes over two Redis servers (channels spread by consistent hashing)."""
    return await make_nodes(3, redis=[s.url for s in redis_two])


@pytest.fixture
async def cluster_nodes(make_nodes: NodesFactory, redis_cluster: RedisCluster) -> list[HubNode]:
    """Three nodes over the session's 3-master Redis Cluster."""
    return await make_nodes(3, redis=redis_cluster.urls, cluster=True)


@contextlib.contextmanager
def module_nodes(
    tmp_path_factory: pytest.TempPathFactory,
    redis: Sequence[str],
    *,
    cluster: bool = False,
    count: int = 3,
    **settings: Any,
) -> Iterator[NodeSet]:
    """Nodes shared by a whole test module (tests use their own channel names); killed at its end."""
    node_set = NodeSet(tmp_path_factory.mktemp("nodes"), redis=redis, cluster=cluster)
    try:
        node_set.add_blocking(count, **settings)
        yield node_set
    finally:
        node_set.close()


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = TIMEOUT, every: float = 0.05
) -> None:
    """Poll ``check`` until it is true, failing after ``within`` seconds. For state held by another process
    (a node's API, a Redis key): there is no event to wait on from here, so poll, bounded."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - another process's state: no event to wait on
            await asyncio.sleep(every)


def user_token(user: str, **kw: Any) -> str:
    """A connection JWT every node accepts (they share the suite's secret)."""
    return token(user, **kw)
