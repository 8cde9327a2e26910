"""The command line as a user runs it: a real ``switchboard serve`` process and ``switchboard token``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import jwt
import pytest
import websockets

from tests.conftest import START_TIMEOUT, TIMEOUT, RawClient, http_client
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(extra)
    return env


async def _wait_ready(port: int, proc: asyncio.subprocess.Process) -> None:
    async with http_client(timeout=2.0) as http, asyncio.timeout(TIMEOUT * 2):
        while True:
            assert proc.returncode is None, "server exited early"
            try:
                if (await http.get(f"http://127.0.0.1:{port}/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)  # the process is starting; there is no event to wait on from outside


@pytest.fixture
async def server_process():
    procs: list[asyncio.subprocess.Process] = []

    async def start(*args: str, **env: str) -> tuple[asyncio.subprocess.Process, int]:
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hub",
            "serve",
            "--port",
            str(port),
            *args,
            cwd=ROOT,
            env=_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        await _wait_ready(port, proc)
        return proc, port

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_dev_mode_serves_and_sigterm_disconnects_with_3001(server_process):
    proc, port = await server_process()
    async with http_client(timeout=TIMEOUT) as http:
        assert (await http.get(f"http://127.0.0.1:{port}/health")).json() == {"status": "ok"}
    clients = []
    for _ in range(3):
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket", open_timeout=TIMEOUT)
        c = RawClient(ws)
        assert "connect" in await c.command("connect", {})  # dev mode: anonymous allowed
        assert "subscribe" in await c.command("subscribe", {"channel": "lobby"})
        clients.append(c)
    proc.send_signal(signal.SIGTERM)
    for c in clients:
        code, reason = await c.closed()
        assert (code, reason) == (3001, "shutdown")
    assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
    output = (await proc.stdout.read()).decode()
    assert "development mode" in output


async def test_config_file_and_env_override(server_process, tmp_path):
    cfg = tmp_path / "hub.toml"
    cfg.write_text(
        'token_hmac_secret_key = "file-secret-file-secret-file-secret!!"\n'
        "[channel]\nallow_subscribe_for_client = true\n"
    )
    proc, port = await server_process(
        "--config", str(cfg), SWITCHBOARD_TOKEN_HMAC_SECRET_KEY="env-secret-env-secret-env-secret-env!"
    )
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket", open_timeout=TIMEOUT)
    c = RawClient(ws)
    reply = await c.command("connect", {})
    assert reply["error"]["code"] == 101  # a config file means production rules: no anonymous
    ws2 = await websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket", open_timeout=TIMEOUT)
    c2 = RawClient(ws2)
    good = jwt.encode({"sub": "u1"}, "env-secret-env-secret-env-secret-env!", algorithm="HS256")
    assert reply["id"] == 1
    assert (await c2.command("connect", {"token": good}))["connect"]["client"]
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0


def test_token_command_prints_a_verifiable_jwt():
    secret = "cli-secret-cli-secret-cli-secret-cli!"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub",
            "token",
            "--user",
            "42",
            "--ttl",
            "60",
            "--info",
            '{"name":"Ann"}',
            "--channels",
            "news,alerts",
            "--tenant",
            "acme",
        ],
        cwd=ROOT,
        env=_env(SWITCHBOARD_TOKEN_HMAC_SECRET_KEY=secret),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    claims = jwt.decode(out, secret, algorithms=["HS256"])
    assert claims["sub"] == "42" and claims["info"] == {"name": "Ann"}
    assert claims["channels"] == ["news", "alerts"] and claims["tenant"] == "acme"
    assert claims["exp"] - claims["iat"] == 60


def test_bad_config_exits_2(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("no_such_key = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "hub", "serve", "--config", str(cfg)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert proc.returncode == 2 and "unknown config key" in proc.stderr


def test_the_start_up_heap_is_frozen_out_of_the_collector_s_reach() -> None:
    """Full collections under load walked every object start-up had built (2 s pauses with 500 document
    connections on the loaded box); a listening server freezes them (``settle_heap``)."""
    import gc

    from hub import cli

    before = gc.get_freeze_count()
    try:
        kept = [object() for _ in range(10)]  # alive now: frozen with everything else
        assert cli.settle_heap() >= before + len(kept)
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
