"""Every attack of issue 10 at once, against one running hub, for a bounded time.

``python -m tests.attacker --url http://127.0.0.1:8000 --api-key K --secret S --seconds 60`` runs each
attack below in rounds, all of them at the same time, until the time is up. It prints a line ``attacking``
when the attacks begin, then a JSON object: for each attack, how often each outcome came back (``close
3008``, ``error 103``, ``http 413``, ``step2``...). Used by tests/hub/test_attack_soak.py (a second process
beside the normal traffic) and bench/attack_soak.py.

The attacker holds a valid token of its own (it signs with ``--secret``: a registered user turned hostile)
and the server API key (``--api-key``: a leaked key, or a backend that misbehaves); what it does with them
is what the issue lists:

- ``sync_step1_flood``: hundreds of y-sync step 1 frames in one write on a large document, behind an update;
- ``awareness``: an awareness state over ``doc_max_awareness_state_size``, and a crowd of states within it;
- ``doc_write_flood``: document updates as fast as the socket takes them;
- ``slow_readers``: WebSocket subscribers and ``uni_sse`` streams that never read, on a feed of 60 KB
  publications it publishes itself (channel ``nohist:attack-feed``: no history to fill);
- ``connection_flood``: more client and document connections of one user than the per-user limits;
- ``unfinished_requests``: silent connections and headers trickled a byte at a time, more than
  ``http_max_unfinished_requests``;
- ``parallel_batches``: ``/api/batch`` bodies of thousands of publishes with ``parallel: true``;
- ``fresh_history``: history reads of names nobody published on (server API and client);
- ``malformed``: broken frames (tests/hub/test_bad_input.py's cases), a frame over
  ``client_max_message_size``, text that is not UTF-8, unknown methods and wrong types;
- ``command_flood``: more commands at once than ``client_command_rate_limit`` allows;
- ``bad_tokens``: garbage, foreign, expired tokens and tokens with impossible time claims, on both protocols;
- ``forbidden``: private and user-limited channels, unknown namespaces;
- ``api_garbage``: the server API without a key, with bodies that are not JSON, too deep, too large,
  not UTF-8, unknown methods.

Each round is bounded (ROUND_TIMEOUT); an exception ends the round and is counted as ``exception <Type>``
(a refusal the attacker did not expect, e.g. a reset connection, is an outcome too, never a crash). The
pieces shared with the attack tests (``unread_sse_streams``, ``trickle``) live here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import struct
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import orjson
import websockets
from websockets.frames import Frame, Opcode

from hub.auth import mint_token
from sync import protocol
from sync.protocol import AwarenessEntry
from tests.conftest import TIMEOUT, RawClient, http_client
from tests.fuzz.strategies import BAD_UTF8, nested_text
from tests.hub.test_bad_input import CLOSE_CASES, ERROR_CASES
from tests.hub.test_token_safety import BAD_TIMES
from tests.hub.ydocs import RawDocSocket, flood, text_update

ROUND_TIMEOUT = 3 * TIMEOUT
"""Most one round of an attack may take (it counts ``timeout`` past it)."""
LAST_ROUND_GRACE = 2.0
"""Seconds past the deadline the last round of an attack may take (it counts ``cut short`` past them)."""
FEED = "nohist:attack-feed"
BIG_DOCUMENT = 1_000_000
"""Characters of the document the sync step 1 flood asks for (each step 2 is a diff of that size)."""

STARTED = "attacking"
"""The line ``python -m tests.attacker`` prints when its attacks begin (the JSON of outcomes follows it)."""

Outcomes = Counter[str]


@dataclass
class Target:
    """The hub under attack and what the attacker holds."""

    http: str
    api_key: str
    secret: str
    connections: int = 24
    """Connections of one user the connection flood opens (over the per-user limits it tests)."""
    unfinished: int = 80
    """Silent connections the unfinished-request flood opens (over ``http_max_unfinished_requests``)."""
    rng: random.Random = field(default_factory=random.Random)

    @property
    def ws(self) -> str:
        return self.http.replace("http", "ws", 1) + "/connection/websocket"

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.http).port or 80

    def doc_url(self, name: str, user: str | None = None) -> str:
        url = self.http.replace("http", "ws", 1) + "/doc/" + urllib.parse.quote(name)
        return url if user is None else f"{url}?token={self.token(user)}"

    def token(self, user: str, **kw: Any) -> str:
        return mint_token(self.secret, user, ttl=3600, **kw)

    async def api(self, http: httpx.AsyncClient, method: str, body: Any) -> httpx.Response:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = {"X-API-Key": self.api_key, "Content-Type": "application/json"}
        return await http.post(f"{self.http}/api/{method}", content=content, headers=headers)


# ---------------------------------------------------------------- pieces shared with the attack tests


def unread_sse_streams(port: int, count: int, token: str) -> list[socket.socket]:
    """``count`` ``uni_sse`` streams connected with ``token`` (its ``channels`` are the streams'
    subscriptions) whose client never reads: a 4 KiB receive buffer, and nobody calls ``recv``. The caller
    closes them."""
    query = urllib.parse.quote(json.dumps({"token": token}))
    socks = []
    for _ in range(count):
        sock = socket.socket()
        socks.append(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET /connection/uni_sse?cf_connect={query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return socks


async def trickle(writer: asyncio.StreamWriter, every: float = 0.2) -> None:
    """One byte of a header every ``every`` seconds, for as long as the node listens."""
    with contextlib.suppress(ConnectionError):
        while not writer.is_closing():
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(every)  # the attacker's pace, not a wait for the node


async def until_closed(sock: socket.socket, within: float = TIMEOUT) -> bool:
    """Read (and drop) what ``sock`` holds until the node ends the connection: True if it did in time."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while True:
                try:
                    if not await loop.sock_recv(sock, 1 << 20):
                        return True
                except ConnectionError:
                    return True
    return False


def status_of(head: bytes) -> str:
    """``http <status>`` of a response head, ``closed`` when there was none."""
    parts = head.split(b" ", 2)
    return f"http {parts[1].decode()}" if head.startswith(b"HTTP/1.1 ") and len(parts) > 1 else "closed"


async def ws_outcome(client: RawClient) -> str:
    """``close <code>`` once the node closed ``client`` (reading what came before)."""
    code, _ = await client.closed()
    return f"close {code}"


class HandshakeRefused(Exception):
    """The node answered a WebSocket handshake with something else than 101, or cut it (its unfinished-request
    limit cuts the connection arriving longest, the attacker's own included): an outcome, not a failure."""


async def open_raw(url: str, rcvbuf: int | None = None) -> RawDocSocket:
    """``RawDocSocket.open``, its refusals raised as HandshakeRefused."""
    try:
        return await RawDocSocket.open(url, rcvbuf=rcvbuf)
    except (AssertionError, asyncio.IncompleteReadError, ConnectionError) as exc:
        raise HandshakeRefused(repr(exc)[:100]) from exc


async def open_ws(t: Target) -> websockets.ClientConnection:
    """A WebSocket to the client endpoint, its refusals raised as HandshakeRefused."""
    try:
        return await websockets.connect(t.ws, max_size=None, open_timeout=TIMEOUT)
    except (websockets.InvalidStatus, websockets.InvalidHandshake, ConnectionError) as exc:
        raise HandshakeRefused(repr(exc)[:100]) from exc


async def raw_ws(t: Target, user: str | None = None) -> RawClient:
    """A protocol-level client connected (``connect`` sent and answered) as ``user``, or only opened."""
    ws = await open_ws(t)
    client = RawClient(ws)
    if user is not None:
        reply = await client.command("connect", {"token": t.token(user)})
        assert "connect" in reply, reply
    return client


def reply_outcome(reply: dict[str, Any], ok: str) -> str:
    return f"error {reply['error']['code']}" if "error" in reply else ok


def text_frame(data: str | bytes) -> bytes:
    payload = data.encode() if isinstance(data, str) else data
    return RawDocSocket.frame(payload, opcode=0x1)


# ---------------------------------------------------------------- documents


async def sync_step1_flood(t: Target, out: Outcomes) -> None:
    sock = await open_raw(t.doc_url("attack-big", "mallory-docs"))
    try:
        burst = [protocol.update(text_update("!", client_id=t.rng.randrange(1000, 2**31)))]
        burst += [protocol.sync_step1(b"\x01\x05\x00")] * 300  # "I have nothing of client 5": a full diff
        burst.append(protocol.query_awareness())
        sock.send(*burst)
        out["step1 sent"] += 300
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):  # the attacker's patience: it takes what comes meanwhile
                while True:
                    opcode, payload = await sock.read_message()
                    if opcode == 0x8:
                        out[f"close {struct.unpack('!H', payload[:2])[0]}"] += 1
                        return
                    if payload[:2] == b"\x00\x01":
                        out["step2"] += 1
    finally:
        sock.abort()


async def seed_big_document(t: Target) -> None:
    """Write BIG_DOCUMENT characters into ``attack-big`` unless it holds them already."""
    sock = await open_raw(t.doc_url("attack-big", "mallory-docs"))
    try:
        sock.send(protocol.sync_step1(b"\x00"))
        async with asyncio.timeout(TIMEOUT):
            while True:
                _, payload = await sock.read_message()
                if payload[:2] == b"\x00\x01":
                    break
        if len(payload) < BIG_DOCUMENT:
            sock.send(protocol.update(text_update("s" * BIG_DOCUMENT, client_id=7)))
            await sock.writer.drain()
            sock.send(protocol.query_awareness())  # answered once the update before it was applied
            async with asyncio.timeout(TIMEOUT):
                while (await sock.read_message())[1][:1] != b"\x01":
                    pass
    finally:
        sock.abort()


async def awareness(t: Target, out: Outcomes) -> None:
    name = f"attack-aware-{t.rng.randrange(4)}"
    sockets: list[RawDocSocket] = []
    try:
        big = await open_raw(t.doc_url(name))  # anonymous: read-only, as in the issue
        sockets.append(big)
        crowd = []
        for _ in range(6):
            crowd.append(await open_raw(t.doc_url(name)))
            sockets.append(crowd[-1])
        state = orjson.dumps({"name": "x" * 200_000})
        big.send(
            protocol.awareness(
                protocol.encode_awareness([AwarenessEntry(900 + i, 1, state) for i in range(4)])
            )
        )
        for c, sock in enumerate(crowd):  # within the per-state bound, past the per-connection and room ones
            entries = [AwarenessEntry(10_000 + c * 100 + i, 1, orjson.dumps("y" * 15_990)) for i in range(12)]
            sock.send(protocol.awareness(protocol.encode_awareness(entries)))
            out["crowd states sent"] += len(entries)
        code = await big.close_code()
        out[f"close {code}"] += 1
    finally:
        for sock in sockets:
            sock.abort()


async def doc_write_flood(t: Target, out: Outcomes) -> None:
    sock = await open_raw(t.doc_url(f"attack-flood-{t.rng.randrange(4)}", "mallory-docs"))
    try:
        out["bytes sent"] += await flood(sock, for_seconds=2.0, client_id=t.rng.randrange(10_000, 2**31))
    finally:
        sock.abort()


# ---------------------------------------------------------------- slow readers


async def slow_readers(t: Target, out: Outcomes) -> None:
    """Four WebSocket subscribers and four SSE streams of FEED that never read, while 6 MB go through it
    (past what the kernel's socket buffers hold on loopback, and ``client_queue_max_size``); then each is
    read to its end: cut (the node closed it) or not."""
    sockets: list[RawDocSocket] = []
    streams: list[socket.socket] = []
    try:
        for _ in range(4):
            sock = await open_raw(t.ws, rcvbuf=4096)
            sockets.append(sock)
            token = t.token("mallory-slow")
            sock.writer.write(
                text_frame(orjson.dumps({"id": 1, "connect": {"token": token}}))
                + text_frame(orjson.dumps({"id": 2, "subscribe": {"channel": FEED}}))
            )
        streams = unread_sse_streams(t.port, 4, t.token("mallory-slow", channels=[FEED]))
        pad = "x" * 60_000
        async with http_client(timeout=TIMEOUT) as http:
            for _ in range(6):
                body = {"commands": [{"publish": {"channel": FEED, "data": {"pad": pad}}}] * 16}
                response = await t.api(http, "batch", body)
                out[f"feed http {response.status_code}"] += 1
        for sock in sockets:
            code = await sock.close_code()
            out["ws cut" if code is None else f"ws close {code}"] += 1
        for stream in streams:
            out["sse cut" if await until_closed(stream) else "sse still open"] += 1
    finally:
        for sock in sockets:
            sock.abort()
        for stream in streams:
            stream.close()


# ---------------------------------------------------------------- connections


async def connection_flood(t: Target, out: Outcomes) -> None:
    """``t.connections`` client connections and as many document connections of one user at once."""
    clients: list[RawClient] = []
    docs: list[RawDocSocket] = []

    async def client_connection() -> None:
        try:
            client = RawClient(await open_ws(t))
        except HandshakeRefused:
            out["handshake refused"] += 1
            return
        clients.append(client)
        try:
            reply = await client.command("connect", {"token": t.token("mallory-many")})
            out[reply_outcome(reply, "connected")] += 1
        except websockets.ConnectionClosed:
            out[f"close {client.ws.close_code}"] += 1

    async def doc_connection() -> None:
        try:
            sock = await open_raw(t.doc_url("attack-many", "mallory-many"))
        except HandshakeRefused:
            out["doc handshake refused"] += 1
            return
        docs.append(sock)
        opcode, payload = await sock.read_message()
        out[f"doc close {struct.unpack('!H', payload[:2])[0]}" if opcode == 0x8 else "doc joined"] += 1

    try:  # all at once: those past the limit are refused
        await asyncio.gather(*(client_connection() for _ in range(t.connections)))
        await asyncio.gather(*(doc_connection() for _ in range(t.connections)))
    finally:
        for client in clients:
            client.ws.transport.abort()
        for sock in docs:
            sock.abort()


async def unfinished_requests(t: Target, out: Outcomes) -> None:
    """``t.unfinished`` connections that send nothing and four that trickle a header: each ends with 408
    (the header timeout) or 503 (cut to make room for a newer connection)."""
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    trickled: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    tasks = []
    try:
        for _ in range(t.unfinished):
            conns.append(await asyncio.open_connection("127.0.0.1", t.port))
        for _ in range(4):
            trickled.append(await asyncio.open_connection("127.0.0.1", t.port))
            trickled[-1][1].write(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            tasks.append(asyncio.create_task(trickle(trickled[-1][1])))
        for reader, _ in conns + trickled:
            try:
                async with asyncio.timeout(TIMEOUT * 2):
                    out[status_of(await reader.read())] += 1
            except (TimeoutError, ConnectionError) as exc:
                out[f"not answered {type(exc).__name__}"] += 1
    finally:
        for task in tasks:
            task.cancel()
        for _, writer in conns + trickled:
            writer.close()


# ---------------------------------------------------------------- the server API


async def parallel_batches(t: Target, out: Outcomes) -> None:
    commands = [
        {"publish": {"channel": f"attack-spam-{t.rng.randrange(8)}", "data": {"n": n}}} for n in range(4000)
    ]
    async with http_client(timeout=ROUND_TIMEOUT) as http:
        response = await t.api(http, "batch", {"commands": commands, "parallel": True})
    out[f"http {response.status_code}"] += 1
    if response.status_code == 200:
        replies = response.json()["replies"]
        out["published"] += sum("publish" in r for r in replies)
        out["refused"] += sum("error" in r for r in replies)


async def fresh_history(t: Target, out: Outcomes) -> None:
    prefix = f"fresh-{os.getpid()}-{t.rng.randrange(2**40)}"
    commands = [{"history": {"channel": f"{prefix}-{i}", "limit": 1}} for i in range(4000)]
    async with http_client(timeout=ROUND_TIMEOUT) as http:
        response = await t.api(http, "batch", {"commands": commands})
    out[f"http {response.status_code}"] += 1
    if response.status_code == 200:
        out["empty"] += sum(r.get("history", {}).get("offset", -1) == 0 for r in response.json()["replies"])
    client = await raw_ws(t, "mallory-history")
    try:
        for i in range(50):
            reply = await client.command("history", {"channel": f"{prefix}-ws-{i}", "limit": 5})
            out[reply_outcome(reply, "client empty")] += 1
    finally:
        await client.ws.close()


async def api_garbage(t: Target, out: Outcomes) -> None:
    bodies: list[tuple[str, bytes, dict[str, str]]] = [
        ("publish", b'{"channel": "x", "data": 1}', {}),  # no key
        ("publish", b'{"channel": "x", "data": 1}', {"X-API-Key": "wrong"}),
        ("publish", b'{"channel": ', {"X-API-Key": t.api_key}),
        ("publish", b"[]", {"X-API-Key": t.api_key}),
        ("publish", b'{"channel": 5, "data": {}}', {"X-API-Key": t.api_key}),
        ("publish", nested_text(t.rng.choice([253, 255, 1_000, 1_030])).encode(), {"X-API-Key": t.api_key}),
        ("publish", b'{"channel": "x", "data": "' + t.rng.choice(BAD_UTF8) + b'"}', {"X-API-Key": t.api_key}),
        ("publish", b'{"channel": "x", "data": "' + b"z" * 1_100_000 + b'"}', {"X-API-Key": t.api_key}),
        ("frobnicate", b"{}", {"X-API-Key": t.api_key}),
        (urllib.parse.quote("x\x1b[2J\r\nforged"), b"{}", {"X-API-Key": t.api_key}),
        ("batch", b'{"commands": [{"nope": {}}, 5, {"publish": []}]}', {"X-API-Key": t.api_key}),
        ("history", b'{"channel": "x", "limit": 18446744073709551616}', {"X-API-Key": t.api_key}),
    ]
    async with http_client(timeout=TIMEOUT) as http:
        for method, body, headers in bodies:
            response = await http.post(f"{t.http}/api/{method}", content=body, headers=headers)
            out[f"http {response.status_code}"] += 1
            with contextlib.suppress(ValueError, KeyError, TypeError):
                out[f"error {response.json()['error']['code']}"] += 1


# ---------------------------------------------------------------- the client protocol


async def malformed(t: Target, out: Outcomes) -> None:
    """Three of tests/hub/test_bad_input.py's frames that close a connection, three commands that get an
    error, a frame over ``client_max_message_size`` and a text frame that is not UTF-8."""
    for name in t.rng.sample(sorted(CLOSE_CASES), 3):
        connect_first, frames, _expected = CLOSE_CASES[name]
        client = await raw_ws(t, "mallory-frames" if connect_first else None)
        for frame in frames:
            await client.send_raw(frame)
        out[await ws_outcome(client)] += 1
    client = await raw_ws(t, "mallory-frames")
    try:
        for name in t.rng.sample(sorted(ERROR_CASES), 3):
            body, _code = ERROR_CASES[name]
            await client.send_raw(orjson.dumps({"id": 100, **body}).decode())
            out[reply_outcome(await client.reply(100), "accepted")] += 1
        await client.send_raw(
            orjson.dumps({"id": 101, "publish": {"channel": "x", "data": "z" * 70_000}}).decode()
        )
        out[await ws_outcome(client)] += 1
    finally:
        await client.ws.close()
    client = await raw_ws(t, "mallory-frames")
    client.ws.protocol.send_frame(
        Frame(Opcode.TEXT, b'{"id": 2, "presence": {"channel": "' + BAD_UTF8[0] + b'"}}')
    )
    client.ws.send_data()
    out[await ws_outcome(client)] += 1


async def command_flood(t: Target, out: Outcomes) -> None:
    """400 commands in one frame, then more: past ``client_command_rate_limit``'s burst."""
    client = await raw_ws(t, "mallory-commands")
    try:
        lines = [orjson.dumps({"id": 10 + i, "presence_stats": {"channel": "attack-x"}}) for i in range(400)]
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(3):
                await client.send_raw(b"\n".join(lines).decode())
            for i in range(400):
                out[reply_outcome(await client.reply(10 + i), "answered")] += 1
            await client.send_raw(b"\n".join(lines).decode())
        out[await ws_outcome(client)] += 1
    finally:
        await client.ws.close()


def sign(secret: str, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


async def bad_tokens(t: Target, out: Outcomes) -> None:
    now = int(time.time())
    claim = t.rng.choice(["exp", "iat", "nbf"])
    tokens = {
        "garbage": "not-a-jwt",
        "foreign": mint_token("another-secret-of-at-least-32-bytes!!", "mallory"),
        "tampered": t.token("mallory")[:-4] + "AAAA",
        "expired": mint_token(t.secret, "mallory", ttl=60, now=time.time() - 3600),
        "bad time": sign(t.secret, {"sub": "mallory", "exp": now + 60, claim: t.rng.choice(BAD_TIMES)}),
    }
    for kind, tok in tokens.items():
        client = await raw_ws(t)
        reply = await client.command("connect", {"token": tok}) if kind == "expired" else None
        if reply is not None:
            out[f"{kind}: {reply_outcome(reply, 'connected')}"] += 1
            await client.ws.close()
            continue
        await client.send_raw(orjson.dumps({"id": 1, "connect": {"token": tok}}).decode())
        out[f"{kind}: {await ws_outcome(client)}"] += 1
    for kind in ("garbage", "expired", "bad time"):
        url = t.doc_url("attack-private") + "?token=" + urllib.parse.quote(tokens[kind])
        sock = await open_raw(url)
        try:
            out[f"doc {kind}: close {await sock.close_code()}"] += 1
        finally:
            sock.abort()


async def forbidden(t: Target, out: Outcomes) -> None:
    client = await raw_ws(t, "mallory-forbidden")
    try:
        for channel in ("$attack-secret", "attack-inbox#alice", "nope:x", "chat:inbox#alice"):
            for method, params in (
                ("subscribe", {"channel": channel}),
                ("history", {"channel": channel, "limit": 10}),
                ("presence", {"channel": channel}),
                ("publish", {"channel": channel, "data": {"from": "outside"}}),
            ):
                out[reply_outcome(await client.command(method, params), f"{method} allowed")] += 1
    finally:
        await client.ws.close()


# ---------------------------------------------------------------- the run

Attack = Callable[[Target, Outcomes], Awaitable[None]]

ATTACKS: dict[str, Attack] = {
    "sync_step1_flood": sync_step1_flood,
    "awareness": awareness,
    "doc_write_flood": doc_write_flood,
    "slow_readers": slow_readers,
    "connection_flood": connection_flood,
    "unfinished_requests": unfinished_requests,
    "parallel_batches": parallel_batches,
    "fresh_history": fresh_history,
    "malformed": malformed,
    "command_flood": command_flood,
    "bad_tokens": bad_tokens,
    "forbidden": forbidden,
    "api_garbage": api_garbage,
}


async def rounds(t: Target, attack: Attack, out: Outcomes, deadline: float, pause: float) -> None:
    """Rounds of ``attack``, ``pause`` seconds apart, until ``deadline`` (the one under way gets
    LAST_ROUND_GRACE more) and at least one round completed (``complete``): on a busy machine an attack
    still gets made whole once, for at most ROUND_TIMEOUT past the deadline."""
    hard_deadline = deadline + ROUND_TIMEOUT
    while True:
        now = time.monotonic()
        if now >= hard_deadline or (now >= deadline and out["complete"]):
            return
        out["rounds"] += 1
        left = (deadline - now if out["complete"] else hard_deadline - now) + LAST_ROUND_GRACE
        bound = min(ROUND_TIMEOUT, left)
        try:
            async with asyncio.timeout(bound):
                await attack(t, out)
            out["complete"] += 1
        except TimeoutError:
            out["timeout" if bound == ROUND_TIMEOUT else "cut short"] += 1
        except HandshakeRefused:
            out["handshake refused"] += 1
        except Exception as exc:  # an outcome the attacker did not plan for: counted, the next round goes on
            out[f"exception {type(exc).__name__}"] += 1
        await asyncio.sleep(pause)  # the attacker's pace


async def attack(
    t: Target,
    seconds: float,
    *,
    pause: float = 0.2,
    only: list[str] | None = None,
    started: Callable[[], None] = lambda: None,
) -> dict[str, dict[str, int]]:
    """Every attack of ATTACKS (or ``only`` those) at once for ``seconds``; their outcome counts.
    ``started`` is called when the attacks begin (after the large document was written)."""
    await seed_big_document(t)
    started()
    outcomes: dict[str, Outcomes] = {name: Counter() for name in (only or ATTACKS)}
    deadline = time.monotonic() + seconds
    async with asyncio.TaskGroup() as group:
        for name, out in outcomes.items():
            group.create_task(rounds(t, ATTACKS[name], out, deadline, pause))
    return {name: dict(out) for name, out in outcomes.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.attacker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the hub's HTTP base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--secret", required=True, help="the hub's token_hmac_secret_key")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between two rounds of one attack")
    parser.add_argument("--connections", type=int, default=24, help="connections of the connection flood")
    parser.add_argument("--unfinished", type=int, default=80, help="silent connections of the request flood")
    parser.add_argument("--only", default="", help="comma-separated attacks (default: all of them)")
    args = parser.parse_args(argv)
    only = [name for name in args.only.split(",") if name] or None
    for name in only or ():
        if name not in ATTACKS:
            parser.error(f"no attack {name!r}: {', '.join(ATTACKS)}")
    target = Target(args.url.rstrip("/"), args.api_key, args.secret, args.connections, args.unfinished)
    result = asyncio.run(
        attack(target, args.seconds, pause=args.pause, only=only, started=lambda: print(STARTED, flush=True))
    )
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
