"""The console's endpoints without a browser (hub/admin/console.py): off unless configured, sign-in and
its cookie, CSRF and Origin, read-only refusal, JSON shapes, actions through the server API, the audit
log, the live event stream and its bounds, garbage in every input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.admin.console import ACTIONS
from tests.conftest import TIMEOUT, RunningHub, http_client, token

ADMIN = "admin-password-for-tests"
READONLY = "readonly-password-for-tests"


@pytest.fixture
async def console(make_hub: Any, tmp_path: Any) -> RunningHub:
    hub: RunningHub = await make_hub(
        admin_password=ADMIN, admin_readonly_password=READONLY, data_dir=str(tmp_path)
    )
    return hub


class Session:
    """An httpx client signed in to the console, sending its CSRF token on POSTs."""

    def __init__(self, http: httpx.AsyncClient, csrf: str) -> None:
        self.http, self.csrf = http, csrf

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.http.get(f"/admin/api/{path}", params=params)

    async def act(self, action: str, **fields: Any) -> httpx.Response:
        body = {"action": action, **fields}
        return await self.http.post("/admin/api/action", json=body, headers={"x-csrf-token": self.csrf})


@pytest.fixture
async def clients() -> AsyncIterator[list[httpx.AsyncClient]]:
    opened: list[httpx.AsyncClient] = []
    yield opened
    for c in opened:
        await c.aclose()


async def sign_in(hub: RunningHub, clients: list[httpx.AsyncClient], password: str = ADMIN) -> Session:
    http = http_client(base_url=hub.http, timeout=TIMEOUT)
    clients.append(http)
    r = await http.post("/admin/api/login", json={"password": password})
    assert r.status_code == 200, r.text
    return Session(http, r.json()["csrf"])


# ---------------------------------------------------------------- off, pages, sign-in


async def test_console_is_404_everywhere_unless_configured(make_hub: Any) -> None:
    hub = await make_hub()
    async with http_client(base_url=hub.http) as http:
        for path in ("/admin", "/admin/", "/admin/app.js", "/admin/api/session", "/admin/api/events"):
            assert (await http.get(path)).status_code == 404, path
        assert (await http.post("/admin/api/login", json={"password": "x"})).status_code == 404


async def test_pages_are_served_with_a_strict_policy_and_nothing_else(console: RunningHub) -> None:
    async with http_client(base_url=console.http) as http:
        r = await http.get("/admin")
        assert r.status_code == 307 and r.headers["location"] == "admin/"
        r = await http.get("/admin/")
        assert r.status_code == 200 and "<sb-console>" in r.text
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        r = await http.get("/admin/app.js")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
        for path in (
            "/admin/nope.js",
            "/admin/..%2F..%2Fhub%2Fconfig.py",
            "/admin/__init__.py",
            "/admin/a/b.js",
        ):
            assert (await http.get(path)).status_code == 404, path


async def test_sign_in_sets_a_strict_cookie_and_the_session_answers(console: RunningHub) -> None:
    async with http_client(base_url=console.http) as http:
        assert (await http.get("/admin/api/session")).status_code == 401
        r = await http.post("/admin/api/login", json={"password": "wrong"})
        assert (r.status_code, r.json()) == (401, {"error": "wrong password"})
        r = await http.post("/admin/api/login", json={"password": ADMIN})
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
        assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
        session = (await http.get("/admin/api/session")).json()
        assert session["role"] == "admin" and session["csrf"] == r.json()["csrf"]
        assert session["node"] == console.sb.node.id


async def test_behind_a_trusted_tls_proxy_the_cookie_is_secure(make_hub: Any, tmp_path: Any) -> None:
    from starlette.requests import Request

    hub = await make_hub(admin_password=ADMIN, admin_trust_proxy_headers=True, data_dir=str(tmp_path))
    async with http_client(base_url=hub.http) as http:
        r = await http.post(
            "/admin/api/login", json={"password": ADMIN}, headers={"x-forwarded-proto": "https"}
        )
        assert "; Secure" in r.headers["set-cookie"]
    # (uvicorn itself believes X-Forwarded-Proto from 127.0.0.1, so the untrusted case is checked directly.)
    headers = [(b"x-forwarded-proto", b"https"), (b"x-forwarded-for", b"203.0.113.7, 198.51.100.2")]
    scope = {"type": "http", "scheme": "http", "headers": headers, "client": ("10.1.2.3", 5000), "path": "/"}
    request = Request(scope)
    assert hub.sb.console._https(request) and hub.sb.console._remote(request) == "198.51.100.2"
    plain = await make_hub(admin_password=ADMIN, data_dir=str(tmp_path / "b"))
    assert not plain.sb.console._https(request) and plain.sb.console._remote(request) == "10.1.2.3"


async def test_failed_sign_ins_are_throttled_with_retry_after(console: RunningHub) -> None:
    async with http_client(base_url=console.http) as http:
        for _ in range(5):
            assert (await http.post("/admin/api/login", json={"password": "guess"})).status_code == 401
        r = await http.post("/admin/api/login", json={"password": ADMIN})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["retry_after"] >= 1


async def test_a_burst_of_parallel_guesses_is_throttled_too(console: RunningHub) -> None:
    async with http_client(base_url=console.http, timeout=TIMEOUT) as http:
        answers = await asyncio.gather(
            *(http.post("/admin/api/login", json={"password": f"guess-{i}"}) for i in range(40))
        )
    statuses = sorted(r.status_code for r in answers)
    assert statuses.count(401) == 5 and statuses.count(429) == 35  # only the burst's passwords were checked


async def test_logout_revokes_the_cookie(console: RunningHub, clients: list[httpx.AsyncClient]) -> None:
    s = await sign_in(console, clients)
    kept = dict(s.http.cookies)
    r = await s.http.post("/admin/api/logout", headers={"x-csrf-token": s.csrf})
    assert r.status_code == 200 and "Max-Age=0" in r.headers["set-cookie"]
    async with http_client(base_url=console.http, cookies=kept) as replay:  # a copy kept by a thief
        assert (await replay.get("/admin/api/nodes")).status_code == 401


# ---------------------------------------------------------------- CSRF and read-only


async def test_posts_need_the_csrf_token_and_a_same_origin(
    console: RunningHub, clients: list[httpx.AsyncClient]
) -> None:
    s = await sign_in(console, clients)
    body = {"action": "publish", "channel": "news", "data": 1}
    r = await s.http.post("/admin/api/action", json=body)
    assert (r.status_code, r.json()) == (403, {"error": "missing or wrong CSRF token"})
    r = await s.http.post("/admin/api/action", json=body, headers={"x-csrf-token": "forged"})
    assert r.status_code == 403
    headers = {"x-csrf-token": s.csrf, "origin": "http://evil.example"}
    r = await s.http.post("/admin/api/action", json=body, headers=headers)
    assert (r.status_code, r.json()) == (403, {"error": "cross-origin request refused"})
    headers["origin"] = console.http
    assert (await s.http.post("/admin/api/action", json=body, headers=headers)).status_code == 200


async def test_read_only_sessions_read_but_every_action_is_refused_and_audited(
    console: RunningHub, clients: list[httpx.AsyncClient], raw_client: Any
) -> None:
    ro = await sign_in(console, clients, READONLY)
    assert (await ro.get("session")).json()["role"] == "readonly"
    assert (await ro.get("nodes")).status_code == 200
    bob = await raw_client(console, connect={"token": token("bob")})
    for action, fields in [
        ("publish", {"channel": "news", "data": 1}),
        ("purge", {"channel": "news"}),
        ("disconnect", {"user": "bob"}),
        ("unsubscribe", {"user": "bob", "channel": "news"}),
        ("refresh", {"user": "bob"}),
    ]:
        r = await ro.act(action, **fields)
        assert (r.status_code, r.json()) == (403, {"error": "read-only: this session cannot act"}), action
    assert await bob.command("presence", {"channel": "x"})  # still connected
    admin = await sign_in(console, clients)
    results = [(e["role"], e["action"], e["result"]) for e in (await admin.get("audit")).json()["entries"]]
    assert ("readonly", "disconnect", "refused: read-only") in results
    assert len([r for r in results if r[2] == "refused: read-only"]) == 5


async def test_every_read_needs_a_session(console: RunningHub) -> None:
    async with http_client(base_url=console.http) as http:
        for path in (
            "nodes",
            "channels",
            "channel?channel=a",
            "history?channel=a",
            "user?user=a",
            "documents",
            "document?name=a",
            "audit",
            "events",
        ):
            assert (await http.get(f"/admin/api/{path}")).status_code == 401, path
        assert (await http.post("/admin/api/action", json={"action": "publish"})).status_code == 401
        assert (await http.post("/admin/api/logout")).status_code == 401


# ---------------------------------------------------------------- shapes and actions


async def test_channel_user_and_actions(
    console: RunningHub, clients: list[httpx.AsyncClient], raw_client: Any
) -> None:
    s = await sign_in(console, clients)
    alice = await raw_client(
        console, connect={"token": token("alice", info={"name": "Alice"}), "name": "js", "version": "5.3.0"}
    )
    assert "subscribe" in await alice.command("subscribe", {"channel": "chat:room"})

    channels = (await s.get("channels", pattern="chat:*")).json()
    assert channels == {"channels": [{"channel": "chat:room", "num_clients": 1}], "total": 1}
    channel = (await s.get("channel", channel="chat:room")).json()
    assert channel["namespace"] == "chat" and channel["options"]["presence"] is True
    assert channel["presence_stats"] == {"num_clients": 1, "num_users": 1}

    r = await s.act("publish", channel="chat:room", data={"text": "from the console"})
    assert r.json() == {"result": {"offset": 1, "epoch": channel["stream"]["epoch"]}}
    assert (await alice.push("pub"))["pub"]["data"] == {"text": "from the console"}
    history = (await s.get("history", channel="chat:room")).json()
    assert [p["data"] for p in history["publications"]] == [{"text": "from the console"}]
    for n in range(2, 6):
        await s.act("publish", channel="chat:room", data=n)
    page = (await s.get("history", channel="chat:room", limit=2)).json()["publications"]
    assert [p["offset"] for p in page] == [5, 4]
    older = await s.get("history", channel="chat:room", limit=2, before=4, epoch=history["epoch"])
    assert [p["offset"] for p in older.json()["publications"]] == [3, 2]
    for n in range(2, 6):
        assert (await alice.push("pub"))["pub"]["data"] == n

    user = (await s.get("user", user="alice")).json()
    (conn,) = user["connections"]
    assert conn["sdk"] == {"name": "js", "version": "5.3.0"}
    assert (conn["transport"], conn["protocol"], conn["subscriptions"]) == (
        "websocket",
        "json",
        ["chat:room"],
    )
    assert conn["node"] == console.sb.node.id and conn["conn_info"] == {"name": "Alice"}

    assert (await s.act("unsubscribe", user="alice", channel="chat:room")).status_code == 200
    assert (await alice.push("unsubscribe"))["channel"] == "chat:room"
    assert (await s.act("purge", channel="chat:room")).status_code == 200
    assert (await s.get("history", channel="chat:room")).json()["publications"] == []
    r = await s.act(
        "disconnect", user="alice", client=conn["client"], disconnect={"code": 4501, "reason": "bye"}
    )
    assert r.status_code == 200
    assert await alice.closed() == (4501, "bye")

    entries = (await s.get("audit", limit=10)).json()["entries"]
    assert [e["action"] for e in entries][:4] == ["disconnect", "purge", "unsubscribe", "publish"]
    assert entries[0]["result"] == "ok" and json.loads(entries[0]["target"])["client"] == conn["client"]
    assert entries[0]["remote"] == "127.0.0.1" and entries[0]["role"] == "admin"


async def test_expire_token_makes_the_client_refresh(
    console: RunningHub, clients: list[httpx.AsyncClient], raw_client: Any
) -> None:
    s = await sign_in(console, clients)
    carol = await raw_client(console, connect={"token": token("carol")})
    assert (await s.act("refresh", user="carol")).status_code == 200
    assert (await carol.closed())[0] == 3005  # token expired: the SDK refreshes and reconnects


async def test_api_errors_come_back_as_the_apis(
    console: RunningHub, clients: list[httpx.AsyncClient]
) -> None:
    s = await sign_in(console, clients)
    r = await s.act("publish", channel="nosuchns:x", data=1)
    assert (r.status_code, r.json()) == (400, {"error": "unknown channel", "code": 102})
    r = await s.act("disconnect", user="a", disconnect={"code": 1000})
    assert (r.status_code, r.json()["code"]) == (400, 107)
    r = await s.act("launch", user="a")
    assert r.status_code == 400 and "action must be one of" in r.json()["error"]


async def test_documents_and_their_connections(console: RunningHub, clients: list[httpx.AsyncClient]) -> None:
    from pycrdt import Text

    async with console.sb.documents.open("notes") as doc:
        with doc.transaction():
            doc.get("body", type=Text).insert(0, "hello")
    room = console.sb.documents.rooms.rooms[("", "notes")]
    await asyncio.wait_for(console.sb.documents.rooms.journal.flush(), TIMEOUT)
    s = await sign_in(console, clients)
    docs = (await s.get("documents")).json()
    assert docs["total"] == 1 and docs["documents"][0]["name"] == "notes"
    assert docs["documents"][0]["stored_at"] > 0 and docs["documents"][0]["size"] == room.size
    one = (await s.get("document", name="notes", content="1")).json()
    assert one["content"] == {"body": "hello"} and one["open_on"][0]["node"] == console.sb.node.id


async def test_a_documents_editors_and_their_cursors(
    make_hub: Any, tmp_path: Any, clients: list[httpx.AsyncClient], yconnect: Any
) -> None:
    from hub.auth import mint_token
    from tests.conftest import SECRET

    hub = await make_hub(admin_password=ADMIN, data_dir=str(tmp_path), doc_token_access="write")
    cursor = {"user": {"name": "Ann", "color": "#f80"}, "cursor": {"anchor": 3, "head": 7}}
    ann = await yconnect(hub, "spec", token=mint_token(SECRET, "ann"), awareness=cursor)
    await ann.until(lambda: len(hub.sb.documents.rooms.rooms[("", "spec")].awareness) == 1)
    s = await sign_in(hub, clients)
    (listed,) = (await s.get("documents")).json()["documents"]
    assert (listed["name"], listed["connections"], listed["awareness"]) == ("spec", 1, 1)
    (holder,) = (await s.get("document", name="spec")).json()["open_on"]
    (peer,) = holder["peers"]
    assert (peer["user"], peer["write"], peer["node"]) == ("ann", True, hub.sb.node.id)
    assert [a["state"] for a in peer["awareness"]] == [cursor]


# ---------------------------------------------------------------- the event stream


class Events:
    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next(self, kind: str) -> Any:
        async with asyncio.timeout(TIMEOUT):
            current = ""
            async for line in self.lines:
                if line.startswith("event: "):
                    current = line[7:]
                elif line.startswith("data: ") and current == kind:
                    return orjson.loads(line[6:])
        raise AssertionError(f"the stream ended before a {kind} event")


async def test_the_stream_carries_nodes_presence_diffs_and_the_tail(
    console: RunningHub, clients: list[httpx.AsyncClient], raw_client: Any
) -> None:
    s = await sign_in(console, clients)
    async with s.http.stream("GET", "/admin/api/events", params={"channel": "chat:room"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = Events(r)
        assert (await events.next("presence"))["state"] == {}
        nodes = await events.next("nodes")
        assert [n["name"] for n in nodes["nodes"]] == [console.sb.node.id] and "rss" in nodes["nodes"][0][
            "process"
        ]
        dan = await raw_client(console, connect={"token": token("dan")})
        await dan.command("subscribe", {"channel": "chat:room"})
        diff = await events.next("presence_diff")
        assert list(diff["joins"]) == ["dan"] and diff["leaves"] == {} and diff["num_clients"] == 1
        await dan.command("publish", {"channel": "chat:room", "data": {"n": 1}})
        pub = await events.next("pub")
        assert (pub["data"], pub["offset"], pub["info"]["user"]) == ({"n": 1}, 1, "dan")
        await dan.command("unsubscribe", {"channel": "chat:room"})
        diff = await events.next("presence_diff")
        assert list(diff["leaves"]) == ["dan"] and diff["num_clients"] == 0
    # The stream's tap is gone with it: the node no longer receives the channel for the console.
    async with asyncio.timeout(TIMEOUT):
        # The untap runs in the stream's request task once the server sees the close; nothing to wait on.
        while ("", "chat:room") in console.sb.node.taps:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_streams_are_bounded_per_node_and_one_per_session(
    make_hub: Any, tmp_path: Any, clients: list[httpx.AsyncClient]
) -> None:
    hub = await make_hub(admin_password=ADMIN, admin_max_streams=1, data_dir=str(tmp_path))
    one, two = await sign_in(hub, clients), await sign_in(hub, clients)
    async with one.http.stream("GET", "/admin/api/events") as first:
        events = Events(first)
        await events.next("nodes")
        assert (await two.get("events")).status_code == 503
        async with one.http.stream("GET", "/admin/api/events") as again:  # the same session: replaces
            assert await events.next("replaced") == {}
            await Events(again).next("nodes")


# ---------------------------------------------------------------- garbage


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"action": st.sampled_from([*ACTIONS, "x"])},
            optional={
                "tenant": st.none() | st.integers() | st.text(max_size=300),
                "user": st.none() | st.integers() | st.text(max_size=30),
                "channel": st.none() | st.integers() | st.text(max_size=300),
                "data": st.none() | st.text(max_size=20),
                "disconnect": st.none() | st.integers() | st.dictionaries(st.text(max_size=6), st.integers()),
                "ids": st.none() | st.integers() | st.lists(st.integers() | st.text(max_size=3), max_size=3),
                "all": st.none() | st.booleans() | st.text(max_size=4),
                "destination": st.none() | st.integers() | st.text(max_size=140),
            },
        ).map(lambda v: json.dumps(v).encode()),
    )
)
async def test_garbage_actions_get_a_clear_4xx(
    console: RunningHub, clients: list[httpx.AsyncClient], body: bytes
) -> None:
    if not clients:
        await sign_in(console, clients)
    s = Session(clients[0], "")
    s.csrf = (await s.get("session")).json()["csrf"]
    r = await s.http.post("/admin/api/action", content=body, headers={"x-csrf-token": s.csrf})
    assert r.status_code in (200, 400), (body, r.status_code, r.text)
    assert "error" in r.json() or "result" in r.json()


async def test_garbage_parameters_and_bodies(console: RunningHub, clients: list[httpx.AsyncClient]) -> None:
    s = await sign_in(console, clients)
    for path, params in [
        ("channel", {"channel": ""}),
        ("channel", {"channel": "a" * 300}),
        ("channel", {"channel": "bad name"}),
        ("channel", {"channel": "nosuchns:x"}),
        ("history", {"channel": "chat:x", "limit": "lots"}),
        ("history", {"channel": "chat:x", "limit": "100000"}),
        ("history", {"channel": "nohist:x"}),
        ("history", {"channel": "chat:x", "before": "3"}),
        ("history", {"channel": "chat:x", "before": "3", "epoch": "not-the-epoch"}),
        ("channels", {"pattern": "[unclosed"}),
        ("user", {"user": ""}),
        ("user", {"user": "a\x00b"}),
        ("audit", {"limit": "-1"}),
        ("events", {"channel": "bad name"}),
    ]:
        r = await s.get(path, **params)
        assert r.status_code == 400 and r.json()["error"], (path, params, r.text)
    huge = b'{"action": "publish", "data": "' + b"x" * 70000 + b'"}'
    r = await s.http.post("/admin/api/action", content=huge, headers={"x-csrf-token": s.csrf})
    assert (r.status_code, r.json()) == (400, {"error": "body larger than 65536 bytes"})
    async with http_client(base_url=console.http) as http:
        for body in (b"", b"[]", b"not json", b'{"password": 5}', b'{"password": "' + b"p" * 5000 + b'"}'):
            r = await http.post("/admin/api/login", content=body)
            assert r.status_code in (400, 401), (body[:20], r.status_code)
    async with http_client(base_url=console.http, cookies={"sb_admin": "x" * 5000}) as http:
        assert (await http.get("/admin/api/nodes")).status_code == 401
