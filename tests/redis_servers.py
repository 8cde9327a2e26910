"""Real ``redis-server`` processes for tests: standalone servers and a 3-master cluster.

Every server runs on a free loopback port with its own temporary directory and, unless asked for
persistence, no RDB/AOF (``--save "" --appendonly no``), so ``stop()`` + ``start()`` on the same port gives an
*empty* server that clients reconnect to: "Redis lost its data". Never the system Redis on 6379.

Startup waits until the server answers PING (polling a socket with a deadline), never a fixed sleep.
``stop()`` sends SIGTERM and waits; ``kill()`` sends SIGKILL (no shutdown handshake, as a crash).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.ports import free_port

REDIS_SERVER = shutil.which("redis-server") or "redis-server"
REDIS_CLI = shutil.which("redis-cli") or "redis-cli"
STARTUP_TIMEOUT = 20.0
"""Generous: a busy 2-core machine may take a while to exec a server."""


def _command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one inline command and return the raw first reply chunk (enough for PING / CLUSTER INFO)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(" ".join(args).encode() + b"\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
            if data.startswith((b"+", b"-", b":")) and data.endswith(b"\r\n"):
                return data
            if data.startswith(b"$"):
                header, sep, rest = data.partition(b"\r\n")
                if sep and (int(header[1:]) < 0 or len(rest) >= int(header[1:]) + 2):
                    return data
            elif data.startswith(b"=") or data.startswith(b"*"):
                # not used by our probes; return what arrived
                return data


class RedisServer:
    """One ``redis-server`` process. ``start()`` after ``stop()``/``kill()`` reuses the same port."""

    def __init__(
        self,
        *,
        port: int | None = None,
        persistence: bool = False,
        cluster: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.cluster = cluster
        self.port = port if port is not None else free_port(cluster_bus=cluster)
        self.persistence = persistence
        self.extra_args = list(extra_args)
        self.dir = Path(tempfile.mkdtemp(prefix=f"redis-{self.port}-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--protected-mode",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        if not self.persistence:
            args += ["--save", "", "--appendonly", "no"]
        else:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        if self.cluster:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.dir / "nodes.conf"),
                "--cluster-node-timeout",
                "5000",
            ]
        return args + self.extra_args

    def start(self) -> None:
        """Start (again) on this port and wait until it answers PING."""
        if self.running:
            return
        self.proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = (
                    (self.dir / "redis.log").read_text(errors="replace")
                    if (self.dir / "redis.log").exists()
                    else ""
                )
                self.proc = None
                raise RuntimeError(f"redis-server on {self.port} exited: {err} {log}")
            with contextlib.suppress(OSError):
                if _command(self.port, "PING").startswith(
                    (b"+PONG", b"-NOAUTH")
                ):  # alive, maybe with a password
                    return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server on {self.port} did not answer PING in {STARTUP_TIMEOUT} s")
            time.sleep(0.01)  # polling interval of the PING probe, not a wait for an effect

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM and wait for the process to exit (the port is free afterwards)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL and wait: a crash, no shutdown handshake."""
        self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=STARTUP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def command(self, *args: str) -> bytes:
        """One inline command through a plain socket (test setup only)."""
        return _command(self.port, *args)

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, running={self.running})"


@contextlib.contextmanager
def redis_servers(count: int) -> Iterator[list[RedisServer]]:
    """``count`` fresh standalone servers, started, and always cleaned up (the per-test fixtures in
    tests/conftest.py and the module-scoped ones of tests/nodes.py)."""
    servers = [RedisServer() for _ in range(count)]
    try:
        for s in servers:
            s.start()
        yield servers
    finally:
        for s in servers:
            s.cleanup()


class RedisCluster:
    """Three masters, no replicas, every slot assigned; ``urls`` are the seed URLs."""

    def __init__(self, masters: int = 3) -> None:
        self.servers = [RedisServer(cluster=True) for _ in range(masters)]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def start(self) -> None:
        try:
            for s in self.servers:
                s.start()
            addrs = [f"127.0.0.1:{s.port}" for s in self.servers]
            subprocess.run(
                [REDIS_CLI, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=60,
            )
            deadline = time.monotonic() + 60
            while not all(b"cluster_state:ok" in s.command("CLUSTER", "INFO") for s in self.servers):
                if time.monotonic() > deadline:
                    raise RuntimeError("cluster did not reach cluster_state:ok")
                time.sleep(0.05)  # polling interval of the state probe
        except BaseException:
            self.cleanup()
            raise

    def flushall(self) -> None:
        for s in self.servers:
            reply = s.command("FLUSHALL")
            assert reply.startswith(b"+OK"), reply

    def cleanup(self) -> None:
        for s in self.servers:
            s.cleanup()
