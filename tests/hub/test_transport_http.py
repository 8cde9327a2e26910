"""The HTTP streaming transports over a real server: uni_http_stream, uni_sse (with SSE resume), and the
bidirectional emulation (http_stream / sse + /emulation) the official JS SDK uses behind WebSocket-killing
proxies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from hub import sse
from tests.conftest import TIMEOUT, RunningHub, http_client, token
from tests.fuzz.strategies import ErrorLog


@dataclass
class Event:
    data: str = ""
    id: str | None = None
    event: str = ""

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Stream:
    """One open streaming response, read line by line in the background."""

    response: httpx.Response
    lines: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    async def line(self) -> str | None:
        """The next line; None when the server ended the response."""
        return await asyncio.wait_for(self.lines.get(), TIMEOUT)

    async def event(self, *, skip_pings: bool = True) -> Event | None:
        """The next SSE event (comments are skipped); None at the end of the stream."""
        ev = Event()
        seen = False
        while True:
            line = await self.line()
            if line is None:
                return None
            if line == "":
                if seen:
                    if skip_pings and ev.data == "{}":
                        ev, seen = Event(), False
                        continue
                    return ev
                continue
            if line.startswith(":") or line.startswith("retry:"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            seen = True
            if name == "data":
                ev.data = value
            elif name == "id":
                ev.id = value
            elif name == "event":
                ev.event = value

    async def message(self) -> Any:
        """The next non-ping JSON line (HTTP streams); None at the end."""
        while True:
            line = await self.line()
            if line is None:
                return None
            if line and line != "{}":
                return json.loads(line)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(timeout=TIMEOUT) as client:
        yield client


@contextlib.asynccontextmanager
async def open_stream(http: httpx.AsyncClient, method: str, url: str, **kw: Any) -> AsyncIterator[Stream]:
    async with http.stream(method, url, **kw) as response:
        stream = Stream(response)

        async def pump() -> None:
            try:
                async for line in response.aiter_lines():
                    stream.lines.put_nowait(line)
            except (httpx.HTTPError, asyncio.CancelledError):
                pass
            finally:
                stream.lines.put_nowait(None)

        stream.task = asyncio.get_running_loop().create_task(pump())
        try:
            yield stream
        finally:
            stream.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream.task


def cf_connect(params: dict[str, Any]) -> dict[str, str]:
    return {"cf_connect": json.dumps(params)}


# ---------------------------------------------------------------- uni_http_stream


async def test_uni_http_stream_connects_and_receives(hub: RunningHub, http: httpx.AsyncClient) -> None:
    body = {"token": token("alice", channels=["chat:room"])}
    async with open_stream(http, "POST", hub.http + "/connection/uni_http_stream", json=body) as stream:
        assert stream.response.status_code == 200
        first = await stream.message()
        connect = first["connect"]
        assert connect["client"] and connect["subs"]["chat:room"]["recoverable"] is True
        assert "pong" not in connect and connect["session"]
        await hub.sb.publish("chat:room", {"n": 1})
        push = await stream.message()
        assert push == {"channel": "chat:room", "pub": {"data": {"n": 1}, "offset": 1}}
        assert hub.sb.node.metrics.deliveries >= 1


async def test_uni_stream_bad_token_gets_disconnect_push(hub: RunningHub, http: httpx.AsyncClient) -> None:
    async with open_stream(
        http, "POST", hub.http + "/connection/uni_http_stream", json={"token": "not-a-token"}
    ) as stream:
        assert await stream.message() == {"disconnect": {"code": 3500, "reason": "invalid token"}}
        assert await stream.message() is None  # and the response ends


async def test_uni_stream_server_disconnect_ends_stream(hub: RunningHub, http: httpx.AsyncClient) -> None:
    async with open_stream(
        http, "POST", hub.http + "/connection/uni_http_stream", json={"token": token("bob")}
    ) as stream:
        assert "connect" in await stream.message()
        assert hub.sb.disconnect("bob") == 1
        assert await stream.message() == {"disconnect": {"code": 3503, "reason": "force disconnect"}}
        assert await stream.message() is None
    assert not hub.sb.node.sessions or all(c.user != "bob" for c in hub.sb.node.sessions)


@pytest.mark.parametrize(
    ("method", "kw", "status"),
    [
        ("POST", {"content": b"[1, 2]"}, 400),
        ("POST", {"content": b"{not json"}, 400),
        ("POST", {"content": b"x" * 70_000}, 413),
        ("PUT", {"content": b"{}"}, 405),
    ],
)
async def test_uni_http_stream_bad_requests(
    hub: RunningHub, http: httpx.AsyncClient, method: str, kw: dict[str, Any], status: int, caplog: Any
) -> None:
    caplog.set_level(logging.INFO)
    response = await http.request(method, hub.http + "/connection/uni_http_stream", **kw)
    assert response.status_code == status
    assert any("uni_http_stream" in r.getMessage() for r in caplog.records)
    assert hub.sb.node.sessions == set()


# ---------------------------------------------------------------- uni_sse and SSE resume


async def test_uni_sse_missing_or_bad_cf_connect(hub: RunningHub, http: httpx.AsyncClient) -> None:
    assert (await http.get(hub.http + "/connection/uni_sse")).status_code == 400
    bad = await http.get(hub.http + "/connection/uni_sse", params={"cf_connect": "{oops"})
    assert bad.status_code == 400


async def test_uni_sse_resumes_exactly_the_missed_events(hub: RunningHub, http: httpx.AsyncClient) -> None:
    url = hub.http + "/connection/uni_sse"
    params = cf_connect({"token": token("alice", channels=["chat:a", "chat:b"])})
    async with open_stream(http, "GET", url, params=params) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        first = await stream.line()
        assert first is not None and first.startswith("retry: ")
        connect = await stream.event()
        assert (
            connect is not None
            and connect.id
            and set(connect.json()["connect"]["subs"]) == {"chat:a", "chat:b"}
        )
        for i in range(3):
            await hub.sb.publish("chat:a" if i % 2 == 0 else "chat:b", {"i": i})
        seen = [await stream.event() for _ in range(3)]
        assert [e.json()["pub"]["data"]["i"] for e in seen if e] == [0, 1, 2]
        ids = [e.id for e in seen if e]
        assert len(set(ids)) == 3  # every event moves the resume point
        last_id = ids[-1]
    # Dropped. Meanwhile both channels move on.
    for i in range(3, 8):
        await hub.sb.publish("chat:a" if i % 2 == 0 else "chat:b", {"i": i})
    headers = {"Last-Event-ID": last_id or ""}
    async with open_stream(http, "GET", url, params=params, headers=headers) as stream:
        connect = await stream.event()
        assert connect is not None
        subs = connect.json()["connect"]["subs"]
        assert subs["chat:a"]["recovered"] is True and subs["chat:b"]["recovered"] is True
        assert "publications" not in subs["chat:a"]  # they come as events, below
        missed = [await stream.event() for _ in range(5)]
        got = sorted((e.json()["channel"], e.json()["pub"]["data"]["i"]) for e in missed if e)
        assert got == [("chat:a", 4), ("chat:a", 6), ("chat:b", 3), ("chat:b", 5), ("chat:b", 7)]
        for ch in ("chat:a", "chat:b"):  # in order per channel
            offsets = [e.json()["pub"]["offset"] for e in missed if e and e.json()["channel"] == ch]
            assert offsets == sorted(offsets)
        # and then live, with no duplicate of the recovered ones
        await hub.sb.publish("chat:a", {"i": 8})
        live = await stream.event()
        assert live is not None and live.json()["pub"]["data"] == {"i": 8}
        assert live.id is not None
        resumes_at = sse.decode_resume_id(live.id).position("chat:a")
        assert resumes_at is not None and resumes_at[0] == live.json()["pub"]["offset"]


async def test_uni_sse_unrecoverable_resume_is_explicit(hub: RunningHub, http: httpx.AsyncClient) -> None:
    url = hub.http + "/connection/uni_sse"
    params = cf_connect({"token": token("alice", channels=["chat:gone"])})
    await hub.sb.publish("chat:gone", {"i": 0})
    stale = sse.encode_resume_id({"chat:gone": (0, "an-epoch-that-no-longer-exists")}).decode()
    async with open_stream(http, "GET", url, params=params, headers={"Last-Event-ID": stale}) as stream:
        connect = await stream.event()
        assert connect is not None
        assert connect.json()["connect"]["subs"]["chat:gone"]["recovered"] is False
        notice = await stream.event()
        assert notice is not None and notice.event == "unrecovered"
        assert notice.json()["channel"] == "chat:gone"
        await hub.sb.publish("chat:gone", {"i": 1})
        live = await stream.event()
        assert live is not None and live.json()["pub"]["data"] == {"i": 1}


async def test_uni_sse_bad_last_event_id_reports_unrecovered(
    hub: RunningHub, http: httpx.AsyncClient, caplog: Any
) -> None:
    caplog.set_level(logging.INFO)
    params = cf_connect({"token": token("alice", channels=["chat:x"])})
    headers = {"Last-Event-ID": "%%%not-ours"}
    async with open_stream(
        http, "GET", hub.http + "/connection/uni_sse", params=params, headers=headers
    ) as s:
        connect = await s.event()
        assert connect is not None and connect.json()["connect"]["subs"]["chat:x"]["recovered"] is False
        notice = await s.event()  # not a silent fresh start: the client is told its gap is unknown
        assert notice is not None and notice.event == "unrecovered" and notice.json()["channel"] == "chat:x"
    assert any("Last-Event-ID" in r.getMessage() for r in caplog.records)


async def test_uni_sse_resume_with_many_long_channel_names(hub: RunningHub, http: httpx.AsyncClient) -> None:
    channels = [f"chat:{i:03d}" + "x" * 240 for i in range(70)]
    params = cf_connect({"token": token("alice", channels=channels)})
    url = hub.http + "/connection/uni_sse"
    async with open_stream(http, "GET", url, params=params) as stream:
        assert await stream.event() is not None
        await hub.sb.publish(channels[0], "before")
        before = await stream.event()
        assert before is not None and before.id and len(before.id) <= sse.MAX_RESUME_ID
    await hub.sb.publish(channels[0], "missed")
    async with open_stream(http, "GET", url, params=params, headers={"Last-Event-ID": before.id}) as stream:
        assert await stream.event() is not None
        missed = await stream.event()
        assert missed is not None and missed.json()["pub"]["data"] == "missed"


async def test_uni_sse_resume_ids_stay_within_what_the_hub_takes_back(
    make_hub: Any, http: httpx.AsyncClient
) -> None:
    """(Issue 10.) Every recoverable channel of a stream is in every event's id: with the names in it, 600
    channels (the server API subscribes the user to them) made an id of ~220 KB, past the 128 KiB the hub
    accepted back, so the resume reported every channel unrecovered. Now an id is at most MAX_RESUME_ID
    (8000 bytes, within any proxy's header buffer); what does not fit is left out and the id says so, and
    the channels it names, the connect's first, resume exactly."""
    hub = await make_hub(client_channel_limit=1000)
    params = cf_connect({"token": token("alice", channels=["chat:a"])})
    url = hub.http + "/connection/uni_sse"
    async with open_stream(http, "GET", url, params=params) as stream:
        assert await stream.event() is not None
        for i in range(600):
            assert await hub.sb.subscribe("alice", f"chat:{i:03d}" + "x" * 245) == 1
            await stream.event()  # its subscribe push
        await hub.sb.publish("chat:a", "before")
        before = await stream.event()
        assert before is not None and before.json()["pub"]["data"] == "before"
        assert before.id and len(before.id) <= sse.MAX_RESUME_ID
        assert not sse.decode_resume_id(before.id).complete
    await hub.sb.publish("chat:a", "missed")
    async with open_stream(http, "GET", url, params=params, headers={"Last-Event-ID": before.id}) as stream:
        connect = await stream.event()
        assert connect is not None and connect.json()["connect"]["subs"]["chat:a"]["recovered"] is True
        missed = await stream.event()
        assert missed is not None and missed.json()["pub"]["data"] == "missed"


async def test_uni_sse_heartbeat_comments(make_hub: Any, http: httpx.AsyncClient) -> None:
    hub = await make_hub(sse_heartbeat_interval=0.05)
    params = cf_connect({"token": token("alice")})
    async with open_stream(http, "GET", hub.http + "/connection/uni_sse", params=params) as stream:
        while (line := await stream.line()) != ":":
            assert line is not None


# ---------------------------------------------------------------- bidirectional emulation


async def _emulate(http: httpx.AsyncClient, hub: RunningHub, session: str, node: str, *commands: Any) -> int:
    data = "\n".join(json.dumps(c) for c in commands)
    response = await http.post(hub.http + "/emulation", json={"session": session, "node": node, "data": data})
    return response.status_code


@pytest.mark.parametrize("kind", ["http_stream", "sse"])
async def test_emulation_subscribe_publish_rpc_presence(
    make_hub: Any, http: httpx.AsyncClient, kind: str
) -> None:
    hub = await make_hub()

    @hub.sb.rpc("add")
    async def add(ctx: Any) -> Any:
        return {"sum": ctx.data["a"] + ctx.data["b"]}

    connect = json.dumps({"id": 1, "connect": {"token": token("carol")}})
    url = hub.http + "/connection/" + kind
    if kind == "sse":
        opened = open_stream(http, "GET", url, params={"cf_connect": connect})
    else:
        opened = open_stream(http, "POST", url, content=connect.encode())
    async with opened as stream:
        read = stream.event if kind == "sse" else stream.message

        async def next_json() -> Any:
            item = await read()
            assert item is not None
            return item.json() if isinstance(item, Event) else item

        reply = await next_json()
        result = reply["connect"]
        session, node = result["session"], result["node"]
        assert reply["id"] == 1 and result["pong"] is True
        assert (
            await _emulate(http, hub, session, node, {"id": 2, "subscribe": {"channel": "chat:emu"}}) == 204
        )
        assert (await next_json())["id"] == 2
        await _emulate(
            http, hub, session, node, {"id": 3, "publish": {"channel": "chat:emu", "data": {"hi": 1}}}
        )
        got = [await next_json(), await next_json()]
        assert {"id": 3, "publish": {}} in got
        pub = next(m["push"]["pub"] for m in got if "push" in m)
        assert (pub["data"], pub["offset"], pub["info"]["user"]) == ({"hi": 1}, 1, "carol")
        await _emulate(
            http, hub, session, node, {"id": 4, "rpc": {"method": "add", "data": {"a": 2, "b": 3}}}
        )
        assert await next_json() == {"id": 4, "rpc": {"data": {"sum": 5}}}
        await _emulate(http, hub, session, node, {"id": 5, "presence": {"channel": "chat:emu"}})
        presence = (await next_json())["presence"]["presence"]
        assert [p["user"] for p in presence.values()] == ["carol"]
        # a pong over emulation keeps the connection alive like any command
        assert await _emulate(http, hub, session, node, {}) == 204
    assert session not in hub.sb.node.streams or await _gone(hub, session)


async def _gone(hub: RunningHub, session: str) -> bool:
    for _ in range(int(TIMEOUT / 0.01)):
        if session not in hub.sb.node.streams:
            return True
        await asyncio.sleep(0.01)  # polling the server's table, not timing the protocol
    return False


async def test_emulation_rejects_unknown_and_malformed(hub: RunningHub, http: httpx.AsyncClient) -> None:
    node = hub.sb.node.id
    assert (
        await http.post(hub.http + "/emulation", json={"session": "nope", "node": node, "data": "{}"})
    ).status_code == 404
    assert (
        await http.post(hub.http + "/emulation", json={"session": "x", "node": "other", "data": "{}"})
    ).status_code == 404
    assert (await http.post(hub.http + "/emulation", content=b"{bad")).status_code == 400
    assert (
        await http.post(hub.http + "/emulation", json={"session": 1, "node": node, "data": "{}"})
    ).status_code == 400
    assert (await http.get(hub.http + "/emulation")).status_code == 405


async def test_emulation_garbage_command_closes_that_session_only(
    hub: RunningHub, http: httpx.AsyncClient
) -> None:
    connect = json.dumps({"id": 1, "connect": {"token": token("dave")}}).encode()
    url = hub.http + "/connection/http_stream"
    async with (
        open_stream(http, "POST", url, content=connect) as bad,
        open_stream(http, "POST", url, content=connect) as good,
    ):
        r1, r2 = (await bad.message())["connect"], (await good.message())["connect"]
        assert await _emulate_raw(http, hub, r1["session"], r1["node"], "{garbage") == 204
        assert await bad.message() == {"push": {"disconnect": {"code": 3501, "reason": "bad request"}}}
        assert await bad.message() is None
        await _emulate(http, hub, r2["session"], r2["node"], {"id": 2, "subscribe": {"channel": "chat:ok"}})
        assert (await good.message())["id"] == 2


async def _emulate_raw(http: httpx.AsyncClient, hub: RunningHub, session: str, node: str, data: str) -> int:
    response = await http.post(
        hub.http + "/emulation", content=orjson.dumps({"session": session, "node": node, "data": data})
    )
    return response.status_code


# ---------------------------------------------------------------- backpressure on a real socket


async def _raw_stream(hub: RunningHub, channel: str) -> tuple[Any, Any]:
    """A uni_http_stream over a raw socket with a tiny receive buffer, so the server's sends must wait as
    soon as the test stops reading."""
    import socket

    body = orjson.dumps({"token": token("alice", channels=[channel])})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", hub.port))
    head = b"POST /connection/uni_http_stream HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    await loop.sock_sendall(sock, head + body)
    node = hub.sb.node
    async with asyncio.timeout(TIMEOUT):
        while not node.registry.fanout:  # noqa: ASYNC110 - the server's table: no event to wait on
            await asyncio.sleep(0.01)  # polling, not timing the protocol
    return sock, next(iter(node.sessions))


async def test_a_reader_that_pauses_gets_everything_when_it_reads_again(hub: RunningHub) -> None:
    node = hub.sb.node
    sock, client = await _raw_stream(hub, "news")
    loop = asyncio.get_running_loop()
    n = 0
    while n < 1000 and client.transport._pending is None:  # until a send has to wait for the reader
        await node.publish("news", {"n": n, "pad": "y" * 8000})
        n += 1
        await asyncio.sleep(0)
    assert client.transport._pending is not None
    for _ in range(10):  # ~80 KB more, far under the 1 MiB slow-consumer bound
        await node.publish("news", {"n": n, "pad": "y" * 8000})
        n += 1
    data = b""
    async with asyncio.timeout(TIMEOUT):
        while data.count(b'"pub"') < n:
            chunk = await loop.sock_recv(sock, 65536)
            assert chunk, "the stream ended"
            data += chunk
    sock.close()
    assert data.count(b'"pub"') == n and client in node.sessions


async def test_a_stream_reader_that_stops_is_closed_as_slow_and_let_go(make_hub: Any) -> None:
    hub = await make_hub(client_queue_max_size=64 * 1024)
    node = hub.sb.node
    sock, client = await _raw_stream(hub, "news")
    for _ in range(400):
        await node.publish("news", {"x": "y" * 8000})
        await asyncio.sleep(0)
        if client._closing:
            break
    assert client._closing and node.metrics.slow_disconnects == 1
    async with asyncio.timeout(TIMEOUT):  # the peer holds the TCP connection open and never reads
        while client in node.sessions or node.registry.fanout:  # noqa: ASYNC110 - the server's tables
            await asyncio.sleep(0.01)
    assert client.id not in node.registry.clients
    sock.close()


async def test_a_stream_cut_as_slow_by_one_burst_ends_its_response(make_hub: Any) -> None:
    """A burst past ``client_queue_max_size`` within one tick cuts a stream (3008) before any of its sends had
    to wait for the reader. The old code then neither ended the response nor reset the connection: uvicorn
    logged "ASGI callable returned without completing response" at ERROR for each such stream (found by
    tests/hub/test_attack_soak.py: 60 KB publications in batches). Now the connection is reset, as for a
    stream cut while a send waits: no ERROR line, and the peer sees the connection end."""
    hub = await make_hub(client_queue_max_size=64 * 1024)
    errors = ErrorLog()
    logging.getLogger("uvicorn.error").addHandler(errors)
    try:
        sock, client = await _raw_stream(hub, "news")
        for _ in range(4):  # 120 KB in one tick: nothing was written yet, nothing waits
            await hub.sb.node.publish("news", {"pad": "y" * 30_000})
        assert client._closing and client.transport._pending is None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(TIMEOUT):  # to the end of the connection: the response is over
                while await loop.sock_recv(sock, 65536):
                    pass
        sock.close()
        assert errors.take() == []
        assert hub.sb.node.metrics.slow_disconnects == 1
    finally:
        logging.getLogger("uvicorn.error").removeHandler(errors)
