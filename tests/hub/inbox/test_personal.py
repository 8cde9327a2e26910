"""Centrifugo's personal-channel options: ``user_subscribe_to_personal`` subscribes every connection of a
user server-side to ``<namespace>:#<user>`` (the SDK learns it from the connect reply, with no code of
its own), and ``user_personal_single_connection`` keeps one connection per user (one node here; across
nodes in test_nodes.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from centrifuge import ClientEventHandler
from hypothesis import given
from hypothesis import strategies as st

from channels.errors import InvalidChannel
from channels.names import parse_channel
from hub.config import Config
from hub.inbox.personal import PersonalChannels
from tests.conftest import TIMEOUT, HubFactory, token
from tests.conftest import test_config as hub_config
from tests.hub.inbox.conftest import user


async def test_every_connection_of_a_user_is_subscribed_to_its_personal_channel(
    make_hub: HubFactory, raw_client: Any
) -> None:
    hub = await make_hub(user_subscribe_to_personal=True, user_personal_channel_namespace="personal")
    reply = await (await raw_client(hub)).command("connect", user("alice"))
    assert list(reply["connect"]["subs"]) == ["personal:#alice"]
    # with a token's own channels, and not twice when the token names it too
    both = await (await raw_client(hub)).command(
        "connect", user("alice", channels=["news", "personal:#alice"])
    )
    assert sorted(both["connect"]["subs"]) == ["news", "personal:#alice"]
    anonymous = await (await raw_client(hub)).command("connect", {})
    assert "subs" not in anonymous["connect"]
    await hub.sb.publish("personal:#alice", {"hello": "alice"})
    assert hub.sb.node.registry.subscriber_count(("", "personal:#alice")) == 2


async def test_without_a_namespace_the_channel_is_hash_user_and_the_option_is_off_by_default(
    make_hub: HubFactory, raw_client: Any
) -> None:
    off = await make_hub()
    assert "subs" not in (await (await raw_client(off)).command("connect", user("alice")))["connect"]
    on = await make_hub(user_subscribe_to_personal=True)
    assert list((await (await raw_client(on)).command("connect", user("alice")))["connect"]["subs"]) == [
        "#alice"
    ]


class Events(ClientEventHandler):  # type: ignore[misc]
    def __init__(self) -> None:
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def on_subscribed(self, ctx: Any) -> None:
        await self.events.put(("subscribed", ctx.channel))

    async def on_publication(self, ctx: Any) -> None:
        await self.events.put(("pub", (ctx.channel, ctx.pub.data)))

    async def on_disconnected(self, ctx: Any) -> None:
        await self.events.put(("disconnected", ctx.code))

    async def next(self, kind: str) -> Any:
        async with asyncio.timeout(TIMEOUT):
            while True:
                event, value = await self.events.get()
                if event == kind:
                    return value


async def test_the_official_sdk_gets_the_personal_subscription_with_no_code(
    make_hub: HubFactory, sdk: Any
) -> None:
    hub = await make_hub(user_subscribe_to_personal=True, user_personal_channel_namespace="personal")
    events = Events()
    client = sdk(hub, token=token("alice"), events=events)
    await client.connect()
    assert await events.next("subscribed") == "personal:#alice"
    await hub.sb.publish("personal:#alice", {"for": "alice"})
    assert await events.next("pub") == ("personal:#alice", {"for": "alice"})


@pytest.mark.parametrize("name", ["a,b", "a#b", "x" * 250, "has space"])
async def test_a_user_id_the_grammar_cannot_carry_gets_no_personal_channel(
    make_hub: HubFactory, raw_client: Any, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    hub = await make_hub(user_subscribe_to_personal=True, user_personal_channel_namespace="personal")
    with caplog.at_level(logging.WARNING, logger="switchboard.personal"):
        for _ in range(3):
            reply = await (await raw_client(hub)).command("connect", user(name))
            assert "subs" not in reply["connect"]  # connected, with no personal channel (and none of others')
    lines = [r for r in caplog.records if "cannot name a personal channel" in r.getMessage()]
    # one line per refused connect, no traceback (within hub.logs.log_limited's burst; conftest resets it)
    assert len(lines) == 3 and not any(line.exc_info for line in lines)


def test_the_channel_and_its_user_map_both_ways() -> None:
    unnamed = PersonalChannels(Config())
    assert unnamed.channel("alice") == "#alice" and unnamed.user_of("#alice") == "alice"
    assert unnamed.channel("a:b") is None  # "#a:b" would be the namespace "#a"
    named = PersonalChannels(hub_config(user_personal_channel_namespace="personal"))
    assert named.channel("a:b") == "personal:#a:b" and named.user_of("personal:#a:b") == "a:b"
    for other in ("personal:#a,b", "personal:#", "chat:#alice", "personal:x#alice", "#alice"):
        assert named.user_of(other) is None, other
    assert named.channel("") is None


USER_IDS = st.one_of(
    st.text(max_size=260),
    st.text(alphabet=st.sampled_from("ab:#,$ \t\u00a0\u2003\x00é"), max_size=8),
    st.sampled_from(["alice", "a:b", "$x", "a,b", "#", ",", "x" * 244, "x" * 245, "x" * 254, "x" * 255]),
)
PERSONAL_OPTIONS = {
    namespace: PersonalChannels(hub_config(user_personal_channel_namespace=namespace))
    for namespace in ("", "personal")
}


@given(user=USER_IDS, namespace=st.sampled_from(["", "personal"]))
def test_the_quick_check_agrees_with_the_channel_grammar(user: str, namespace: str) -> None:
    """``channel``/``parsed``/``user_of`` decide without parsing; they must say what the parser says."""
    personal = PERSONAL_OPTIONS[namespace]
    name = personal.prefix + user
    try:
        parsed = parse_channel(name)
        expected = parsed.namespace == namespace and parsed.allowed_users == (user,) and not parsed.private
    except InvalidChannel:
        expected = False
    assert (personal.channel(user) == name) is expected
    assert (personal.channel(user) is None) is not expected
    assert (personal.user_of(name) == user) is expected
    if expected:
        assert personal.parsed(user) == parse_channel(name)


async def test_a_single_connection_per_user_the_newest_wins(make_hub: HubFactory, raw_client: Any) -> None:
    hub = await make_hub(
        user_subscribe_to_personal=True,
        user_personal_channel_namespace="personal",
        user_personal_single_connection=True,
    )
    first = await raw_client(hub, connect=user("alice"))
    bob = await raw_client(hub, connect=user("bob"))
    acme_alice = await raw_client(hub, connect=user("alice", tenant="acme"))
    second = await raw_client(hub, connect=user("alice"))
    assert await first.closed() == (3504, "connection limit")
    third = await raw_client(hub, connect=user("alice"))
    assert await second.closed() == (3504, "connection limit")
    for alive in (third, bob, acme_alice):
        assert "rpc" in await alive.command("rpc", {"method": "inbox.counts"})
    anonymous = [await raw_client(hub, connect={}) for _ in range(2)]  # anonymous ones are not limited
    for client in anonymous:
        assert "error" in await client.command("rpc", {"method": "inbox.counts"})  # 103, still connected
