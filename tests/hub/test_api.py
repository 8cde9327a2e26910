"""The server HTTP API over a real server: each method observed through real clients, batches, keys,
malformed bodies, tenant-bound keys; the glob of ``channels``; a property: a tenant-bound key never
touches another tenant."""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.broker_memory import MemoryBroker
from channels.pattern import BadPattern, compile_pattern
from hub.api import METHODS, ServerAPI, authenticate, decode_root, presented_key
from hub.client import State
from hub.codes import ClientError
from hub.config import ApiKey, Config, load_config
from hub.hooks import Hooks
from hub.node import Node
from presence.presence_memory import MemoryPresence
from tests.conftest import TIMEOUT, RawClient, RunningHub, http_client, token
from tests.conftest import test_config as hub_config
from tests.hub.test_transport_http import open_stream

KEY = "unbound-key-0123456789"
ACME_KEY = "acme-key-0123456789"
DEFAULT_KEY = "default-tenant-key-0123"


def api_config(**overrides: Any) -> Config:
    keys = [ApiKey(ACME_KEY, "acme"), ApiKey(DEFAULT_KEY, "")]
    return hub_config(api_key=KEY, api_keys=keys, **overrides)


@pytest.fixture
async def hub(make_hub: Any) -> RunningHub:
    return await make_hub(api_config())  # type: ignore[no-any-return]


@pytest.fixture
async def http(hub: RunningHub) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(base_url=hub.http, timeout=TIMEOUT) as client:
        yield client


async def call(http: httpx.AsyncClient, method: str, params: Any = None, key: str | None = KEY) -> Any:
    headers = {"X-API-Key": key} if key is not None else {}
    resp = await http.post(f"/api/{method}", json=params if params is not None else {}, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def result(http: httpx.AsyncClient, method: str, params: Any = None, key: str | None = KEY) -> Any:
    body = await call(http, method, params, key)
    assert "result" in body, body
    return body["result"]


async def subscriber(
    raw_client: Any, hub: RunningHub, channel: str, user: str = "ann", **kw: Any
) -> RawClient:
    client: RawClient = await raw_client(hub, connect={"token": token(user, **kw)})
    reply = await client.command("subscribe", {"channel": channel})
    assert "subscribe" in reply, reply
    return client


async def top_offset(hub: RunningHub, channel: str, tenant: str = "") -> int:
    hist = await hub.sb.node.broker.history((tenant, channel), limit=0)
    return hist.position.offset


# ---------------------------------------------------------------- methods, observed by real clients


async def test_publish_reaches_a_subscriber_and_returns_the_position(hub, http, raw_client) -> None:
    client = await subscriber(raw_client, hub, "news")
    res = await result(http, "publish", {"channel": "news", "data": {"text": "hi"}, "tags": {"k": "v"}})
    assert res["offset"] == 1 and res["epoch"]
    push = await client.push("pub")
    assert push == {"channel": "news", "pub": {"data": {"text": "hi"}, "offset": 1, "tags": {"k": "v"}}}
    hist = await result(http, "history", {"channel": "news", "limit": -1})
    assert hist["epoch"] == res["epoch"] and [p["data"] for p in hist["publications"]] == [{"text": "hi"}]


async def test_publish_b64data_skip_history_and_idempotency(hub, http, raw_client) -> None:
    client = await subscriber(raw_client, hub, "news")
    b64 = base64.b64encode(b'{"via":"b64"}').decode()
    assert (await result(http, "publish", {"channel": "news", "b64data": b64}))["offset"] == 1
    assert (await client.push("pub"))["pub"]["data"] == {"via": "b64"}
    # skip_history: delivered, but no offset taken and nothing kept.
    assert await result(http, "publish", {"channel": "news", "data": 2, "skip_history": True}) == {}
    assert (await client.push("pub"))["pub"] == {"data": 2}
    assert await top_offset(hub, "news") == 1
    # The same idempotency key twice: one publication, the same answer.
    first = await result(http, "publish", {"channel": "news", "data": 3, "idempotency_key": "k1"})
    again = await result(http, "publish", {"channel": "news", "data": 3, "idempotency_key": "k1"})
    assert first == again and first["offset"] == 2 and await top_offset(hub, "news") == 2
    # b64data must carry JSON: the hub's subscribers all read JSON.
    binary = base64.b64encode(b"\xff\x00").decode()
    assert (await call(http, "publish", {"channel": "news", "b64data": binary}))["error"]["code"] == 107
    # Pretty-printed JSON is carried compact: its line breaks must not split line-delimited frames.
    pretty = base64.b64encode(b'{\n  "text": "multi\\nline"\n}').decode()
    await result(http, "publish", {"channel": "news", "b64data": pretty})
    assert (await client.push("pub"))["pub"]["data"] == 3
    assert (await client.push("pub"))["pub"]["data"] == {"text": "multi\nline"}  # one parseable line


async def test_broadcast_publishes_into_each_channel_and_answers_each(hub, http, raw_client) -> None:
    news = await subscriber(raw_client, hub, "news")
    room = await subscriber(raw_client, hub, "chat:room", user="bob")
    res = await result(
        http, "broadcast", {"channels": ["news", "chat:room", "nope:x", "bad name"], "data": {"b": 1}}
    )
    replies = res["responses"]
    assert replies[0]["result"]["offset"] == 1 and replies[1]["result"]["offset"] == 1
    assert replies[2] == {"error": {"code": 102, "message": "unknown channel"}}
    assert replies[3]["error"]["code"] == 107
    assert (await news.push("pub"))["pub"]["data"] == {"b": 1}
    assert (await room.push("pub"))["pub"]["data"] == {"b": 1}
    assert (await call(http, "broadcast", {"channels": [], "data": 1}))["error"]["code"] == 107


async def test_subscribe_pushes_then_publications_arrive_then_unsubscribe(hub, http, raw_client) -> None:
    ann: RawClient = await raw_client(hub, connect={"token": token("ann")})
    assert await result(http, "subscribe", {"user": "ann", "channel": "chat:room"}) == {}
    push = await ann.push("subscribe")
    assert push["channel"] == "chat:room" and push["subscribe"]["recoverable"] is True
    await result(http, "publish", {"channel": "chat:room", "data": {"n": 1}})
    assert (await ann.push("pub"))["pub"]["data"] == {"n": 1}
    assert await result(http, "unsubscribe", {"user": "ann", "channel": "chat:room"}) == {}
    assert (await ann.push("unsubscribe"))["channel"] == "chat:room"
    assert hub.sb.node.registry.subscriber_count(("", "chat:room")) == 0
    # Bad names, unknown namespaces and a missing user are refused before any connection changes.
    assert (await call(http, "subscribe", {"user": "ann", "channel": "nope:x"}))["error"]["code"] == 102
    assert (await call(http, "subscribe", {"user": "ann", "channel": "a b"}))["error"]["code"] == 107
    assert (await call(http, "subscribe", {"channel": "news"}))["error"]["code"] == 107
    # Options the hub's server-side subscriptions cannot carry yet are refused, not ignored.
    with_data = {"user": "ann", "channel": "news", "data": {"x": 1}}
    assert (await call(http, "subscribe", with_data))["error"]["code"] == 108
    assert "news" not in hub.sb.node.registry.user_clients("", "ann")[0].subs


async def test_subscribe_holds_to_the_client_channel_limit(make_hub, raw_client) -> None:
    """A backend cannot subscribe a connection past the limit the client itself is held to (Centrifuge's
    server-side Subscribe refuses it too): that connection is left as it is, the others are subscribed."""
    hub = await make_hub(api_config(client_channel_limit=2))
    async with http_client(base_url=hub.http, timeout=TIMEOUT) as http:
        await _subscribe_at_the_limit(hub, http, raw_client)


async def _subscribe_at_the_limit(hub: RunningHub, http: httpx.AsyncClient, raw_client: Any) -> None:
    full: RawClient = await raw_client(hub, connect={"token": token("ann")})
    room: RawClient = await raw_client(hub, connect={"token": token("ann")})
    for name in ("a", "b"):
        assert "subscribe" in await full.command("subscribe", {"channel": name})
    assert (await full.command("subscribe", {"channel": "c"}))["error"][
        "code"
    ] == 106  # the client's own bound
    assert await result(http, "subscribe", {"user": "ann", "channel": "news"}) == {}
    assert (await room.push("subscribe"))["channel"] == "news"
    subs = sorted(sorted(c.subs) for c in hub.sb.node.registry.user_clients("", "ann"))
    assert subs == [["a", "b"], ["news"]]
    # under the limit again, the backend's subscribe goes through
    await full.command("unsubscribe", {"channel": "a"})
    assert await result(http, "subscribe", {"user": "ann", "channel": "news"}) == {}
    assert (await full.push("subscribe"))["channel"] == "news"


async def test_subscribe_targets_one_client_when_asked(hub, http, raw_client) -> None:
    for _ in range(3):
        await raw_client(hub, connect={"token": token("ann")})
    target = hub.sb.node.registry.user_clients("", "ann")[1].id
    await result(http, "subscribe", {"user": "ann", "channel": "news", "client": target})
    subscribed = [c.id for c in hub.sb.node.registry.user_clients("", "ann") if "news" in c.subs]
    assert subscribed == [target]


async def test_disconnect_closes_with_the_given_code_and_keeps_the_whitelist(hub, http, raw_client) -> None:
    first: RawClient = await raw_client(hub, connect={"token": token("ann")})
    second: RawClient = await raw_client(hub, connect={"token": token("ann")})
    ids = {c.id for c in hub.sb.node.registry.user_clients("", "ann")}
    keep = next(iter(ids))
    params = {"user": "ann", "whitelist": [keep], "disconnect": {"code": 4001, "reason": "bye"}}
    assert await result(http, "disconnect", params) == {}
    # The closed connection leaves the registry when its socket is gone: wait on its close code.
    await result(http, "disconnect", {"user": "ann"})
    codes = sorted([await first.closed(), await second.closed()])
    assert codes == [(3503, "force disconnect"), (4001, "bye")]
    bad = {"user": "ann", "disconnect": {"code": 1000, "reason": "x"}}
    assert (await call(http, "disconnect", bad))["error"]["code"] == 107


async def test_refresh_sets_expiry_and_expired_disconnects(hub, http, raw_client) -> None:
    ann: RawClient = await raw_client(hub, connect={"token": token("ann")})
    # Expiring one second from now (the suite's grace is one second): the session clock closes it, 3005.
    await result(http, "refresh", {"user": "ann", "expire_at": int(time.time()) + 1})
    assert await ann.closed() == (3005, "connection expired")
    bob: RawClient = await raw_client(hub, connect={"token": token("bob")})
    await result(http, "refresh", {"user": "bob", "expired": True})
    assert await bob.closed() == (3005, "connection expired")


async def test_refresh_tells_a_unidirectional_client(hub, http) -> None:
    async with http_client(timeout=TIMEOUT) as streams:
        url = hub.http + "/connection/uni_http_stream"
        async with open_stream(streams, "POST", url, json={"token": token("uni")}) as stream:
            assert "connect" in await stream.message()
            expire_at = int(time.time()) + 3600
            await result(http, "refresh", {"user": "uni", "expire_at": expire_at})
            push = await stream.message()
            assert push["refresh"]["expires"] is True and 3500 < push["refresh"]["ttl"] <= 3600
    assert all(c.expires_at in (0.0, expire_at) for c in hub.sb.node.sessions)


async def test_session_targets_one_stream_of_the_user(hub, http, raw_client) -> None:
    socket: RawClient = await raw_client(hub, connect={"token": token("uni")})
    async with http_client(timeout=TIMEOUT) as streams:
        url = hub.http + "/connection/uni_http_stream"
        async with open_stream(streams, "POST", url, json={"token": token("uni")}) as stream:
            session = (await stream.message())["connect"]["session"]
            await result(http, "disconnect", {"user": "uni", "session": "no-such-session"})
            await result(http, "disconnect", {"user": "uni", "session": session})
            assert await stream.message() == {"disconnect": {"code": 3503, "reason": "force disconnect"}}
    # The WebSocket connection of the same user is still there and answers.
    assert "presence_stats" in await socket.command("presence_stats", {"channel": "news"})


async def test_presence_and_stats_reflect_real_subscribers(hub, http, raw_client) -> None:
    await subscriber(raw_client, hub, "chat:room", user="ann")
    await subscriber(raw_client, hub, "chat:room", user="ann")
    await subscriber(raw_client, hub, "chat:room", user="bob")
    presence = (await result(http, "presence", {"channel": "chat:room"}))["presence"]
    assert sorted(info["user"] for info in presence.values()) == ["ann", "ann", "bob"]
    assert all(cid == info["client"] for cid, info in presence.items())
    stats = await result(http, "presence_stats", {"channel": "chat:room"})
    assert stats == {"num_clients": 3, "num_users": 2}
    assert (await call(http, "presence", {"channel": "nohist:x"}))["error"]["code"] == 108


async def test_history_and_history_remove(hub, http) -> None:
    for n in range(3):
        await result(http, "publish", {"channel": "chat:log", "data": {"n": n}})
    position = await result(http, "history", {"channel": "chat:log"})
    assert position["offset"] == 3 and position["publications"] == []
    everything = await result(http, "history", {"channel": "chat:log", "limit": -1})
    assert [p["offset"] for p in everything["publications"]] == [1, 2, 3]
    since = {"offset": 1, "epoch": position["epoch"]}
    after = await result(http, "history", {"channel": "chat:log", "limit": 10, "since": since})
    assert [p["data"]["n"] for p in after["publications"]] == [1, 2]
    latest = await result(http, "history", {"channel": "chat:log", "limit": 1, "reverse": True})
    assert [p["offset"] for p in latest["publications"]] == [3]
    stale = {"offset": 1, "epoch": "other-epoch"}
    assert (await call(http, "history", {"channel": "chat:log", "since": stale}))["error"]["code"] == 112
    assert (await call(http, "history", {"channel": "nohist:x"}))["error"]["code"] == 108

    assert await result(http, "history_remove", {"channel": "chat:log"}) == {}
    emptied = await result(http, "history", {"channel": "chat:log", "limit": -1})
    # The publications are gone; the position stays, so subscribers need not reload.
    assert emptied == {"epoch": position["epoch"], "offset": 3, "publications": []}
    assert (await call(http, "history_remove", {"channel": "nohist:x"}))["error"]["code"] == 108


async def test_channels_lists_active_channels_with_counts_and_patterns(hub, http, raw_client) -> None:
    await subscriber(raw_client, hub, "news")
    await subscriber(raw_client, hub, "news", user="bob")
    await subscriber(raw_client, hub, "chat:room")
    channels = (await result(http, "channels"))["channels"]
    assert channels == {"news": {"num_clients": 2}, "chat:room": {"num_clients": 1}}
    only_chat = (await result(http, "channels", {"pattern": "chat:*"}))["channels"]
    assert only_chat == {"chat:room": {"num_clients": 1}}
    either = (await result(http, "channels", {"pattern": "{news,nothing}"}))["channels"]
    assert list(either) == ["news"]
    assert (await call(http, "channels", {"pattern": "[news"}))["error"]["code"] == 107


async def test_info_reports_the_node(hub, http, raw_client) -> None:
    await subscriber(raw_client, hub, "news")
    await subscriber(raw_client, hub, "chat:room", user="bob")
    await subscriber(raw_client, hub, "news", user="carl", tenant="acme")
    (node,) = (await result(http, "info"))["nodes"]
    assert node["uid"] == hub.sb.node.id and node["version"] == hub.sb.node.version
    assert (node["num_clients"], node["num_users"], node["num_channels"], node["num_subs"]) == (3, 3, 3, 3)
    assert node["uptime"] >= 0
    (acme,) = (await result(http, "info", {"tenant": "acme"}))["nodes"]
    assert (acme["num_clients"], acme["num_users"], acme["num_channels"], acme["num_subs"]) == (1, 1, 1, 1)


# ---------------------------------------------------------------- batches


async def test_batch_keeps_order_with_mixed_successes_and_errors(hub, http, raw_client) -> None:
    client = await subscriber(raw_client, hub, "news")
    commands = [
        {"publish": {"channel": "news", "data": 1}},
        {"publish": {"channel": "nope:x", "data": 2}},
        {"publish": {"channel": "news"}},
        {"frobnicate": {}},
        {"presence_stats": {"channel": "news"}},
        {"publish": {"channel": "news", "data": 3}},
        "not an object",
    ]
    for parallel in (False, True):
        body = (
            await http.post(
                "/api/batch", json={"commands": commands, "parallel": parallel}, headers={"X-API-Key": KEY}
            )
        ).json()
        replies = body["replies"]
        assert len(replies) == len(commands)
        assert "offset" in replies[0]["publish"]
        assert replies[1]["error"]["code"] == 102
        assert replies[2]["error"]["code"] == 107
        assert replies[3]["error"]["code"] == 104
        assert replies[4] == {"presence_stats": {"num_clients": 1, "num_users": 1}}
        assert replies[5]["publish"]["offset"] == replies[0]["publish"]["offset"] + 1
        assert replies[6]["error"]["code"] == 107
    assert [(await client.push("pub"))["pub"]["data"] for _ in range(4)] == [1, 3, 1, 3]
    bad = await http.post("/api/batch", json={"commands": "x"}, headers={"X-API-Key": KEY})
    assert bad.json()["error"]["code"] == 107


class InFlightBroker(MemoryBroker):
    """Counts the publishes in flight at once: each yields to the loop before it completes, as a Redis
    round trip would, so publishes started together overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = self.most = 0

    async def publish(self, *args: Any, **kw: Any) -> Any:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            return await super().publish(*args, **kw)
        finally:
            self.in_flight -= 1


@pytest.mark.parametrize("limit", [1, 8])
async def test_a_parallel_batch_runs_a_bounded_number_of_commands_at_once(limit: int) -> None:
    """(Issue 10.) ``parallel: true`` ran every command of the body at once (~30,000 publishes from one
    1 MiB body, as many tasks and backend calls); at most ``api_batch_max_parallel`` are in flight now, and
    the replies keep the commands' order."""
    broker = InFlightBroker()
    node = Node(api_config(api_batch_max_parallel=limit), broker, MemoryPresence(), Hooks())
    api = ServerAPI(node)
    commands: list[Any] = [{"publish": {"channel": "news", "data": n}} for n in range(200)]
    commands[100] = {"publish": {"channel": "nope:x", "data": 0}}
    replies = (await api.batch(ApiKey(KEY), {"commands": commands, "parallel": True}))["replies"]
    assert broker.most == limit
    assert replies[100]["error"]["code"] == 102
    offsets = [r["publish"]["offset"] for i, r in enumerate(replies) if i != 100]
    assert sorted(offsets) == list(range(1, 200)) and len(replies) == 200


async def test_root_endpoint_takes_batches_and_old_style_lines(hub, http, raw_client) -> None:
    client = await subscriber(raw_client, hub, "news")
    batch = {"commands": [{"publish": {"channel": "news", "data": "a"}}, {"info": {}}]}
    replies = (await http.post("/api", json=batch, headers={"X-API-Key": KEY})).json()["replies"]
    assert replies[0]["publish"]["offset"] == 1 and replies[1]["info"]["nodes"]
    lines = b"\n".join(
        [
            orjson.dumps({"id": 1, "method": "publish", "params": {"channel": "news", "data": "b"}}),
            orjson.dumps({"id": 2, "method": "nonsense", "params": {}}),
            orjson.dumps({"method": "presence_stats", "params": {"channel": "news"}}),
            orjson.dumps({"id": 4, "params": {}}),
        ]
    )
    resp = await http.post("/api", content=lines, headers={"Authorization": f"apikey {KEY}"})
    assert resp.status_code == 200
    out = [orjson.loads(line) for line in resp.content.split(b"\n")]
    assert out[0] == {"id": 1, "result": {"offset": 2, "epoch": out[0]["result"]["epoch"]}}
    assert out[1] == {"id": 2, "error": {"code": 104, "message": "method not found"}}
    assert out[2] == {"result": {"num_clients": 1, "num_users": 1}}
    assert out[3]["id"] == 4 and out[3]["error"]["code"] == 107
    assert [(await client.push("pub"))["pub"]["data"] for _ in range(2)] == ["a", "b"]
    single = {"method": "publish", "params": {"channel": "news", "data": "c"}}
    assert (await http.post("/api", json=single, headers={"X-API-Key": KEY})).json()["result"]["offset"] == 3


# ---------------------------------------------------------------- keys and bad input


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "apikey wrong"}, {"Authorization": f"Bearer {KEY}"}],
    ids=["missing", "wrong", "wrong-authorization", "wrong-scheme"],
)
async def test_wrong_or_missing_key_is_401_and_nothing_happens(
    hub, http, raw_client, headers, caplog
) -> None:
    await result(http, "publish", {"channel": "news", "data": 0})
    for path, body in [
        ("/api/publish", {"channel": "news", "data": 1}),
        ("/api", {"method": "publish", "params": {"channel": "news", "data": 1}}),
    ]:
        resp = await http.post(path, json=body, headers=headers)
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == 101
    assert await top_offset(hub, "news") == 1  # only the authorised publish happened
    assert "refused" in caplog.text


async def test_authorization_apikey_header_is_accepted(hub, http) -> None:
    resp = await http.post("/api/info", json={}, headers={"Authorization": f"ApiKey {KEY}"})
    assert resp.status_code == 200 and resp.json()["result"]["nodes"]


async def test_no_key_configured_means_no_api_unless_development_mode(make_hub) -> None:
    closed = await make_hub(hub_config())
    dev = await make_hub(hub_config(dev_mode=True))
    async with http_client(timeout=TIMEOUT) as http:
        resp = await http.post(closed.http + "/api/publish", json={"channel": "news", "data": 1})
        assert resp.status_code == 404
        assert await top_offset(closed, "news") == 0
        resp = await http.post(dev.http + "/api/publish", json={"channel": "news", "data": 1})
        assert resp.status_code == 200 and resp.json()["result"]["offset"] == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, 107),
        (b"[1, 2]", 400, 107),
        (b'"a string"', 400, 107),
        (b'{"data": 1}', 200, 107),
        (b'{"channel": 5, "data": 1}', 200, 107),
        (b'{"channel": "news"}', 200, 107),
        (b'{"channel": "news", "data": 1, "tags": {"a": 1}}', 200, 107),
        (b'{"channel": "news", "data": 1, "skip_history": "yes"}', 200, 107),
        (b'{"channel": "news", "data": 1, "tenant": 7}', 200, 107),
        (b'{"channel": "has space", "data": 1}', 200, 107),
        (b'{"channel": "nope:x", "data": 1}', 200, 102),
    ],
)
async def test_malformed_publish_bodies(hub, http, body, status, code) -> None:
    resp = await http.post("/api/publish", content=body, headers={"X-API-Key": KEY})
    assert resp.status_code == status
    assert resp.json()["error"]["code"] == code
    assert await top_offset(hub, "news") == 0


async def test_unknown_method_and_get_are_refused(hub, http) -> None:
    assert (await call(http, "frobnicate", {}))["error"] == {"code": 104, "message": "method not found"}
    assert (await http.get("/api/publish", headers={"X-API-Key": KEY})).status_code == 405
    bad = await http.post("/api", content=b"{}\nnot json", headers={"X-API-Key": KEY})
    assert bad.status_code == 400


async def test_body_over_the_limit_is_413_and_nothing_happens(make_hub) -> None:
    hub = await make_hub(api_config(api_max_body_size=1024))
    async with http_client(base_url=hub.http, timeout=TIMEOUT) as http:
        big = {"channel": "news", "data": "x" * 2000}
        resp = await http.post("/api/publish", json=big, headers={"X-API-Key": KEY})
        assert resp.status_code == 413
        assert await top_offset(hub, "news") == 0
        # The node stays up and serves the next call.
        assert (await result(http, "publish", {"channel": "news", "data": 1}))["offset"] == 1


# ---------------------------------------------------------------- tenants


async def test_bound_key_publishes_only_into_its_tenant(hub, http, raw_client) -> None:
    home = await subscriber(raw_client, hub, "news", user="ann")
    acme = await subscriber(raw_client, hub, "news", user="ann", tenant="acme")
    await result(http, "publish", {"channel": "news", "data": "for acme"}, key=ACME_KEY)
    assert (await acme.push("pub"))["pub"]["data"] == "for acme"
    assert await top_offset(hub, "news", "acme") == 1 and await top_offset(hub, "news") == 0
    other = await call(http, "publish", {"channel": "news", "data": "x", "tenant": ""}, key=ACME_KEY)
    assert other["error"] == {"code": 103, "message": "permission denied"}
    same = await call(http, "publish", {"channel": "news", "data": "y", "tenant": "acme"}, key=ACME_KEY)
    assert same["result"]["offset"] == 2
    # A key bound to the default tenant is confined too.
    home_only = await call(
        http, "publish", {"channel": "news", "data": "z", "tenant": "acme"}, key=DEFAULT_KEY
    )
    assert home_only["error"]["code"] == 103
    await result(http, "publish", {"channel": "news", "data": "home"}, key=DEFAULT_KEY)
    assert (await home.push("pub"))["pub"]["data"] == "home"  # the first thing the home client got
    assert await top_offset(hub, "news") == 1 and await top_offset(hub, "news", "acme") == 2


async def test_unbound_key_targets_a_tenant_by_field(hub, http, raw_client) -> None:
    acme = await subscriber(raw_client, hub, "news", tenant="acme")
    await result(http, "publish", {"channel": "news", "data": 1, "tenant": "acme"})
    assert (await acme.push("pub"))["pub"]["data"] == 1
    assert await top_offset(hub, "news") == 0


async def test_bound_key_sees_only_its_tenant(hub, http, raw_client) -> None:
    await subscriber(raw_client, hub, "chat:room", user="ann")
    await subscriber(raw_client, hub, "chat:secret", user="ann")
    await subscriber(raw_client, hub, "chat:room", user="carl", tenant="acme")
    await result(http, "publish", {"channel": "chat:room", "data": "home"})
    presence = (await result(http, "presence", {"channel": "chat:room"}, key=ACME_KEY))["presence"]
    assert [info["user"] for info in presence.values()] == ["carl"]
    hist = await result(http, "history", {"channel": "chat:room", "limit": -1}, key=ACME_KEY)
    assert hist["publications"] == [] and hist["offset"] == 0
    channels = (await result(http, "channels", {}, key=ACME_KEY))["channels"]
    assert channels == {"chat:room": {"num_clients": 1}}
    (node,) = (await result(http, "info", {}, key=ACME_KEY))["nodes"]
    assert (node["num_clients"], node["num_channels"]) == (1, 1)
    for method in ("presence", "history", "channels", "info"):
        denied = await call(http, method, {"channel": "chat:room", "tenant": ""}, key=ACME_KEY)
        assert denied["error"]["code"] == 103
    # Server-side control of connections stays inside the tenant too.
    assert await result(http, "disconnect", {"user": "ann"}, key=ACME_KEY) == {}
    assert len(hub.sb.node.registry.user_clients("", "ann")) == 2


async def test_user_control_is_per_tenant(hub, http, raw_client) -> None:
    home: RawClient = await raw_client(hub, connect={"token": token("ann")})
    acme: RawClient = await raw_client(hub, connect={"token": token("ann", tenant="acme")})
    await result(http, "subscribe", {"user": "ann", "channel": "news"}, key=ACME_KEY)
    assert (await acme.push("subscribe"))["channel"] == "news"
    await result(
        http, "disconnect", {"user": "ann", "disconnect": {"code": 4100, "reason": "acme"}}, key=ACME_KEY
    )
    assert await acme.closed() == (4100, "acme")
    [client] = hub.sb.node.registry.user_clients("", "ann")
    assert client.subs == {} and client.state is State.CONNECTED
    assert home


# ---------------------------------------------------------------- sans-I/O parts


def test_keys_come_from_headers_and_compare_exactly() -> None:
    keys = [ApiKey("k1"), ApiKey("k2", "acme")]
    assert presented_key({"x-api-key": "k1"}) == "k1"
    assert presented_key({"authorization": "apikey k2"}) == "k2"
    assert presented_key({"authorization": "Bearer k2"}) is None
    assert presented_key({}) is None
    assert authenticate("k2", keys) == ApiKey("k2", "acme")
    assert authenticate("k", keys) is None and authenticate("k1x", keys) is None
    assert authenticate(None, keys) is None and authenticate("", keys) is None


def test_root_body_forms() -> None:
    assert decode_root(b'{"commands": []}') == (True, [{"commands": []}])
    pretty = b'{\n  "method": "info",\n  "params": {}\n}'
    assert decode_root(pretty) == (False, [{"method": "info", "params": {}}])
    assert decode_root(b'{"method": "a"}\n\n{"method": "b"}\n')[1] == [{"method": "a"}, {"method": "b"}]


def test_config_reads_api_keys_from_toml_and_env(tmp_path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(
        'token_hmac_secret_key = "s"\napi_key = "main"\napi_max_body_size = 2048\n'
        '[[api_keys]]\nkey = "a"\ntenant = "acme"\n[[api_keys]]\nkey = "b"\n'
    )
    cfg = load_config(path, env={})
    assert cfg.server_api_keys() == [ApiKey("main"), ApiKey("a", "acme"), ApiKey("b")]
    assert cfg.api_max_body_size == 2048
    env = {"SWITCHBOARD_API_KEY": "e", "SWITCHBOARD_API_KEYS": '[{"key": "t", "tenant": ""}]'}
    assert load_config(env=env).server_api_keys() == [ApiKey("e"), ApiKey("t", "")]
    from hub.codes import ConfigError

    for bad in ('[{"tenant": "x"}]', '[{"key": "t", "extra": 1}]', '{"key": "t"}', '[{"key": "e"}]'):
        with pytest.raises(ConfigError):
            load_config(env={"SWITCHBOARD_API_KEY": "e", "SWITCHBOARD_API_KEYS": bad})


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("chat:*", ["chat:", "chat:room", "chat:a:b"], ["chat", "xchat:room"]),
        ("news", ["news"], ["news2", "new"]),
        ("n?ws", ["news", "naws"], ["nws", "neews"]),
        ("[abc]x", ["ax", "cx"], ["dx", "x"]),
        ("[!abc]x", ["dx"], ["ax"]),
        ("[a-c]*", ["a", "cat"], ["dog"]),
        ("{chat,news}:*", ["chat:1", "news:2"], ["feed:1"]),
        ("{a,b{c,d}}", ["a", "bc", "bd"], ["b", "ac"]),
        ("\\*", ["*"], ["a"]),
        ("a,b", ["a,b"], ["a"]),
    ],
)
def test_channel_patterns(pattern: str, yes: list[str], no: list[str]) -> None:
    match = compile_pattern(pattern)
    assert all(match(n) for n in yes) and not any(match(n) for n in no)


@pytest.mark.parametrize("pattern", ["[abc", "{a,b", "a\\", "[]", "[z-a]"])
def test_broken_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(BadPattern):
        compile_pattern(pattern)


_plain = st.text(alphabet="ab:.-_#$", max_size=6)


@given(pattern=st.text(alphabet="ab:*?", max_size=6), name=_plain)
def test_star_and_question_mark_match_as_fnmatch_does(pattern: str, name: str) -> None:
    assert compile_pattern(pattern)(name) == fnmatch.fnmatchcase(name, pattern)


# ---------------------------------------------------------------- property: a bound key stays in its tenant


class Sink:
    """A transport that keeps what it was given (frames and the close)."""

    name = "sink"

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def write_messages(self, messages: list[bytes]) -> int:
        self.frames.extend(messages)
        return 0

    def close(self, code: int, reason: str) -> None:
        self.closed = self.closed or (code, reason)


CHANNELS = ["news", "chat:room", "chat:log", "personal:inbox#ann", "nope:x", "a b"]
USERS = ["ann", "bob", ""]

_params = st.fixed_dictionaries(
    {},
    optional={
        "channel": st.sampled_from(CHANNELS),
        "channels": st.lists(st.sampled_from(CHANNELS), max_size=3),
        "user": st.sampled_from(USERS),
        "data": st.integers(),
        "tenant": st.sampled_from(["", "acme", "other", 5]),
        "limit": st.integers(-1, 3),
        "expired": st.booleans(),
        "expire_at": st.integers(0, 2_000_000_000),
        "disconnect": st.just({"code": 4000, "reason": "x"}),
        "skip_history": st.booleans(),
        "pattern": st.sampled_from(["*", "chat:*", "["]),
    },
)
_methods = st.sampled_from([*METHODS, "batch", "nonsense"])
_calls = st.lists(st.tuples(_methods, _params), max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=_calls)
def test_a_bound_key_never_affects_another_tenant(calls: list[tuple[str, dict[str, Any]]]) -> None:
    asyncio.run(_bound_key_scenario(calls))


async def _bound_key_scenario(calls: list[tuple[str, dict[str, Any]]]) -> None:
    cfg = api_config()
    node = Node(cfg, MemoryBroker(), MemoryPresence(), Hooks())
    api = ServerAPI(node)
    await node.start()
    sessions: dict[tuple[str, str], tuple[Any, Sink]] = {}
    try:
        for tenant in ("", "acme"):
            for user in ("ann", "bob"):
                sink = Sink()
                client = node.new_session(sink, scope={})
                frame = {"id": 1, "connect": {"token": token(user, tenant=tenant or None)}}
                await client.handle_frame(orjson.dumps(frame))
                for n, channel in enumerate(["news", "chat:room", "personal:inbox#ann"], start=2):
                    await client.handle_frame(orjson.dumps({"id": n, "subscribe": {"channel": channel}}))
                sessions[(tenant, user)] = (client, sink)
        await node.publish("chat:log", {"seed": True})
        node.scheduler.flush()

        def snapshot() -> Any:
            home = [
                (client.state, sorted(client.subs), client.expires_at, len(sink.frames), sink.closed)
                for (tenant, _), (client, sink) in sessions.items()
                if tenant == ""
            ]
            return home

        async def streams() -> Any:
            out = []
            for channel in ["news", "chat:room", "chat:log", "personal:inbox#ann"]:
                hist = await node.broker.history(("", channel), limit=-1)
                presence = await node.presence.get(("", channel))
                out.append((hist.position, [p.data for p in hist.publications], sorted(presence)))
            return out

        before, before_streams = snapshot(), await streams()
        principal = ApiKey(ACME_KEY, "acme")
        for method, params in calls:
            if method == "batch":
                body = {"commands": [{m: dict(params)} for m in ("publish", "disconnect", "history_remove")]}
                await api.batch(principal, body)
            else:
                try:
                    await api.call(principal, method, dict(params))
                except ClientError:
                    pass
            node.scheduler.flush()
        assert snapshot() == before
        assert await streams() == before_streams
    finally:
        for client, _ in sessions.values():  # ended here, or stop() would wait out shutdown_timeout
            await node.end_session(client)
        await node.stop()
