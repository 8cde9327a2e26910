"""Fixtures of the hub's inbox tests: a hub (in this process) whose inbox is SQLite under the test's data
directory or a fresh schema on the session's PostgreSQL (``store_kind``: every test that asks for
``inbox_hub`` runs on both), with personal channels on (``personal:#<user>``) and server API keys; and small
helpers for RPC, the server API and personal-channel pushes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from centrifuge import ClientEventHandler

from hub.config import ApiKey
from tests.conftest import TIMEOUT, HubFactory, RawClient, RunningHub, http_client, test_config, token
from tests.postgres_servers import fresh_database

API_KEY = "inbox-test-key"
"""Acts on any tenant."""
ACME_KEY = "acme-key"
"""Bound to tenant ``acme``."""
PERSONAL = "personal"


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(store_kind: str, request: pytest.FixtureRequest) -> str:
    """Empty (SQLite under the hub's data directory) or a DSN of a fresh PostgreSQL schema."""
    if store_kind == "sqlite":
        return ""
    return await fresh_database(request.getfixturevalue("postgres"))


InboxHubFactory = Callable[..., Awaitable[RunningHub]]


@pytest.fixture
async def inbox_hub(make_hub: HubFactory, database_url: str, tmp_path: Path) -> InboxHubFactory:
    """``await inbox_hub(**config)``: a hub on this test's store (several calls share it: several nodes
    without Redis share the one database)."""

    async def make(**overrides: Any) -> RunningHub:
        settings: dict[str, Any] = {
            "data_dir": str(tmp_path),
            "database_url": database_url,
            "user_subscribe_to_personal": True,
            "user_personal_channel_namespace": PERSONAL,
            "api_key": API_KEY,
            "api_keys": [ApiKey(ACME_KEY, "acme")],
            **overrides,
        }
        return await make_hub(test_config(**settings))

    return make


async def api(hub: RunningHub, method: str, params: Any = None, *, key: str = API_KEY) -> dict[str, Any]:
    """``POST /api/<method>``: the decoded body (``{"result": ...}`` or ``{"error": ...}``)."""
    async with http_client(timeout=TIMEOUT) as http:
        response = await http.post(f"{hub.http}/api/{method}", json=params or {}, headers={"X-API-Key": key})
    assert response.status_code == 200, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    return body


async def result(hub: RunningHub, method: str, params: Any = None, *, key: str = API_KEY) -> Any:
    """The result of an API call that must succeed."""
    body = await api(hub, method, params, key=key)
    assert "result" in body, body
    return body["result"]


async def rpc(client: RawClient, method: str, data: Any = None) -> dict[str, Any]:
    """An RPC call's reply: ``{"rpc": {"data": ...}}`` or ``{"error": {...}}``."""
    params: dict[str, Any] = {"method": method}
    if data is not None:
        params["data"] = data
    reply = await client.command("rpc", params)
    reply.pop("id", None)
    return reply


async def rpc_data(client: RawClient, method: str, data: Any = None) -> Any:
    reply = await rpc(client, method, data)
    assert "rpc" in reply, reply
    return reply["rpc"].get("data")


async def personal_push(client: RawClient, user: str) -> dict[str, Any]:
    """The next publication on ``user``'s personal channel: ``{"data": ..., "tags"?: ...}``."""
    push = await client.push("pub")
    assert push["channel"] == f"{PERSONAL}:#{user}", push
    pub: dict[str, Any] = push["pub"]
    return pub


def user(name: str, **kw: Any) -> dict[str, Any]:
    """Connect params of ``name``."""
    return {"token": token(name, **kw)}


class Badge(ClientEventHandler):  # type: ignore[misc]
    """What a browser app keeps: the counts of the highest version seen on the personal channel."""

    def __init__(self, personal: str = f"{PERSONAL}:#") -> None:
        self.personal = personal
        """The prefix of personal channels."""
        self.counts: dict[str, int] = {"version": -1}
        self.items: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def on_publication(self, ctx: Any) -> None:
        data = ctx.pub.data
        if ctx.channel.startswith(self.personal) and data["counts"]["version"] > self.counts["version"]:
            self.counts = data["counts"]
            if "item" in data:
                self.items.append(data["item"])
            self.changed.set()

    async def shows(self, **expected: int) -> None:
        async with asyncio.timeout(TIMEOUT):
            while {k: self.counts.get(k) for k in expected} != expected:
                self.changed.clear()
                await self.changed.wait()
