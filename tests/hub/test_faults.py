"""Faults on one node: a client that vanishes mid-write, a crashing hook, a crashing RPC handler."""

from __future__ import annotations

import asyncio

import pytest

from hub.hooks import Hooks
from tests.conftest import TIMEOUT


async def _wait_until(predicate, what: str) -> None:
    """Wait for server-side state the test cannot get an event for; bounded, never an open-ended sleep."""
    async with asyncio.timeout(TIMEOUT):
        while not predicate():  # noqa: ASYNC110 - server-side state: no event to wait on
            await asyncio.sleep(0.01)
    assert predicate(), what


async def test_client_vanishing_mid_write_is_cleaned_up_and_others_unaffected(hub, raw_client):
    node = hub.sb.node
    healthy = await raw_client(hub)
    healthy_id = (await healthy.command("connect", {}))["connect"]["client"]
    await healthy.command("subscribe", {"channel": "feed"})
    doomed = await raw_client(hub, connect={})
    await doomed.command("subscribe", {"channel": "feed"})
    publisher = await raw_client(hub, connect={})
    assert len(node.sessions) == 3

    big = "x" * 4000
    for i in range(50):
        await publisher.command("publish", {"channel": "feed", "data": {"i": i, "pad": big}})
        if i == 10:
            doomed.ws.transport.abort()  # TCP reset while the server is writing to it
    await _wait_until(lambda: len(node.sessions) == 2, "the vanished session is removed")

    presence = await publisher.command("presence", {"channel": "feed"})
    assert list(presence["presence"]["presence"]) == [healthy_id]
    received = [(await healthy.push("pub"))["pub"]["data"]["i"] for _ in range(50)]
    assert received == list(range(50))
    assert node.registry.subscriber_count(("", "feed")) == 1


@pytest.fixture
def crashing_hooks() -> Hooks:
    async def boom(ctx):
        raise RuntimeError("application bug")

    return Hooks(on_publish=boom, rpc={"boom": boom})


async def test_crashing_application_code_gets_internal_error_and_node_stays_up(
    make_hub, raw_client, crashing_hooks, caplog
):
    hub = await make_hub(hooks=crashing_hooks)
    c = await raw_client(hub, connect={})
    reply = await c.command("rpc", {"method": "boom", "data": {}})
    assert reply["error"] == {"code": 100, "message": "internal server error", "temporary": True}
    reply = await c.command("publish", {"channel": "room", "data": {}})
    assert reply["error"]["code"] == 100
    assert "rpc crashed" in caplog.text and "application bug" in caplog.text
    # the same connection still works
    assert "subscribe" in await c.command("subscribe", {"channel": "room"})
