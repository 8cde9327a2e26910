"""A throwaway PostgreSQL cluster for tests and benchmarks: ``initdb`` into a temporary directory, a
``postgres`` process on a free loopback port (its unix socket in that directory too), ``stop()`` removes
everything. Never a system server, never state from an earlier run.

Root: ``initdb`` and ``postgres`` refuse to run as root (a superuser process could be taken over through
the server). When the tests run as root (CI here does), the cluster's directory is given to an
unprivileged account (``postgres`` if the machine has it, as Debian's package creates it, else
``nobody``) and both programs run as that account (``subprocess``' ``user``/``group``, no su/sudo
needed); the tests still connect as the cluster's superuser ``postgres`` over TCP with trust
authentication, which only loopback clients can reach.

The binaries: ``initdb``/``postgres`` on PATH, else the newest ``/usr/lib/postgresql/*/bin``.
Startup waits until the server accepts connections (``pg_isready`` with a deadline), never a fixed sleep.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from tests.ports import free_port

STARTUP_TIMEOUT = 60.0
"""Generous: initdb on a busy 2-core machine takes seconds."""


def postgres_bin_dir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise RuntimeError("PostgreSQL binaries (initdb, postgres) not found: install the postgresql package")
    return Path(candidates[-1]).parent


def _unprivileged() -> tuple[int, int] | None:
    """(uid, gid) to run the server as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root and no unprivileged account (postgres, nobody) to run PostgreSQL as")


class PostgresServer:
    """One cluster. ``settings`` are extra ``-c name=value`` server settings (the tests turn fsync off)."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.bin = postgres_bin_dir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"pg-{self.port}-"))
        self.data = self.dir / "data"
        self.settings = settings or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._account = _unprivileged()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run_as(self) -> dict[str, object]:
        if self._account is None:
            return {}
        uid, gid = self._account
        return {"user": uid, "group": gid, "extra_groups": []}

    def start(self) -> None:
        if self._account is not None:
            os.chown(self.dir, *self._account)
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            timeout=STARTUP_TIMEOUT,
            **self._run_as(),  # type: ignore[arg-type]
        )
        args = [
            str(self.bin / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self.dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=200",
        ]
        for name, value in self.settings.items():
            args += ["-c", f"{name}={value}"]
        log = open(self.dir / "postgres.log", "wb")  # noqa: SIM115 (kept open for the process's life)
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, **self._run_as())  # type: ignore[call-overload]
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                text = (self.dir / "postgres.log").read_text(errors="replace")
                self.proc = None
                raise RuntimeError(f"postgres on {self.port} exited: {text[-2000:]}")
            ready = subprocess.run(
                [
                    str(self.bin / "pg_isready"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    "-q",
                ],
                check=False,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres on {self.port} not ready in {STARTUP_TIMEOUT} s")
            time.sleep(0.05)  # polling interval of the readiness probe, not a wait for an effect

    def stop(self) -> None:
        """Fast shutdown (SIGINT: abort sessions, then a clean stop), then remove the cluster."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=STARTUP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


_databases = itertools.count()


async def fresh_database(server: PostgresServer) -> str:
    """A DSN whose connections see an empty database: a new schema, first on their ``search_path`` (asyncpg
    passes unknown DSN parameters as server settings). A schema costs milliseconds where a CREATE DATABASE
    took a second on a busy machine."""
    name = f"inbox_{next(_databases)}"
    conn = await asyncpg.connect(server.dsn())
    try:
        await conn.execute(f"CREATE SCHEMA {name}")
    finally:
        await conn.close()
    return f"{server.dsn()}?search_path={name}"
