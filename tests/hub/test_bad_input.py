"""Bad input at the protocol level, against a real hub: every case gets its code, and the hub keeps serving.

Each test has a healthy client subscribed to ``news`` before the bad input and checks, afterwards, that it
still receives a publication made by a fresh connection (new connections accepted, fan-out intact), and
that the hub logged the bad input on the ``switchboard`` logger.

Codes (centrifugal.dev "Error and disconnect codes"): a broken frame, a command before ``connect``, a
second ``connect``: close 3501 (bad request); a frame over ``client_max_message_size``: close 1009 (the
WebSocket layer's own code); an invalid token: close 3500; an unknown method: error 104; params of the wrong
type and invalid channel names: error 107; an expired token: error 109; no token where one is required:
error 101.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import pytest
import websockets

from hub.auth import mint_token
from tests.conftest import TIMEOUT, RawClient, RunningHub, token

CHANNEL = "news"


async def connected(
    raw_client: Any, hub: RunningHub, params: dict[str, Any] | None = None
) -> tuple[RawClient, str]:
    """A connected raw client and its client id."""
    c = await raw_client(hub)
    reply = await c.command("connect", params or {})
    assert "connect" in reply, reply
    return c, reply["connect"]["client"]


async def healthy_subscriber(
    raw_client: Any, hub: RunningHub, params: dict[str, Any] | None = None
) -> RawClient:
    c, _ = await connected(raw_client, hub, params)
    reply = await c.command("subscribe", {"channel": CHANNEL})
    assert "subscribe" in reply, reply
    return c


async def assert_still_serving(
    raw_client: Any, hub: RunningHub, healthy: RawClient, marker: str, params: dict[str, Any] | None = None
) -> None:
    """A new connection is accepted and its publication reaches the healthy subscriber."""
    publisher, _ = await connected(raw_client, hub, params)
    reply = await publisher.command("publish", {"channel": CHANNEL, "data": {"marker": marker}})
    assert reply.get("publish") == {}, reply
    push = await healthy.push("pub")
    assert push["channel"] == CHANNEL
    assert push["pub"]["data"] == {"marker": marker}


async def close_code(c: RawClient, *, allow_connect_reply: bool = True) -> int:
    """Wait for the server to close ``c``; fail at once if it answers (but for a connect reply) instead."""
    async with asyncio.timeout(TIMEOUT):
        try:
            while True:
                frame = await c.ws.recv()
                for line in (frame if isinstance(frame, str) else frame.decode()).splitlines():
                    msg = orjson.loads(line) if line.strip() else {}
                    if msg and not (allow_connect_reply and "connect" in msg):  # {} is a ping
                        pytest.fail(f"the hub answered instead of closing: {msg}")
        except websockets.ConnectionClosed:
            pass
    assert c.ws.close_code is not None
    return c.ws.close_code


async def until(predicate: Any, what: str) -> None:
    """Poll a server-side condition the hub offers no event for, bounded by TIMEOUT."""
    async with asyncio.timeout(TIMEOUT):
        while not predicate():  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)
    assert predicate(), what


def bad_input_logs(caplog: pytest.LogCaptureFixture, client_id: str | None = None) -> list[logging.LogRecord]:
    """Records at INFO or above from the hub's loggers (of one session if ``client_id`` is given)."""
    return [
        r
        for r in caplog.records
        if r.name.startswith("switchboard")
        and r.levelno >= logging.INFO
        and r.getMessage() != "connected"
        and (client_id is None or getattr(r, "client", None) == client_id)
    ]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="switchboard")
    return caplog


# ---------------------------------------------------------------- frames that end the connection

Frame = str | bytes

CLOSE_CASES: dict[str, tuple[bool, list[Frame], int]] = {
    # name: (connect first?, frames sent, expected close code)
    "malformed-json": (True, ['{"id": 2, "presence": {"channel": "news"'], 3501),
    "malformed-json-before-connect": (False, ['{"id": 1, "connect": {'], 3501),
    "json-array": (True, ['[{"id": 2, "presence": {"channel": "news"}}]'], 3501),
    "json-number": (True, ["42"], 3501),
    "json-string": (True, ['"presence"'], 3501),
    "json-null": (True, ["null"], 3501),
    "non-object-after-a-good-line": (True, ['{"id": 2, "presence": {"channel": "news"}}\n[]'], 3501),
    "binary-garbage": (True, [b"\x00\xff\xfe\x80garbage\xc3\x28\n\x01"], 3501),
    "binary-garbage-before-connect": (False, [b"\x89PNG\r\n\x1a\n\x00\x00"], 3501),
    "empty-frame": (True, [""], 3501),
    "subscribe-before-connect": (False, ['{"id": 1, "subscribe": {"channel": "news"}}'], 3501),
    "publish-before-connect": (False, ['{"id": 1, "publish": {"channel": "news", "data": 1}}'], 3501),
    "unknown-method-before-connect": (False, ['{"id": 1, "foo": {}}'], 3501),
    "connect-twice": (True, ['{"id": 2, "connect": {}}'], 3501),
    "connect-twice-in-one-frame": (False, ['{"id": 1, "connect": {}}\n{"id": 2, "connect": {}}'], 3501),
    "command-without-id": (True, ['{"presence": {"channel": "news"}}'], 3501),
    "negative-id": (True, ['{"id": -1, "presence": {"channel": "news"}}'], 3501),
    "string-id": (True, ['{"id": "1", "presence": {"channel": "news"}}'], 3501),
    "garbage-token": (False, ['{"id": 1, "connect": {"token": "not-a-jwt"}}'], 3500),
    "token-of-another-secret": (
        False,
        [orjson.dumps({"id": 1, "connect": {"token": mint_token("x" * 40, "mallory")}}).decode()],
        3500,
    ),
    "tampered-token": (
        False,
        [orjson.dumps({"id": 1, "connect": {"token": token("alice")[:-4] + "AAAA"}}).decode()],
        3500,
    ),
    "token-of-the-wrong-type": (False, ['{"id": 1, "connect": {"token": 42}}'], 3501),
}


@pytest.mark.parametrize("case", list(CLOSE_CASES), ids=list(CLOSE_CASES))
async def test_bad_frame_closes_the_connection_and_the_hub_keeps_serving(case, hub, raw_client, logs):
    connect_first, frames, code = CLOSE_CASES[case]
    healthy = await healthy_subscriber(raw_client, hub)
    sessions = hub.sb.node.sessions
    baseline = len(sessions)
    if connect_first:
        bad, bad_id = await connected(raw_client, hub)
    else:
        bad, bad_id = await raw_client(hub), None
    logs.clear()
    for frame in frames:
        await bad.send_raw(frame)
    got = await close_code(bad)
    assert got == code, f"{case}: closed with {got}, expected {code}"
    assert bad_input_logs(logs, bad_id), f"{case}: nothing logged"
    await until(lambda: len(sessions) == baseline, "the bad session ended")
    assert bad_id is None or bad_id not in hub.sb.node.registry.clients
    await assert_still_serving(raw_client, hub, healthy, case)


@pytest.mark.all_websocket_modes
async def test_oversized_frame_closes_with_1009(make_hub, raw_client, logs):
    hub = await make_hub(client_max_message_size=1024)
    healthy = await healthy_subscriber(raw_client, hub)
    bad, _ = await connected(raw_client, hub)
    # Just under the limit is fine.
    small = orjson.dumps({"id": 2, "publish": {"channel": CHANNEL, "data": "y" * 900}}).decode()
    assert len(small) <= 1024
    await bad.send_raw(small)
    assert (await bad.reply(2)).get("publish") == {}
    assert (await healthy.push("pub"))["pub"]["data"] == "y" * 900
    logs.clear()
    big = orjson.dumps({"id": 3, "publish": {"channel": CHANNEL, "data": "z" * 2000}}).decode()
    await bad.send_raw(big)
    code, _ = await bad.closed()
    assert code == 1009
    assert bad_input_logs(logs), "nothing logged"
    await until(lambda: len(hub.sb.node.sessions) == 1, "the closed session ended")
    await assert_still_serving(raw_client, hub, healthy, "after-1009")


@pytest.mark.all_websocket_modes
async def test_oversized_binary_frame_closes_with_1009(make_hub, raw_client):
    hub = await make_hub(client_max_message_size=1024)
    healthy = await healthy_subscriber(raw_client, hub)
    bad = await raw_client(hub)
    await bad.send_raw(b"\x00" * 4096)
    code, _ = await bad.closed()
    assert code == 1009
    await assert_still_serving(raw_client, hub, healthy, "after-binary-1009")


# ---------------------------------------------------------------- commands that fail, connection stays

LONG = "x" * 256

ERROR_CASES: dict[str, tuple[dict[str, Any], int]] = {
    "unknown-method": ({"foo": {}}, 104),
    "unknown-method-with-params": ({"frobnicate": {"channel": "news"}}, 104),
    "subscribe-params-a-string": ({"subscribe": "x"}, 107),
    "subscribe-params-a-list": ({"subscribe": ["news"]}, 107),
    "subscribe-params-a-number": ({"subscribe": 7}, 107),
    "channel-a-number": ({"subscribe": {"channel": 42}}, 107),
    "channel-null": ({"subscribe": {"channel": None}}, 107),
    "channel-an-object": ({"subscribe": {"channel": {"name": "news"}}}, 107),
    "publish-channel-a-number": ({"publish": {"channel": 42, "data": {}}}, 107),
    "history-limit-a-string": ({"history": {"channel": "news", "limit": "ten"}}, 107),
    "history-since-a-list": ({"history": {"channel": "news", "since": [1, "e"]}}, 107),
    "presence-params-a-string": ({"presence": "news"}, 107),
    "subscribe-token-a-number": ({"subscribe": {"channel": "other", "token": 5}}, 107),
    "recover-offset-a-string": ({"subscribe": {"channel": "other", "recover": True, "offset": "1"}}, 107),
    "channel-empty": ({"subscribe": {"channel": ""}}, 107),
    "channel-space": ({"subscribe": {"channel": " "}}, 107),
    "channel-inner-space": ({"subscribe": {"channel": "a b"}}, 107),
    "channel-tab": ({"subscribe": {"channel": "a\tb"}}, 107),
    "channel-newline": ({"subscribe": {"channel": "a\nb"}}, 107),
    "channel-control-character": ({"subscribe": {"channel": "a\x00b"}}, 107),
    "channel-256-chars": ({"subscribe": {"channel": LONG}}, 107),
    "publish-channel-256-chars": ({"publish": {"channel": LONG, "data": 1}}, 107),
    "history-channel-with-space": ({"history": {"channel": "a b"}}, 107),
    "presence-stats-channel-256-chars": ({"presence_stats": {"channel": LONG}}, 107),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
async def test_bad_command_gets_an_error_and_the_connection_stays(case, hub, raw_client, logs):
    body, code = ERROR_CASES[case]
    healthy = await healthy_subscriber(raw_client, hub)
    bad, bad_id = await connected(raw_client, hub)
    logs.clear()
    await bad.send_raw(orjson.dumps({"id": 100, **body}).decode())
    reply = await bad.reply(100)
    assert reply.get("error", {}).get("code") == code, f"{case}: {reply}"
    assert bad_input_logs(logs, bad_id), f"{case}: nothing logged for the session"
    # The same connection goes on working: a subscription and a publication round trip.
    assert "subscribe" in await bad.command("subscribe", {"channel": "after"})
    assert (await bad.command("publish", {"channel": "after", "data": {"ok": case}})).get("publish") == {}
    assert (await bad.push("pub"))["pub"]["data"] == {"ok": case}
    assert any(s.id == bad_id for s in hub.sb.node.sessions)
    await assert_still_serving(raw_client, hub, healthy, case)


async def test_channel_name_of_255_characters_is_valid(hub, raw_client):
    c, _ = await connected(raw_client, hub)
    name = "x" * 255
    assert "subscribe" in await c.command("subscribe", {"channel": name})
    await c.command("publish", {"channel": name, "data": 1})
    assert (await c.push("pub"))["channel"] == name


# ---------------------------------------------------------------- tokens and anonymous connections


def expired_token(user: str) -> str:
    return token(user, ttl=60, now=time.time() - 3600)


async def test_expired_token_gets_error_109(hub, raw_client, logs):
    healthy = await healthy_subscriber(raw_client, hub)
    bad = await raw_client(hub)
    logs.clear()
    reply = await bad.command("connect", {"token": expired_token("alice")})
    assert reply.get("error", {}).get("code") == 109, reply
    assert "connect" not in reply
    assert bad_input_logs(logs), "nothing logged"
    assert not any(c.user == "alice" for c in hub.sb.node.registry.clients.values())
    await assert_still_serving(raw_client, hub, healthy, "after-109")


async def test_after_a_failed_connect_the_connection_is_unusable_as_in_centrifugo(hub, raw_client):
    """centrifuge (client.go, handleCommandDispatchError) marks a connection whose connect failed with an
    error reply as unusable: the next command, a second connect included, closes it with 3501. The SDKs
    react to 109 by fetching a new token and opening a new connection, never by reusing this one."""
    healthy = await healthy_subscriber(raw_client, hub)
    bad = await raw_client(hub)
    reply = await bad.command("connect", {"token": expired_token("alice")})
    assert reply.get("error", {}).get("code") == 109, reply
    await bad.send_raw(orjson.dumps({"id": 2, "connect": {"token": token("alice")}}).decode())
    assert await close_code(bad, allow_connect_reply=False) == 3501
    await assert_still_serving(raw_client, hub, healthy, "after-unusable")


async def test_expired_token_then_a_new_connection_with_a_good_token_works(hub, raw_client):
    bad = await raw_client(hub)
    reply = await bad.command("connect", {"token": expired_token("alice")})
    assert reply.get("error", {}).get("code") == 109, reply
    good, _ = await connected(raw_client, hub, {"token": token("alice", ttl=3600)})
    assert "subscribe" in await good.command("subscribe", {"channel": CHANNEL})
    assert [c.user for c in hub.sb.node.registry.clients.values()] == ["alice"]


@pytest.mark.parametrize(
    "params", [{}, {"token": ""}, {"data": {"user": "mallory"}}], ids=["none", "empty", "data"]
)
async def test_no_token_while_anonymous_is_disabled_gets_error_101(params, make_hub, raw_client, logs):
    hub = await make_hub(allow_anonymous_connect_without_token=False)
    user_params = {"token": token("carol")}
    healthy = await healthy_subscriber(raw_client, hub, user_params)
    bad = await raw_client(hub)
    logs.clear()
    reply = await bad.command("connect", params)
    assert reply.get("error", {}).get("code") == 101, reply
    assert bad_input_logs(logs), "nothing logged"
    assert [c.user for c in hub.sb.node.registry.clients.values()] == ["carol"]
    await assert_still_serving(raw_client, hub, healthy, "after-101", user_params)
