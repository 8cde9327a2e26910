"""Who may open a document: tokens, the docs claim, read-only connections, the HTTP read endpoint."""

from __future__ import annotations

import asyncio
from pathlib import Path

import jwt
import pytest
import websockets
from pycrdt import Text

from hub.config import ApiKey
from sync import protocol
from tests.conftest import TIMEOUT, HubFactory, RunningHub, http_client, token
from tests.hub.ydocs import YConnect, doc_url


@pytest.fixture
async def closed_hub(make_hub: HubFactory, tmp_path: Path) -> RunningHub:
    """Production defaults for documents: no anonymous access, tokens need a docs claim."""
    return await make_hub(data_dir=str(tmp_path))


async def refused(hub: RunningHub, name: str, tok: str | None) -> tuple[str, int, str]:
    """Connect; return the auth message's reason and the close code and reason."""
    async with websockets.connect(doc_url(hub, name, tok), open_timeout=TIMEOUT) as ws:
        async with asyncio.timeout(TIMEOUT):
            first = await ws.recv()
            assert isinstance(first, bytes)
            message = protocol.decode(first)
            assert isinstance(message, protocol.PermissionDenied), message
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
        assert ws.close_code is not None
        return message.reason, ws.close_code, ws.close_reason


async def test_no_token(closed_hub: RunningHub) -> None:
    assert await refused(closed_hub, "doc", None) == ("token required", 4401, "token required")


async def test_bad_and_expired_tokens(closed_hub: RunningHub) -> None:
    reason, code, _ = await refused(closed_hub, "doc", "not-a-jwt")
    assert code == 4401 and reason.startswith("invalid token")
    forged = jwt.encode({"sub": "eve", "docs": {"write": ["*"]}}, "wrong-secret-" * 3)
    assert (await refused(closed_hub, "doc", forged))[1] == 4401
    expired = token("alice", ttl=-10, docs={"write": ["*"]})
    assert await refused(closed_hub, "doc", expired) == ("token expired", 4401, "token expired")


async def test_docs_claim_patterns(closed_hub: RunningHub, yconnect: YConnect) -> None:
    tok = token("alice", docs={"read": ["public/*", "faq"], "write": ["notes/alice/*"]})
    await yconnect(closed_hub, "public/anything", token=tok)
    await yconnect(closed_hub, "faq", token=tok)
    await yconnect(closed_hub, "notes/alice/todo", token=tok)
    reason, code, _ = await refused(closed_hub, "notes/bob/todo", tok)
    assert code == 4403 and "permission denied" in reason
    assert (await refused(closed_hub, "faq2", tok))[1] == 4403
    no_claim = token("bob")  # doc_token_access = none
    assert (await refused(closed_hub, "faq", no_claim))[1] == 4403


async def test_read_only_clients_read_but_their_updates_are_refused(
    closed_hub: RunningHub, yconnect: YConnect
) -> None:
    writer = await yconnect(closed_hub, "shared", token=token("w", docs={"write": ["shared"]}))
    reader = await yconnect(closed_hub, "shared", token=token("r", docs={"read": ["shared"]}))
    writer.text.insert(0, "by the writer")
    await writer.flush()
    await reader.until(lambda: str(reader.text) == "by the writer")
    reader.text.insert(0, "sneaky ")
    await reader.flush()
    await reader.until(lambda: reader.y.denied == ["read-only: update not applied"])
    writer.text.insert(len(writer.text), "!")  # the connection stays open and keeps syncing
    await writer.flush()
    await reader.until(lambda: str(reader.text).endswith("by the writer!"))
    assert str(writer.text) == "by the writer!"
    assert await closed_hub.sb.documents.content("shared") == {"text": "by the writer!"}


async def test_a_token_past_its_exp_ends_the_connection(make_hub: HubFactory, tmp_path: Path) -> None:
    hub = await make_hub(data_dir=str(tmp_path), client_expired_close_delay=0.0)
    tok = token("alice", ttl=1, docs={"write": ["*"]})
    async with websockets.connect(doc_url(hub, "soon", tok), open_timeout=TIMEOUT) as ws:
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await ws.recv()
        assert (ws.close_code, ws.close_reason) == (4401, "token expired")


async def test_tenant_comes_from_the_token(closed_hub: RunningHub, yconnect: YConnect) -> None:
    tok = token("alice", tenant="acme", docs={"write": ["*"]})
    alice = await yconnect(closed_hub, "plan", token=tok)
    alice.text.insert(0, "acme plan")
    await alice.flush()
    watcher = await yconnect(closed_hub, "plan", token=tok)
    await watcher.until(lambda: str(watcher.text) == "acme plan")
    assert await closed_hub.sb.documents.content("plan", tenant="acme") == {"text": "acme plan"}
    assert await closed_hub.sb.documents.content("plan") == {}


async def test_content_endpoint_authorization(closed_hub: RunningHub) -> None:
    await closed_hub.sb.documents.transact("memo", lambda doc: doc.get("text", type=Text).insert(0, "hi"))
    reader = token("r", docs={"read": ["memo"]})
    async with http_client(base_url=closed_hub.http) as http:
        assert (await http.get("/doc/memo/content")).status_code == 401
        assert (await http.get("/doc/memo/content", params={"token": "junk"})).status_code == 401
        no_access = token("x", docs={"read": []})
        assert (await http.get("/doc/memo/content", params={"token": no_access})).status_code == 403
        ok = await http.get("/doc/memo/content", params={"token": reader})
        assert ok.status_code == 200 and ok.json() == {"text": "hi"}
        bearer = await http.get("/doc/memo/content", headers={"Authorization": f"Bearer {reader}"})
        assert bearer.json() == {"text": "hi"}
        assert (await http.post("/doc/memo/content", params={"token": reader})).status_code == 405


async def test_content_endpoint_with_the_server_api_key(make_hub: HubFactory, tmp_path: Path) -> None:
    hub = await make_hub(
        data_dir=str(tmp_path), api_keys=[ApiKey("any-tenant-key"), ApiKey("acme-key", "acme")]
    )
    docs = hub.sb.documents
    await docs.transact("memo", lambda doc: doc.get("text", type=Text).insert(0, "acme memo"), tenant="acme")
    await docs.transact("memo", lambda doc: doc.get("text", type=Text).insert(0, "default memo"))
    async with http_client(base_url=hub.http) as http:
        unbound = {"X-API-Key": "any-tenant-key"}
        assert (await http.get("/doc/memo/content", headers=unbound)).json() == {"text": "default memo"}
        in_acme = await http.get("/doc/memo/content", headers=unbound, params={"tenant": "acme"})
        assert in_acme.json() == {"text": "acme memo"}
        bound = {"Authorization": "apikey acme-key"}
        assert (await http.get("/doc/memo/content", headers=bound)).json() == {"text": "acme memo"}
        other = await http.get("/doc/memo/content", headers=bound, params={"tenant": "globex"})
        assert other.status_code == 403
        assert (await http.get("/doc/memo/content", headers={"X-API-Key": "wrong"})).status_code == 401
