"""A real ``switchboard serve`` attacked at the HTTP and socket level: requests that never finish arriving,
too many of them at once, a process out of descriptors, methods an endpoint does not take.

The attacks pace themselves (a byte every so often); nothing here sleeps to wait for the node: every
check reads the node's answer, bounded by TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

import tests.nodes as harness
from hub.codes import ConfigError
from hub.config import load_config
from hub.listener import HEALTHY, NOT_READY, UNAVAILABLE, triage_answer
from hub.logs import LIMITED_BURST
from tests.attacker import trickle
from tests.conftest import TIMEOUT, http_client
from tests.nodes import API_KEY, HubNode, NodesFactory, eventually
from tests.ports import free_port

make_nodes = harness.make_nodes  # the fixture, defined in tests/nodes.py

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def raw(node: HubNode) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", node.port)


async def answer_and_close(reader: asyncio.StreamReader) -> bytes:
    """Everything the node sends until it closes the connection (fails if it never does)."""
    async with asyncio.timeout(TIMEOUT):
        return await reader.read()


def status_of(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", response)
    assert match, response[:200]
    return int(match.group(1))


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text ``text`` (0 when absent)."""
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    wanted = f"{name}{{{selector}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def scrape(node: HubNode) -> str:
    async with http_client(timeout=TIMEOUT) as http:
        return (await http.get(f"{node.http}/metrics")).text


async def test_requests_whose_headers_never_complete_get_408_and_are_closed(make_nodes: NodesFactory) -> None:
    (node,) = await make_nodes(1, http_header_timeout=1.0, client_stale_close_delay=1.0)
    silent = await raw(node)  # connects and sends nothing at all
    partial = await raw(node)  # a request line and a header, then a trickle that never ends the head
    partial[1].write(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    upgrade = await raw(node)  # a WebSocket handshake that stops half way
    upgrade[1].write(b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
    trickling = asyncio.create_task(trickle(partial[1]))
    try:
        for reader, _ in (silent, partial, upgrade):
            assert status_of(await answer_and_close(reader)) == 408
    finally:
        trickling.cancel()
    # A WebSocket that completed its handshake but never sends connect is closed as stale (3502).
    async with websockets.connect(node.url) as ws, asyncio.timeout(TIMEOUT):
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.recv()
    assert (ws.close_code, ws.close_reason) == (3502, "stale")
    # One line for each of the three header timeouts (rate-limited past LIMITED_BURST, as test_logs shows),
    # and the node serves on.
    assert node.log().count("not complete within 1 s: 408") == 3
    assert metric(await scrape(node), "switchboard_http_refused_total", reason="header_timeout") == 3
    assert (await node.api("publish", {"channel": "after", "data": {}}))["result"] is not None


async def test_an_idle_keep_alive_connection_is_closed_after_http_keep_alive_timeout(
    make_nodes: NodesFactory,
) -> None:
    (node,) = await make_nodes(1, http_keep_alive_timeout=1.5)
    reader, writer = await raw(node)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(TIMEOUT):
        assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
        answered = time.monotonic()
        while await reader.read(65536):  # the rest of the answer, then the node's close (EOF)
            pass
    idle = time.monotonic() - answered
    assert 1.4 <= idle < 4.8, idle  # kept for the timeout, then closed: before uvicorn's default 5 s
    writer.close()


async def test_a_body_trickled_a_byte_at_a_time_gets_408_within_the_body_timeout(
    make_nodes: NodesFactory,
) -> None:
    (node,) = await make_nodes(1, http_body_timeout=1.0)
    reader, writer = await raw(node)
    writer.write(
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: " + API_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    )  # fmt: skip
    trickling = asyncio.create_task(trickle(writer, every=0.1))  # never idle: a total deadline stops it
    started = asyncio.get_running_loop().time()
    try:
        assert status_of(await answer_and_close(reader)) == 408
    finally:
        trickling.cancel()
    assert asyncio.get_running_loop().time() - started < 5.0
    assert "request body from 127.0.0.1:" in node.log()
    assert metric(await scrape(node), "switchboard_http_refused_total", reason="body_timeout") == 1
    # a request that arrives in time is served as before
    assert (await node.api("publish", {"channel": "after", "data": {}}))["result"] is not None


async def test_past_the_limit_of_unfinished_requests_the_oldest_is_cut_and_new_ones_are_served(
    make_nodes: NodesFactory,
) -> None:
    (node,) = await make_nodes(1, http_max_unfinished_requests=10, http_header_timeout=60.0)
    idle = [await raw(node) for _ in range(10)]  # ten slow requests: the limit is full
    try:
        async with http_client(timeout=TIMEOUT) as http:
            response = await http.get(f"{node.http}/health")  # the eleventh connection
        assert response.status_code == 200
        assert status_of(await answer_and_close(idle[0][0])) == 503  # the longest-arriving one made room
        for reader, _ in idle[1:]:
            assert not reader.at_eof()
        assert metric(await scrape(node), "switchboard_http_refused_total", reason="unfinished_limit") >= 1
        assert "requests arriving at once (http_max_unfinished_requests)" in node.log()
    finally:
        for _, writer in idle:
            writer.close()


async def test_a_node_out_of_descriptors_says_so_and_still_answers_health_and_ready(
    make_nodes: NodesFactory,
) -> None:
    (node,) = await make_nodes(1, http_header_timeout=60.0, max_descriptors=256)
    idle = []
    try:
        for _ in range(300):  # more than the node can hold: it runs out while accepting them
            idle.append(await raw(node))
        async with http_client(timeout=TIMEOUT) as http:
            health = await http.get(f"{node.http}/health")
            ready = await http.get(f"{node.http}/ready")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        assert ready.status_code == 503
        assert ready.json() == {"status": "not ready", "reason": "out of file descriptors"}
        # rate-limited: at most a burst and a few a second, not one per refused connection
        assert 1 <= node.log().count("accept() failed with EMFILE") <= LIMITED_BURST + 10
    finally:
        for _, writer in idle:
            writer.close()

    async def counted() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            text = await scrape(node)
            return metric(text, "switchboard_accept_errors_total", errno="EMFILE") >= 1 and (
                metric(text, "switchboard_http_refused_total", reason="descriptors") >= 2
            )
        return False

    await eventually(counted)  # the node gets its descriptors back as it sees the connections close
    async with http_client(timeout=TIMEOUT) as http:
        assert (await http.get(f"{node.http}/ready")).status_code == 200


async def test_the_metrics_port_out_of_descriptors_says_so_too(make_nodes: NodesFactory) -> None:
    """The metrics port accepts as the main one does: out of descriptors, a rate-limited line in the node's
    log and a count in ``switchboard_accept_errors_total`` (before: a traceback a second from the event
    loop, outside the log's format, counted nowhere)."""
    port = free_port()
    (node,) = await make_nodes(1, max_descriptors=256, metrics_port=port)
    idle = []
    try:
        for _ in range(300):  # idle scrapes (no request head): more than the node can hold
            idle.append(await asyncio.open_connection("127.0.0.1", port))

        async def logged() -> bool:
            return "accept() failed with EMFILE" in node.log()

        await eventually(logged)
        assert node.log().count("accept() failed with EMFILE") <= LIMITED_BURST + 10
        assert "out of system resource" not in node.log()
    finally:
        for _, writer in idle:
            writer.close()

    async def counted() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            async with http_client(timeout=TIMEOUT) as http:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            return metric(text, "switchboard_accept_errors_total", errno="EMFILE") >= 1
        return False

    await eventually(counted)


@pytest.mark.parametrize("path", ["/connection/uni_http_stream", "/connection/http_stream"])
async def test_post_only_streams_refuse_get_with_405(make_nodes: NodesFactory, path: str) -> None:
    (node,) = await make_nodes(1)
    connect = orjson.dumps({"token": ""}).decode()
    async with http_client(timeout=TIMEOUT) as http:
        response = await http.get(f"{node.http}{path}", params={"cf_connect": connect})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST, OPTIONS"


# ---------------------------------------------------------------- the sans-I/O pieces


@pytest.mark.parametrize(
    ("head", "answer"),
    [
        (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", HEALTHY),
        (b"GET /health?probe=1 HTTP/1.1\r\n\r\n", HEALTHY),
        (b"GET /ready HTTP/1.1\r\n\r\n", NOT_READY),
        (b"HEAD /health HTTP/1.1\r\n\r\n", UNAVAILABLE),
        (b"GET /api/info HTTP/1.1\r\n\r\n", UNAVAILABLE),
        (b"POST /health HTTP/1.1\r\n\r\n", UNAVAILABLE),
        (b"GET /healthz HTTP/1.1\r\n\r\n", UNAVAILABLE),
        (b"", UNAVAILABLE),
        (b"\xff\x00 garbage", UNAVAILABLE),
    ],
)
def test_a_connection_on_a_reserved_descriptor_is_answered_from_its_head(head: bytes, answer: bytes) -> None:
    assert triage_answer(head) == answer


def test_the_http_limits_are_read_from_file_and_environment_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('http_header_timeout = "2s"\nhttp_max_unfinished_requests = 50\n')
    cfg = load_config(path, env={"SWITCHBOARD_HTTP_BODY_TIMEOUT": "1m"})
    assert (cfg.http_header_timeout, cfg.http_body_timeout) == (2.0, 60.0)
    assert cfg.http_max_unfinished_requests == 50
    defaults = load_config(None, env={})
    assert (defaults.http_header_timeout, defaults.http_body_timeout) == (10.0, 30.0)
    assert defaults.http_max_unfinished_requests == 1000
    assert defaults.http_keep_alive_timeout == 5.0
    path.write_text('http_keep_alive_timeout = "75s"\n')
    assert load_config(path, env={}).http_keep_alive_timeout == 75.0  # above an ALB's 60 s
    for bad in (
        "http_header_timeout = 0",
        "http_body_timeout = -1",
        "http_header_timeout = 'soon'",
        "http_max_unfinished_requests = 0",
        "http_max_unfinished_requests = 'many'",
        "http_keep_alive_timeout = 0",
        "http_keep_alive_timeout = '2h'",
        "http_keep_alive_timeout = 'idle'",
    ):
        path.write_text(bad + "\n")
        with pytest.raises(ConfigError):
            load_config(path, env={})
