"""Fuzzing the unidirectional HTTP endpoints' input: ``cf_connect`` (the query parameter of a GET, or a
POST body) and an EventSource's ``Last-Event-ID``, through ``stream_session`` with an in-memory ASGI
request against a real Node.

The contract: the request is answered 200 (a stream that carries a ``connect`` push, or a ``disconnect``
push with a protocol code, never 3004), or 400/405/413 with nothing else done; nothing is logged at ERROR;
the session is gone afterwards; the node keeps serving (a witness subscriber receives a publication)."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hub.transport_http import stream_session
from tests.conftest import TIMEOUT
from tests.fuzz.strategies import (
    bounded_time,
    error_log,
    examples,
    json_object_text,
    json_texts,
    mostly,
    mutated,
    nested_text,
)
from tests.fuzz.test_session import FIELDS, PARAMS, PROTOCOL_CLOSES, Hub
from tests.fuzz.test_sse import ids as resume_ids


@st.composite
def connect_requests(draw: st.DrawFn) -> bytes:
    names = draw(st.lists(st.sampled_from([*FIELDS["connect"], "subs"]), unique=True))
    params = json_object_text({name: draw(PARAMS[name]) for name in names})
    return draw(mostly(st.just(params), json_texts)).encode()


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["uni_http_stream", "uni_sse"]))
    method = draw(st.sampled_from(["GET", "GET", "POST", "PUT"]))
    body = draw(connect_requests())
    headers: list[tuple[bytes, bytes]] = []
    if kind == "uni_sse" and draw(st.booleans()):
        headers.append((b"last-event-id", draw(resume_ids | st.binary(max_size=30))))
    query = b""
    if method == "GET":
        query = draw(
            mostly(
                st.just(b"cf_connect=" + urllib.parse.quote_from_bytes(body).encode()),
                st.just(b"cf_connect=" + body).flatmap(mutated),  # raw, unescaped, damaged
            )
        )
    return {"kind": kind, "method": method, "query": query, "body": body, "headers": headers}


class Exchange:
    """One request: what the endpoint sent back (status, body chunks)."""

    def __init__(self, method: str, body: bytes) -> None:
        self.method = method
        self.body = body
        self.status = 0
        self.chunks: list[bytes] = []
        self.answered = asyncio.Event()
        self._read = False

    async def receive(self) -> dict[str, Any]:
        if self.method == "POST" and not self._read:
            self._read = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.answered.wait()  # the peer leaves once it has the connect result (or the refusal)
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self.status != 200:
                self.answered.set()
        else:
            chunk = message.get("body", b"")
            self.chunks.append(chunk)
            if b'"connect"' in chunk or b'"disconnect"' in chunk or not message.get("more_body", False):
                self.answered.set()

    def messages(self) -> list[dict[str, Any]]:
        out = []
        for line in b"".join(self.chunks).split(b"\n"):
            if line.startswith(b"data: "):
                line = line[6:]
            elif line.startswith((b"id: ", b"retry: ", b":", b"event: ")) or not line.strip():
                continue
            out.append(orjson.loads(line))
        return out


def serve(hub: Hub, request: dict[str, Any]) -> None:
    exchange = Exchange(request["method"], request["body"])
    scope = {
        "type": "http",
        "method": request["method"],
        "path": "/connection/" + request["kind"],
        "query_string": request["query"],
        "headers": request["headers"],
        "client": ("127.0.0.1", 5000),
    }
    hub.pong()
    sessions = len(hub.node.sessions)
    with error_log() as errors, bounded_time(TIMEOUT):
        hub.run(stream_session(hub.node, request["kind"], scope, exchange.receive, exchange.send))
        assert errors.take() == []
    assert exchange.status in (200, 400, 405, 413), exchange.status
    assert len(hub.node.sessions) == sessions
    if exchange.status != 200:
        return
    messages = [m for m in exchange.messages() if m]
    assert messages, exchange.chunks
    for message in messages:
        assert set(message) <= {"connect", "disconnect", "channel", "pub", "subscribe", "join", "leave"}, (
            message
        )
        if "disconnect" in message:
            assert message["disconnect"]["code"] in PROTOCOL_CLOSES, message
    hub.sessions += 1


FINDING = {"kind": "uni_http_stream", "method": "POST", "query": b"", "headers": []}


@pytest.fixture
def hub() -> Iterator[Hub]:
    running = Hub()
    try:
        yield running
    finally:
        running.close()


def test_connect_requests_and_resume_ids(hub: Hub) -> None:
    @settings(max_examples=examples(100))
    @given(requests())
    # Found: a name nested past the recursion limit crashed the connect (3004 and a traceback); a name that
    # is no string is a bad request (3501), not the 3004 "retry" Centrifugo sends for it.
    @example(dict(FINDING, body=b'{"name":' + nested_text(1_000).encode() + b"}"))
    @example(dict(FINDING, body=b'{"name":18446744073709551616}'))
    def property(request: dict[str, Any]) -> None:
        serve(hub, request)

    property()
    hub.still_serving()
