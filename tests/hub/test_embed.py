"""The embedding example runs inside a host Starlette app, with its hooks deciding what clients may do."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from examples import embed_starlette
from tests.conftest import TIMEOUT, RawClient, http_client


@pytest.fixture
async def embedded(serve_asgi):
    # A fresh hub per test: the example's module-level objects would otherwise carry state across tests.
    from hub import Switchboard

    sb = Switchboard(embed_starlette.config, hooks=embed_starlette.sb.hooks)
    app_sb, embed_starlette.sb = embed_starlette.sb, sb
    app = embed_starlette.Starlette(
        routes=[
            embed_starlette.Route("/announce", embed_starlette.announce, methods=["POST"]),
            embed_starlette.Mount("/realtime", app=sb),
        ],
        lifespan=sb.lifespan,
    )
    _, port = await serve_asgi(app, embed_starlette.config)
    yield port
    embed_starlette.sb = app_sb


async def _client(port: int, user: str | None) -> RawClient:
    headers = {"X-User": user} if user else {}
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/realtime/connection/websocket",
        additional_headers=headers,
        open_timeout=TIMEOUT,
    )
    return RawClient(ws)


async def test_on_connecting_authenticates_from_header(embedded):
    alice = await _client(embedded, "alice")
    reply = await alice.command("connect", {})
    assert reply["connect"]["data"] == {"welcome": "alice"}
    anonymous = await _client(embedded, None)
    reply = await anonymous.command("connect", {})
    assert reply["error"]["code"] == 101


async def test_on_subscribe_and_on_publish_and_rpc(embedded):
    alice = await _client(embedded, "alice")
    await alice.command("connect", {})
    carol = await _client(embedded, "carol")
    await carol.command("connect", {})

    assert "subscribe" in await alice.command("subscribe", {"channel": "team:red"})
    denied = await carol.command("subscribe", {"channel": "team:red"})
    assert denied["error"]["code"] == 103

    refused = await alice.command("publish", {"channel": "team:red", "data": {"text": "buy SPAM"}})
    assert refused["error"]["code"] == 103
    await alice.command("publish", {"channel": "team:red", "data": {"text": "  hello  "}})
    pub = (await alice.push("pub"))["pub"]
    assert pub["data"] == {"text": "hello", "by": "alice"}
    assert pub["info"]["chan_info"] == {"team": "red"}
    assert pub["info"]["conn_info"] == {"name": "Alice"}

    rpc = await alice.command("rpc", {"method": "time", "data": {}})
    assert rpc["rpc"]["data"]["asked_by"] == "alice"


async def test_host_endpoint_publishes_into_the_hub(embedded):
    bob = await _client(embedded, "bob")
    await bob.command("connect", {})
    await bob.command("subscribe", {"channel": "team:red"})
    async with http_client(timeout=TIMEOUT) as http:
        resp = await http.post(
            f"http://127.0.0.1:{embedded}/announce", json={"team": "red", "text": "standup"}
        )
        assert resp.status_code == 200 and resp.json()["offset"] == 1
        pub = await asyncio.wait_for(bob.push("pub"), TIMEOUT)
        assert pub["pub"]["data"] == {"text": "standup", "by": "server"}
        health = await http.get(f"http://127.0.0.1:{embedded}/realtime/health")
        assert health.json() == {"status": "ok"}


async def test_streams_work_behind_the_host_apps_middleware(embedded):
    """Mounted in a host app, ``send`` is the host's wrapper: the stream transport sends from a task
    instead of driving it synchronously, and the emulation endpoints work under the mount path."""
    import json

    connect = json.dumps({"id": 1, "connect": {}}).encode()
    base = f"http://127.0.0.1:{embedded}/realtime"
    async with http_client(timeout=TIMEOUT) as http:
        async with http.stream(
            "POST", base + "/connection/http_stream", content=connect, headers={"X-User": "bob"}
        ) as stream:
            lines = stream.aiter_lines()
            result = json.loads(await asyncio.wait_for(anext(lines), TIMEOUT))["connect"]
            session = [c for c in embed_starlette.sb.node.sessions if c.user == "bob"][0]
            assert session.transport._eager is False
            command = json.dumps({"id": 2, "subscribe": {"channel": "team:red"}})
            body = {"session": result["session"], "node": result["node"], "data": command}
            assert (await http.post(base + "/emulation", json=body)).status_code == 204
            assert json.loads(await asyncio.wait_for(anext(lines), TIMEOUT))["id"] == 2
            await http.post(f"http://127.0.0.1:{embedded}/announce", json={"team": "red", "text": "hi"})
            pub = json.loads(await asyncio.wait_for(anext(lines), TIMEOUT))
            assert pub["push"]["pub"]["data"] == {"text": "hi", "by": "server"}
