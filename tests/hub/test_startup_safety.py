"""Deploying never starts an open hub by accident: real ``switchboard serve`` processes started the way an
operator (or a platform's Procfile) starts them, with the configuration mistakes operators make.

- ``SWITCHBOARD_CONFIG`` names the config file as ``--config`` does; a file that cannot be read (either
  way of naming it) stops the start with exit 2 and its path;
- development mode (no config file, no token key) starts on loopback only, unless asked for with
  ``--dev`` / ``SWITCHBOARD_DEV=1``, and then logs what it opens, one line each;
- the Procfile's production start (secret and API key from the environment) is not development mode.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jwt
import pytest
import websockets

from channels.options import NamespaceOptions
from hub.config import DEV_SECRET, load_config
from hub.devmode import exposures, is_loopback
from tests import conftest
from tests.conftest import START_TIMEOUT, TIMEOUT, RawClient, http_client
from tests.hub.test_cli import ROOT, _env, server_process  # noqa: F401 - the fixture
from tests.ports import free_port

FILE_SECRET = "file-secret-file-secret-file-secret-file!"
ENV_SECRET = "env-secret-env-secret-env-secret-env-secret!"


def start_refused(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``switchboard serve`` that must refuse to start: it exits by itself (a start that goes on
    serving times out here, and fails the test)."""
    return subprocess.run(
        [sys.executable, "-m", "hub", "serve", "--port", str(free_port()), *args],
        cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=START_TIMEOUT,
    )  # fmt: skip


def closed_config(tmp_path: Path) -> Path:
    """A production config: a token key, no anonymous access."""
    path = tmp_path / "hub.toml"
    path.write_text(
        f'token_hmac_secret_key = "{FILE_SECRET}"\nallow_anonymous_connect_without_token = false\n'
    )
    return path


async def connect(port: int, params: dict[str, object]) -> dict[str, object]:
    async with websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket", open_timeout=TIMEOUT) as ws:
        return await RawClient(ws).command("connect", params)


async def read_output(proc) -> str:  # type: ignore[no-untyped-def]
    proc.kill()
    await proc.wait()
    return (await proc.stdout.read()).decode()


# ---------------------------------------------------------------- SWITCHBOARD_CONFIG


async def test_switchboard_config_loads_the_file_like_config(server_process, tmp_path: Path) -> None:  # noqa: F811
    proc, port = await server_process(SWITCHBOARD_CONFIG=str(closed_config(tmp_path)))
    assert (await connect(port, {}))["error"]["code"] == 101  # the file's rules: no anonymous clients
    good = jwt.encode({"sub": "ann"}, FILE_SECRET, algorithm="HS256")
    assert "connect" in await connect(port, {"token": good})
    dev = jwt.encode({"sub": "eve", "tenant": "acme"}, DEV_SECRET, algorithm="HS256")
    async with websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket", open_timeout=TIMEOUT) as ws:
        c = RawClient(ws)
        await c.send_raw(f'{{"id": 1, "connect": {{"token": "{dev}"}}}}')
        assert await c.closed() == (3500, "invalid token")  # the public secret signs nothing here
    assert "development mode" not in await read_output(proc)


@pytest.mark.parametrize("how", ["--config", "SWITCHBOARD_CONFIG"])
def test_a_missing_config_file_stops_the_start(tmp_path: Path, how: str) -> None:
    missing = tmp_path / "nowhere" / "hub.toml"
    args, env = (["--config", str(missing)], {}) if how == "--config" else ([], {how: str(missing)})
    result = start_refused(*args, **env)
    assert result.returncode == 2, result
    assert str(missing) in result.stderr and "cannot read config" in result.stderr


@pytest.mark.parametrize("how", ["--config", "SWITCHBOARD_CONFIG"])
def test_an_unreadable_config_file_stops_the_start(tmp_path: Path, how: str) -> None:
    unreadable = tmp_path / "hub.toml"
    unreadable.mkdir()  # a directory: read_text fails whoever runs the test (root reads any mode bits)
    args, env = (["--config", str(unreadable)], {}) if how == "--config" else ([], {how: str(unreadable)})
    result = start_refused(*args, **env)
    assert result.returncode == 2, result
    assert str(unreadable) in result.stderr


def test_token_command_reads_switchboard_config(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hub", "token", "--user", "ann"],
        cwd=ROOT, env=_env(SWITCHBOARD_CONFIG=str(closed_config(tmp_path))), capture_output=True, text=True,
        check=True, timeout=START_TIMEOUT,
    ).stdout.strip()  # fmt: skip
    assert jwt.decode(out, FILE_SECRET, algorithms=["HS256"])["sub"] == "ann"  # not the dev secret
    missing = subprocess.run(
        [sys.executable, "-m", "hub", "token", "--user", "ann"],
        cwd=ROOT, env=_env(SWITCHBOARD_CONFIG=str(tmp_path / "missing.toml")), capture_output=True, text=True,
        timeout=START_TIMEOUT,
    )  # fmt: skip
    assert missing.returncode == 2 and "missing.toml" in missing.stderr


# ---------------------------------------------------------------- development mode and addresses


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])  # more addresses: test_is_loopback
def test_development_mode_refuses_a_public_address(host: str) -> None:
    result = start_refused("--host", host)
    assert result.returncode == 2, result
    message = result.stderr
    assert "development mode" in message and host in message
    for key in ("token_hmac_secret_key", "SWITCHBOARD_TOKEN_HMAC_SECRET_KEY", "api_key", "--config", "--dev"):
        assert key in message, key
    assert "Traceback" not in message


def test_development_mode_refuses_a_public_address_from_the_environment() -> None:
    """``SWITCHBOARD_HOST`` is as much an address as ``--host``."""
    result = start_refused(SWITCHBOARD_HOST="0.0.0.0")
    assert result.returncode == 2 and "0.0.0.0" in result.stderr, result


@pytest.mark.parametrize("ask", ["--dev", "SWITCHBOARD_DEV"])
async def test_development_mode_on_a_public_address_when_asked(server_process, ask: str) -> None:  # noqa: F811
    """Asked for, development mode starts on a public address and logs what it opens, one line each."""
    env = {} if ask == "--dev" else {ask: "1"}
    proc, port = await server_process("--host", "0.0.0.0", *(["--dev"] if ask == "--dev" else []), **env)
    assert "connect" in await connect(port, {})  # anonymous, as the log says
    async with http_client(timeout=TIMEOUT) as http:  # the server API without a key, as it says
        reply = await http.post(f"http://127.0.0.1:{port}/api/publish", json={"channel": "x", "data": {}})
    assert reply.status_code == 200 and "result" in reply.json()
    output = await read_output(proc)
    lines = [line for line in output.splitlines() if "development mode: " in line]
    for needle in (
        "anonymous clients may connect",
        "public development secret: anyone can sign a token for any user in any tenant",
        "server API is open without a key",
        "connections without a token may write every document",
        "channels without a namespace: subscribe, publish, history, presence allowed to every client",
    ):
        assert sum(needle in line for line in lines) == 1, (needle, output)


async def test_development_mode_with_an_api_key_says_the_api_is_closed(server_process) -> None:  # noqa: F811
    """The lines are read from the configuration: an API key from the environment closes the API even in
    development mode, and the log does not claim otherwise."""
    proc, port = await server_process(SWITCHBOARD_API_KEY="an-api-key-from-the-platform")
    async with http_client(timeout=TIMEOUT) as http:
        reply = await http.post(f"http://127.0.0.1:{port}/api/info", json={})
    assert reply.status_code == 401
    output = await read_output(proc)
    assert "development mode: anonymous clients may connect" in output
    assert "server API is open" not in output
    # one place says it: the header and one line per open thing (hub.devmode), no summary of its own
    open_things = exposures(load_config(None, env={"SWITCHBOARD_API_KEY": "k"}, allow_dev_mode=True))
    said = [line for line in output.splitlines() if "development mode" in line]
    assert len(said) == 1 + len(open_things), output
    assert all(f"development mode: {thing}" in output for thing in open_things)


async def test_procfile_production_start_from_the_environment(server_process) -> None:  # noqa: F811
    """``web: switchboard serve --host 0.0.0.0 --port $PORT`` with the secret and the API key set by the
    platform: it starts on the public address, and nothing of development mode is open."""
    procfile = (ROOT / "Procfile").read_text()
    assert "switchboard serve --host 0.0.0.0 --port $PORT" in procfile
    api_key = "platform-api-key-platform-api-key"
    proc, port = await server_process(
        "--host", "0.0.0.0", SWITCHBOARD_TOKEN_HMAC_SECRET_KEY=ENV_SECRET, SWITCHBOARD_API_KEY=api_key
    )
    assert (await connect(port, {}))["error"]["code"] == 101
    assert "connect" in await connect(port, {"token": jwt.encode({"sub": "ann"}, ENV_SECRET, "HS256")})
    async with http_client(timeout=TIMEOUT) as http:
        base = f"http://127.0.0.1:{port}/api/info"
        assert (await http.post(base, json={})).status_code == 401
        assert (await http.post(base, json={}, headers={"X-API-Key": api_key})).status_code == 200
    assert "development mode" not in await read_output(proc)


async def test_make_run_on_loopback_is_still_development_mode(server_process) -> None:  # noqa: F811
    """What ``make run`` does on a fresh machine: no flags, no config, loopback: development mode."""
    proc, port = await server_process()
    assert "connect" in await connect(port, {})
    assert "development mode: anonymous clients may connect" in await read_output(proc)


# ---------------------------------------------------------------- the pieces


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
        ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("192.168.1.2", False), ("", False),
        ("example.com", False), ("localhost.example.com", False), ("fe80::1", False),
    ],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_exposures_follow_the_configuration() -> None:
    dev = load_config(None, env={}, allow_dev_mode=True)
    lines = exposures(dev)
    # six kinds of opening, the development bot key, and the demo namespace sensors
    assert len(lines) == 8, lines
    assert any("public development bot secret" in line for line in lines)
    assert lines[-1].startswith("namespace sensors: subscribe allowed to every client"), lines
    with_bot_key = load_config(
        None, env={"SWITCHBOARD_BOT_TOKEN_HMAC_SECRET_KEY": "b" * 32}, allow_dev_mode=True
    )
    assert not any("bot secret" in line for line in exposures(with_bot_key))
    closed = conftest.test_config(
        allow_anonymous_connect_without_token=False, api_key="k", channel=NamespaceOptions(), namespaces={}
    )
    assert exposures(closed) == []
