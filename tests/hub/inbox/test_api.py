"""The inbox's server API methods (``notify``, ``inbox_list``, ``inbox_counts``, ``inbox_mark``,
``preferences``, ``notification_status``) and ``Switchboard.notify``: results, tenant-bound keys, audiences
of a channel, and garbage. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from hub.codes import ClientError
from tests.hub.inbox.conftest import ACME_KEY, InboxHubFactory, api, result, rpc_data, user


async def test_notify_list_counts_mark_and_preferences(inbox_hub: InboxHubFactory) -> None:
    hub = await inbox_hub()
    sent = await result(
        hub,
        "notify",
        {"recipients": ["alice", "bob"], "category": "comment", "data": {"n": 1}, "title": "hi"},
    )
    assert sent["deduplicated"] is False and sent["notification_id"] > 0
    assert [(r["user"], r["outcome"], r["channels"]) for r in sent["recipients"]] == [
        ("alice", "created", ["in_app", "webhook"]),
        ("bob", "created", ["in_app", "webhook"]),
    ]
    page = await result(hub, "inbox_list", {"user": "alice", "limit": 5})
    [item] = page["items"]
    assert (item["id"], item["title"], item["data"], item["read_at"]) == (
        sent["recipients"][0]["item_id"],
        "hi",
        {"n": 1},
        None,
    )
    assert page["next_cursor"] is None and page["head_cursor"]
    marked = await result(hub, "inbox_mark", {"user": "alice", "action": "interacted", "ids": [item["id"]]})
    assert marked == {"changed": 1, "counts": {"unread": 0, "unseen": 0, "total": 1, "version": 2}}
    assert await result(hub, "inbox_counts", {"user": "alice"}) == marked["counts"]
    assert (await result(hub, "inbox_list", {"user": "alice", "status": "interacted"}))["items"][0][
        "interacted_at"
    ]
    assert await result(hub, "inbox_counts", {"user": "bob"}) == {
        "unread": 1,
        "unseen": 1,
        "total": 1,
        "version": 1,
    }
    prefs = {"channels": {"in_app": False}, "categories": {"security": {"channels": {"in_app": True}}}}
    stored = await result(hub, "preferences", {"user": "bob", "set": prefs})
    assert stored == {
        "preferences": {
            "channels": {"in_app": False},
            "categories": {"security": {"channels": {"in_app": True}}},
        }
    }
    assert await result(hub, "preferences", {"user": "bob"}) == stored
    again = await result(hub, "notify", {"recipients": ["bob"], "category": "comment"})
    assert again["recipients"][0]["outcome"] == "skipped" and again["recipients"][0]["item_id"] is None
    status = await result(hub, "notification_status", {"notification_id": again["notification_id"]})
    assert status["summary"]["in_app"] == {"skipped": 1} and status["category"] == "comment"
    security = await result(hub, "notify", {"recipients": ["bob"], "category": "security"})
    assert security["recipients"][0]["outcome"] == "created"


async def test_notify_from_python(inbox_hub: InboxHubFactory) -> None:
    hub = await inbox_hub()
    res = await hub.sb.notify("comment", ["alice"], tenant="acme", data={"x": 1}, dedupe_key="once")
    assert [r.user for r in res.recipients] == ["alice"]
    assert (await hub.sb.notify("comment", ["alice"], tenant="acme", dedupe_key="once")).deduplicated
    assert (await hub.sb.inbox.counts("acme", "alice")).total == 1
    with pytest.raises(ClientError) as bad:
        await hub.sb.notify("not a category", ["alice"])
    assert bad.value.code == 107 and "category" in bad.value.message
    with pytest.raises(ClientError):
        await hub.sb.notify("comment", [])


async def test_a_tenant_bound_key_acts_on_its_tenant_only(
    inbox_hub: InboxHubFactory, raw_client: Any
) -> None:
    hub = await inbox_hub()
    sent = await result(hub, "notify", {"recipients": ["alice"], "category": "c"}, key=ACME_KEY)
    assert (await result(hub, "inbox_counts", {"user": "alice", "tenant": "acme"}))["total"] == 1
    assert (await result(hub, "inbox_counts", {"user": "alice"}))["total"] == 0
    assert (await result(hub, "inbox_counts", {"user": "alice"}, key=ACME_KEY))["total"] == 1
    for method, params in (
        ("notify", {"recipients": ["alice"], "category": "c", "tenant": ""}),
        ("inbox_list", {"user": "alice", "tenant": "other"}),
        ("inbox_counts", {"user": "alice", "tenant": ""}),
        ("inbox_mark", {"user": "alice", "action": "read", "all": True, "tenant": "x"}),
        ("preferences", {"user": "alice", "tenant": ""}),
        ("notification_status", {"notification_id": sent["notification_id"], "tenant": ""}),
    ):
        assert (await api(hub, method, params, key=ACME_KEY))["error"]["code"] == 103, method
    # the default tenant's status call cannot see acme's notification, nor acme's key the default's
    other = await result(hub, "notify", {"recipients": ["alice"], "category": "c"})
    err = await api(hub, "notification_status", {"notification_id": sent["notification_id"]})
    assert err["error"]["code"] == 107
    err = await api(hub, "notification_status", {"notification_id": other["notification_id"]}, key=ACME_KEY)
    assert err["error"]["code"] == 107
    acme_alice = await raw_client(hub, connect=user("alice", tenant="acme"))
    assert (await rpc_data(acme_alice, "inbox.counts"))["total"] == 1


async def test_an_audience_is_everyone_subscribed_to_a_channel_when_the_notify_runs(
    inbox_hub: InboxHubFactory, raw_client: Any
) -> None:
    hub = await inbox_hub()
    for name in ("alice", "bob", "bob"):
        client = await raw_client(hub, connect=user(name))
        assert "subscribe" in await client.command("subscribe", {"channel": "lobby"})
    anonymous = await raw_client(hub, connect={})
    assert "subscribe" in await anonymous.command("subscribe", {"channel": "lobby"})
    elsewhere = await raw_client(hub, connect=user("dave", tenant="acme"))
    assert "subscribe" in await elsewhere.command("subscribe", {"channel": "lobby"})
    sent = await result(hub, "notify", {"channel": "lobby", "recipients": ["carol", "bob"], "category": "c"})
    assert [r["user"] for r in sent["recipients"]] == ["carol", "bob", "alice"]
    empty = await result(hub, "notify", {"channel": "chat:nobody", "category": "c"})
    assert empty == {"notification_id": 0, "deduplicated": False, "recipients": []}
    assert (await api(hub, "notify", {"channel": "nope:room", "category": "c"}))["error"]["code"] == 102
    for bad in ("", "lobby with space", 7, ["lobby"]):
        assert (await api(hub, "notify", {"channel": bad, "category": "c"}))["error"]["code"] == 107, bad
    res = await hub.sb.notify("c", channel="lobby", tenant="acme")
    assert [r.user for r in res.recipients] == ["dave"]


GARBAGE: list[tuple[str, Any]] = [
    ("notify", {}),
    ("notify", {"recipients": "alice", "category": "c"}),
    ("notify", {"recipients": [], "category": "c"}),
    ("notify", {"recipients": ["alice"], "category": ""}),
    ("notify", {"recipients": ["alice"] * 2, "category": "c"}),
    ("notify", {"recipients": [f"u{i}" for i in range(10001)], "category": "c"}),
    ("notify", {"recipients": [""], "category": "c"}),
    ("notify", {"recipients": [7], "category": "c"}),
    ("notify", {"recipients": ["a\x00b"], "category": "c"}),
    ("notify", {"recipients": ["alice"], "category": "c", "data": []}),
    ("notify", {"recipients": ["alice"], "category": "c", "data": {"x": "y" * 20000}}),
    ("notify", {"recipients": ["alice"], "category": "c", "title": "t" * 513}),
    ("notify", {"recipients": ["alice"], "category": "c", "actions": [{"id": "a"}]}),
    ("notify", {"recipients": ["alice"], "category": "c", "actions": [{"id": "a", "label": "b"}] * 6}),
    ("notify", {"recipients": ["alice"], "category": "c", "group_key": "g"}),
    ("notify", {"recipients": ["alice"], "category": "c", "dedupe_window": -1}),
    ("notify", {"recipients": ["alice"], "category": "c", "expire_at": 1.0}),
    ("notify", {"recipients": ["alice"], "category": "c", "channels": ["sms"]}),
    ("notify", {"recipients": ["alice"], "category": "c", "unknown": 1}),
    ("notify", {"recipients": ["alice"], "category": "c", "channel": None, "\n\x1b": 2}),
    ("inbox_list", {}),
    ("inbox_list", {"user": ""}),
    ("inbox_list", {"user": 7}),
    ("inbox_list", {"user": "alice", "limit": 500}),
    ("inbox_list", {"user": "alice", "cursor": "zz"}),
    ("inbox_counts", {"user": "alice", "limit": 1}),
    ("inbox_mark", {"user": "alice"}),
    ("inbox_mark", {"user": "alice", "action": "read", "ids": [1], "up_to": "x"}),
    ("preferences", {"user": "alice", "set": {"channels": {"pager": True}}}),
    ("preferences", {"user": "alice", "set": 1}),
    ("preferences", {"user": "alice", "get": True}),
    ("notification_status", {}),
    ("notification_status", {"notification_id": "1"}),
    ("notification_status", {"notification_id": 1, "limit": 1001}),
    ("notification_status", {"notification_id": 10**9}),
    ("notification_status", {"notification_id": 1, "after_user": 5}),
    ("notification_status", {"notification_id": 1, "extra": 5}),
]


async def test_garbage_is_refused_and_writes_nothing(
    inbox_hub: InboxHubFactory, caplog: pytest.LogCaptureFixture
) -> None:
    hub = await inbox_hub()
    with caplog.at_level(logging.INFO, logger="switchboard"):
        for method, params in GARBAGE:
            body = await api(hub, method, params)
            assert body.get("error", {}).get("code") == 107, (method, params, body)
        batch = await api(hub, "batch", {"commands": [{m: p} for m, p in GARBAGE[:5]]})
    assert [r["error"]["code"] for r in batch["replies"]] == [107] * 5
    assert await result(hub, "inbox_counts", {"user": "alice"}) == {
        "unread": 0,
        "unseen": 0,
        "total": 0,
        "version": 0,
    }
    assert not any(r.exc_info for r in caplog.records)
    assert not any("\x1b" in r.getMessage() or "\x00" in r.getMessage() for r in caplog.records)
