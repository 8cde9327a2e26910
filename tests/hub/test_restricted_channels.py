"""Private (``$name``) and user-limited (``name#alice,bob``) channels against a real ``switchboard serve``.

The namespace ``open`` allows everything to every client, anonymous ones included (the
``allow_*_for_client`` / ``allow_*_for_anonymous`` options). Still, a client that may not subscribe to a
private or user-limited channel never reads its history or presence, nor publishes into it: that takes
what subscribing takes (a subscription token for ``$``, being listed for ``#``) or a subscription of this
connection to the channel. Over WebSocket and over the bidirectional emulation (the same session code);
the server API, keyed and trusted as Centrifugo's, is not limited.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import SECRET, TIMEOUT, RawClient, http_client, token
from tests.hub.test_transport_http import _emulate, open_stream
from tests.nodes import API_KEY, HubNode, NodeSet

CONFIG = f"""\
token_hmac_secret_key = "{SECRET}"
allow_anonymous_connect_without_token = true
api_key = "{API_KEY}"

[[namespaces]]
name = "open"
presence = true
history_size = 100
history_ttl = 300
allow_user_limited_channels = true
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_client = true
allow_publish_for_anonymous = true
allow_history_for_client = true
allow_history_for_anonymous = true
allow_presence_for_client = true
allow_presence_for_anonymous = true
"""

SECRET_CHANNEL = "$open:secret"
INBOX = "open:inbox#alice,bob"
PAIR = "$open:pair#alice"
LOBBY = "open:lobby"
OPERATIONS = {
    "history": lambda ch: {"channel": ch, "limit": 10},
    "presence": lambda ch: {"channel": ch},
    "presence_stats": lambda ch: {"channel": ch},
    "publish": lambda ch: {"channel": ch, "data": {"from": "outside"}},
}


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeSet]:
    workdir = tmp_path_factory.mktemp("restricted")
    config = workdir / "hub.toml"
    config.write_text(CONFIG)
    node_set = NodeSet(workdir)
    node = HubNode("n1", workdir, config)
    node_set.nodes.append(node)
    try:
        node.start_blocking()
        yield node_set
    finally:
        node_set.close()


@pytest.fixture
async def clients(nodes: NodeSet) -> AsyncIterator[Any]:
    """``await open_client(user)``: a connected RawClient (user "" is anonymous), closed at the test's end."""
    opened: list[Any] = []

    async def open_client(user: str) -> RawClient:
        ws = await websockets.connect(nodes[0].url, open_timeout=TIMEOUT)
        opened.append(ws)
        client = RawClient(ws)
        params = {"token": token(user)} if user else {}
        assert "connect" in await client.command("connect", params)
        return client

    yield open_client
    for ws in opened:
        await ws.close()


async def subscribe(client: RawClient, channel: str, user: str, with_token: bool) -> bool:
    params: dict[str, Any] = {"channel": channel}
    if with_token:
        params["token"] = token(user, channel=channel)
    return "subscribe" in await client.command("subscribe", params)


async def error_code(client: RawClient, op: str, channel: str) -> int:
    """The error code of ``op`` on ``channel``; 0 when it succeeded."""
    reply = await client.command(op, OPERATIONS[op](channel))
    return int(reply["error"]["code"]) if "error" in reply else 0


async def test_outsiders_neither_read_nor_publish_into_a_private_channel(
    nodes: NodeSet, clients: Any
) -> None:
    alice = await clients("alice")
    assert await subscribe(alice, SECRET_CHANNEL, "alice", with_token=True)
    for user in ("eve", ""):
        outsider = await clients(user)
        assert not await subscribe(outsider, SECRET_CHANNEL, user, with_token=False)
        for op in OPERATIONS:
            assert await error_code(outsider, op, SECRET_CHANNEL) == 103, (user, op)
    for op in OPERATIONS:  # the subscriber itself: allow_*_for_client applies
        assert await error_code(alice, op, SECRET_CHANNEL) == 0, op
    # Nothing of the outsiders reached the subscriber: the next publication it gets is its own.
    first = await alice.push("pub")
    assert first["pub"]["data"] == {"from": "outside"} and first["pub"]["info"]["user"] == "alice"


async def test_user_limited_channels_are_for_their_users(clients: Any) -> None:
    bob = await clients("bob")
    for op in OPERATIONS:  # listed, not subscribed: what subscribe needs is there
        assert await error_code(bob, op, INBOX) == 0, op
    for user in ("eve", ""):
        outsider = await clients(user)
        for op in OPERATIONS:
            assert await error_code(outsider, op, INBOX) == 103, (user, op)
    # Private and user-limited: being listed is not enough, the subscription token is.
    alice = await clients("alice")
    assert await error_code(alice, "history", PAIR) == 103
    assert await subscribe(alice, PAIR, "alice", with_token=True)
    assert await error_code(alice, "history", PAIR) == 0


async def test_ordinary_channels_keep_the_namespace_rules(clients: Any) -> None:
    for user in ("eve", ""):
        client = await clients(user)
        for op in OPERATIONS:
            assert await error_code(client, op, LOBBY) == 0, (user, op)


async def test_the_emulation_transport_is_guarded_the_same(nodes: NodeSet) -> None:
    node = nodes[0]
    connect = json.dumps({"id": 1, "connect": {"token": token("eve")}})
    async with (
        http_client(timeout=TIMEOUT) as http,
        open_stream(http, "POST", f"{node.http}/connection/http_stream", content=connect.encode()) as stream,
    ):
        result = (await stream.message())["connect"]
        for cmd_id, op in enumerate(OPERATIONS, start=2):
            command = {"id": cmd_id, op: OPERATIONS[op](SECRET_CHANNEL)}
            assert await _emulate(http, node, result["session"], result["node"], command) == 204  # type: ignore[arg-type]
            reply = await stream.message()
            assert reply["id"] == cmd_id and reply["error"]["code"] == 103, (op, reply)


async def test_the_server_api_is_trusted(nodes: NodeSet) -> None:
    """As Centrifugo's: a backend holding the API key checks permissions itself."""
    node = nodes[0]
    assert "result" in await node.api("publish", {"channel": SECRET_CHANNEL, "data": {"n": 1}})
    history = await node.api("history", {"channel": SECRET_CHANNEL, "limit": 10})
    assert history["result"]["publications"]


USERS = ["", "alice", "bob", "eve"]
CHANNELS = [SECRET_CHANNEL, INBOX, PAIR, LOBBY]


def may_subscribe_without_token(user: str, channel: str) -> bool:
    """What subscribe needs, by the channel name alone (no token)."""
    if channel.startswith("$"):
        return False
    if "#" in channel:
        return user in channel.rpartition("#")[2].split(",") and user != ""
    return True


@settings(max_examples=60, deadline=None)
@given(
    user=st.sampled_from(USERS),
    channel=st.sampled_from(CHANNELS),
    op=st.sampled_from(sorted(OPERATIONS)),
    subscribe_first=st.sampled_from(["no", "plain", "with token"]),
)
async def test_no_client_that_may_not_subscribe_reads_or_publishes(
    nodes: NodeSet, user: str, channel: str, op: str, subscribe_first: str
) -> None:
    """The property: an operation on a private or user-limited channel succeeds exactly when the client
    may subscribe to it by its name or holds a subscription to it; otherwise 103."""
    async with websockets.connect(nodes[0].url, open_timeout=TIMEOUT) as ws:
        client = RawClient(ws)
        assert "connect" in await client.command("connect", {"token": token(user)} if user else {})
        subscribed = subscribe_first != "no" and await subscribe(
            client, channel, user, with_token=subscribe_first == "with token"
        )
        code = await error_code(client, op, channel)
    allowed = subscribed or may_subscribe_without_token(user, channel)
    assert code == (0 if allowed else 103), (user, channel, op, subscribe_first, subscribed)
