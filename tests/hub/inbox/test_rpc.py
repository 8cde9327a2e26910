"""The inbox's RPC methods (``inbox.list``, ``inbox.counts``, ``inbox.mark``, ``inbox.preferences.get`` /
``set``) over the Centrifuge ``rpc`` command, on SQLite and on PostgreSQL: what they answer, who may call
them, and garbage."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub import codes
from hub.app import Switchboard
from hub.hooks import Hooks
from tests.conftest import test_config as hub_config
from tests.conftest import token
from tests.hub.inbox.conftest import InboxHubFactory, rpc, rpc_data, user


async def test_list_counts_mark_and_preferences(inbox_hub: InboxHubFactory, raw_client: Any) -> None:
    hub = await inbox_hub()
    sb = hub.sb
    for i in range(3):
        await sb.notify("comment", ["alice"], data={"i": i}, title=f"t{i}")
    await sb.notify("billing", ["alice"], data={"i": 3})
    await sb.notify("comment", ["bob"], data={"bob": True})
    alice = await raw_client(hub, connect=user("alice"))
    assert await rpc_data(alice, "inbox.counts") == {"unread": 4, "unseen": 4, "total": 4, "version": 4}

    first = await rpc_data(alice, "inbox.list", {"limit": 3})
    assert [i["data"] for i in first["items"]] == [{"i": 3}, {"i": 2}, {"i": 1}]  # newest first
    assert first["items"][1]["title"] == "t2" and first["items"][1]["count"] == 1
    rest = await rpc_data(alice, "inbox.list", {"limit": 3, "cursor": first["next_cursor"]})
    assert [i["data"] for i in rest["items"]] == [{"i": 0}] and rest["next_cursor"] is None
    comments = await rpc_data(alice, "inbox.list", {"categories": ["comment"]})
    assert [i["data"]["i"] for i in comments["items"]] == [2, 1, 0]

    newest = first["items"][0]["id"]
    marked = await rpc_data(alice, "inbox.mark", {"action": "read", "ids": [newest]})
    assert marked == {"changed": 1, "counts": {"unread": 3, "unseen": 3, "total": 4, "version": 5}}
    unread = await rpc_data(alice, "inbox.list", {"status": "unread"})
    assert newest not in [i["id"] for i in unread["items"]]
    seen = await rpc_data(alice, "inbox.mark", {"action": "seen", "up_to": first["head_cursor"]})
    assert seen["changed"] == 3 and seen["counts"]["unseen"] == 0
    archived = await rpc_data(
        alice, "inbox.mark", {"action": "archived", "all": True, "categories": ["billing"]}
    )
    assert archived["counts"] == {"unread": 3, "unseen": 0, "total": 3, "version": 7}
    nothing = await rpc_data(
        alice, "inbox.mark", {"action": "archived", "all": True, "categories": ["billing"]}
    )
    assert nothing == {"changed": 0, "counts": archived["counts"]}

    assert await rpc_data(alice, "inbox.preferences.get") == {
        "preferences": {"channels": {}, "categories": {}}
    }
    prefs = {"channels": {"email": False}, "categories": {"comment": {"enabled": False, "channels": {}}}}
    assert await rpc_data(alice, "inbox.preferences.set", {"preferences": prefs}) == {"preferences": prefs}
    assert await rpc_data(alice, "inbox.preferences.get") == {"preferences": prefs}
    skipped = await sb.notify("comment", ["alice"])
    assert [(r.user, str(r.outcome)) for r in skipped.recipients] == [("alice", "skipped")]
    assert (await rpc_data(alice, "inbox.counts"))["total"] == 3
    # bob's inbox was never touched by alice's calls
    bob = await raw_client(hub, connect=user("bob"))
    assert await rpc_data(bob, "inbox.counts") == {"unread": 1, "unseen": 1, "total": 1, "version": 1}


async def test_tenant_and_user_come_from_the_connection(inbox_hub: InboxHubFactory, raw_client: Any) -> None:
    hub = await inbox_hub()
    await hub.sb.notify("comment", ["alice"], tenant="acme")
    acme_alice = await raw_client(hub, connect=user("alice", tenant="acme"))
    alice = await raw_client(hub, connect=user("alice"))
    assert (await rpc_data(acme_alice, "inbox.counts"))["total"] == 1
    assert (await rpc_data(alice, "inbox.counts"))["total"] == 0
    page = await rpc_data(acme_alice, "inbox.list")
    # a cursor of acme's alice is no cursor for the default tenant's alice, and params cannot name others
    assert (await rpc(alice, "inbox.list", {"cursor": page["head_cursor"]}))["error"]["code"] == 107
    assert (await rpc(alice, "inbox.counts", {"user": "bob"}))["error"]["code"] == 107
    ids = [page["items"][0]["id"]]
    assert await rpc_data(alice, "inbox.mark", {"action": "read", "ids": ids}) == {
        "changed": 0,
        "counts": {"unread": 0, "unseen": 0, "total": 0, "version": 0},
    }
    assert (await rpc_data(acme_alice, "inbox.counts"))["unread"] == 1


async def test_anonymous_connections_are_refused(inbox_hub: InboxHubFactory, raw_client: Any) -> None:
    hub = await inbox_hub()
    anonymous = await raw_client(hub, connect={})
    for method in (
        "inbox.list",
        "inbox.counts",
        "inbox.mark",
        "inbox.preferences.get",
        "inbox.preferences.set",
    ):
        reply = await rpc(anonymous, method, {})
        assert reply["error"]["code"] == 103, (method, reply)


GARBAGE: list[tuple[str, Any]] = [
    ("inbox.list", [1, 2]),
    ("inbox.list", "all"),
    ("inbox.list", 7),
    ("inbox.list", {"limit": 0}),
    ("inbox.list", {"limit": 101}),
    ("inbox.list", {"limit": True}),
    ("inbox.list", {"limit": "5"}),
    ("inbox.list", {"status": "new"}),
    ("inbox.list", {"archived": True}),
    ("inbox.list", {"categories": ["x"] * 17}),
    ("inbox.list", {"categories": ["bad category"]}),
    ("inbox.list", {"categories": "comment"}),
    ("inbox.list", {"cursor": "not-a-cursor"}),
    ("inbox.list", {"cursor": "A" * 5000}),
    ("inbox.list", {"cursor": 12}),
    ("inbox.list", {"user": "bob"}),
    ("inbox.list", {"\x00\n\x1b[31m": 1}),
    ("inbox.counts", {"x": 1}),
    ("inbox.mark", {}),
    ("inbox.mark", {"action": "read"}),
    ("inbox.mark", {"action": "burn", "all": True}),
    ("inbox.mark", {"action": "read", "ids": [1], "all": True}),
    ("inbox.mark", {"action": "read", "ids": [0]}),
    ("inbox.mark", {"action": "read", "ids": [-1]}),
    ("inbox.mark", {"action": "read", "ids": [2**63]}),
    ("inbox.mark", {"action": "read", "ids": ["1"]}),
    ("inbox.mark", {"action": "read", "ids": [1, 1]}),
    ("inbox.mark", {"action": "read", "ids": list(range(1, 1002))}),
    ("inbox.mark", {"action": "read", "all": "yes"}),
    ("inbox.mark", {"action": "read", "up_to": "forged"}),
    ("inbox.preferences.get", {"user": "bob"}),
    ("inbox.preferences.set", {}),
    ("inbox.preferences.set", {"preferences": []}),
    ("inbox.preferences.set", {"preferences": {"channels": {"sms": True}}}),
    ("inbox.preferences.set", {"preferences": {"channels": {"email": "no"}}}),
    ("inbox.preferences.set", {"preferences": {"categories": {f"c{i}": {} for i in range(257)}}}),
    ("inbox.preferences.set", {"preferences": {"categories": {"c": {"enabled": 1}}}}),
    ("inbox.preferences.set", {"preferences": {"x": 1}}),
    ("inbox.preferences.set", {"preferences": {}, "user": "bob"}),
]


async def test_garbage_is_refused_with_107_and_changes_nothing(
    inbox_hub: InboxHubFactory, raw_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    hub = await inbox_hub()
    await hub.sb.notify("comment", ["alice"])
    alice = await raw_client(hub, connect=user("alice"))
    before = await rpc_data(alice, "inbox.counts")
    with caplog.at_level(logging.INFO, logger="switchboard"):
        for method, data in GARBAGE:
            reply = await rpc(alice, method, data)
            assert reply["error"]["code"] == 107, (method, data, reply)
            assert reply["error"]["message"].startswith("bad request"), reply
    assert await rpc_data(alice, "inbox.counts") == before
    assert await rpc_data(alice, "inbox.preferences.get") == {
        "preferences": {"channels": {}, "categories": {}}
    }
    failures = [r for r in caplog.records if r.getMessage().startswith("rpc failed: 107")]
    assert 0 < len(failures) <= len(GARBAGE)  # at most one line each (the session's policy), no traceback
    assert not any(r.exc_info for r in caplog.records)
    assert not any("\x00" in r.getMessage() or "\x1b" in r.getMessage() for r in caplog.records)


async def test_a_page_is_cut_to_fit_the_connection_s_write_bound(
    inbox_hub: InboxHubFactory, raw_client: Any
) -> None:
    hub = await inbox_hub(client_queue_max_size=65536)  # a reply may take 32 KiB
    big = "x" * 15000
    for i in range(5):
        await hub.sb.notify("comment", ["alice"], data={"i": i, "big": big})
    alice = await raw_client(hub, connect=user("alice"))
    seen: list[int] = []
    cursor = None
    while True:
        page = await rpc_data(alice, "inbox.list", {"limit": 20, **({"cursor": cursor} if cursor else {})})
        assert 1 <= len(page["items"]) <= 2
        seen += [i["data"]["i"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [4, 3, 2, 1, 0]
    assert (await rpc_data(alice, "inbox.counts"))["total"] == 5  # still connected


async def test_the_hub_s_methods_cannot_be_shadowed(inbox_hub: InboxHubFactory, raw_client: Any) -> None:
    hub = await inbox_hub()
    with pytest.raises(ValueError, match="hub's own"):
        hub.sb.rpc("inbox.counts")
    with pytest.raises(ValueError, match="hub's own"):
        hub.sb.rpc("inbox.anything")

    async def shadow(ctx: Any) -> Any:
        return {"shadowed": True}

    with pytest.raises(ValueError, match="hub's own"):
        Switchboard(hub_config(), hooks=Hooks(rpc={"inbox.list": shadow}))
    hub.sb.hooks.rpc["inbox.counts"] = shadow  # behind the hub's back: the hub's method still answers

    @hub.sb.rpc("inboxes")  # a name outside the prefix is the application's
    async def inboxes(ctx: Any) -> Any:
        return {"mine": ctx.user}

    alice = await raw_client(hub, connect={"token": token("alice")})
    assert await rpc_data(alice, "inbox.counts") == {"unread": 0, "unseen": 0, "total": 0, "version": 0}
    assert await rpc_data(alice, "inboxes") == {"mine": "alice"}


# -- structured-but-wrong data, as the protocol fuzzers of issue 10 send it --------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_fields = st.sampled_from(
    ["limit", "cursor", "status", "archived", "categories", "action", "ids", "up_to", "all", "preferences",
     "channels", "enabled", "user"]
)  # fmt: skip
_data = st.one_of(_json, st.dictionaries(_fields, _json, max_size=4))
_METHODS = ["inbox.list", "inbox.counts", "inbox.mark", "inbox.preferences.get", "inbox.preferences.set"]


class Sink:
    """A transport that keeps what it was given."""

    name = "sink"

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def write_messages(self, messages: list[bytes]) -> int:
        self.frames.extend(messages)
        return 0

    def close(self, code: int, reason: str) -> None:
        self.closed = self.closed or (code, reason)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=st.lists(st.tuples(st.sampled_from(_METHODS), _data), min_size=1, max_size=8))
def test_random_data_gets_an_answer_or_107_never_a_crash(calls: list[tuple[str, Any]]) -> None:
    asyncio.run(_random_calls(calls))


async def _random_calls(calls: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        sb = Switchboard(hub_config(data_dir=data_dir, user_subscribe_to_personal=True))
        await sb.start()
        try:
            await sb.notify("comment", ["ann"])
            sink = Sink()
            client = sb.node.new_session(sink, scope={})
            await client.handle_frame(orjson.dumps({"id": 1, "connect": {"token": token("ann")}}))
            for n, (method, data) in enumerate(calls, start=2):
                await client.handle_frame(orjson.dumps({"id": n, "rpc": {"method": method, "data": data}}))
            sb.node.scheduler.flush()
            replies = [orjson.loads(line) for frame in sink.frames for line in frame.split(b"\n") if line]
            answers = {r["id"]: r for r in replies if r.get("id", 0) >= 2}
            assert sorted(answers) == list(range(2, len(calls) + 2)), replies
            for answer in answers.values():
                assert "rpc" in answer or answer["error"]["code"] == 107, answer
            assert sink.closed is None
            counts = await sb.inbox.counts("", "ann")
            assert counts.total in (0, 1) and counts.unread <= counts.total
            client.disconnect(codes.CONNECTION_CLOSED.error())
            await sb.node.end_session(client)
        finally:
            await sb.stop()
