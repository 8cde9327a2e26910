"""Every change of a user's inbox reaches every connection of that user on the personal channel: the new
counts with their version, and for a notify the new item; the official SDK keeps a live badge from them.
In-app ``delivered`` is recorded for recipients with a connected device. On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from tests.conftest import TIMEOUT, RunningHub, http_client, token
from tests.hub.inbox.conftest import Badge, InboxHubFactory, api, personal_push, result, rpc_data, user
from tests.nodes import eventually


async def test_a_notify_pushes_the_item_and_counts_to_every_device(
    inbox_hub: InboxHubFactory, raw_client: Any
) -> None:
    hub = await inbox_hub()
    phone = await raw_client(hub, connect=user("alice"))
    laptop = await raw_client(hub, connect=user("alice"))
    bob = await raw_client(hub, connect=user("bob"))
    sent = await result(
        hub,
        "notify",
        {
            "recipients": ["alice"],
            "category": "comment",
            "title": "New comment",
            "body": "two\nlines",
            "url": "https://example.com/c/1",
            "actions": [{"id": "open", "label": "Open"}],
            "data": {"post": 7},
            "group_key": "post-7",
            "group_window": 600,
        },
    )
    item_id = sent["recipients"][0]["item_id"]
    for device in (phone, laptop):
        pub = await personal_push(device, "alice")
        assert pub["tags"] == {"notification_id": str(sent["notification_id"])}
        assert pub["data"] == {
            "type": "inbox.notification",
            "counts": {"unread": 1, "unseen": 1, "total": 1, "version": 1},
            "item": {
                "id": item_id,
                "outcome": "created",
                "notification_id": sent["notification_id"],
                "category": "comment",
                "title": "New comment",
                "body": "two\nlines",
                "url": "https://example.com/c/1",
                "actions": [{"id": "open", "label": "Open", "url": ""}],
                "data": {"post": 7},
                "group_key": "post-7",
                "expire_at": None,
            },
        }
    again = await result(
        hub,
        "notify",
        {"recipients": ["alice"], "category": "comment", "data": {"post": 7, "n": 2}, "group_key": "post-7",
         "group_window": 600},
    )  # fmt: skip
    pub = await personal_push(phone, "alice")
    assert pub["data"]["item"]["id"] == item_id and pub["data"]["item"]["outcome"] == "collapsed"
    assert pub["data"]["counts"] == {"unread": 1, "unseen": 1, "total": 1, "version": 2}
    assert again["recipients"][0]["outcome"] == "collapsed"
    assert (await personal_push(laptop, "alice"))["data"]["counts"]["version"] == 2
    # a mark from one device reaches every device with what was asked and the new counts
    await rpc_data(laptop, "inbox.mark", {"action": "read", "ids": [item_id]})
    for device in (phone, laptop):
        pub = await personal_push(device, "alice")
        assert pub["data"] == {
            "type": "inbox.marked",
            "counts": {"unread": 0, "unseen": 0, "total": 1, "version": 3},
            "mark": {"action": "read", "ids": [item_id]},
            "changed": 1,
        }
        assert "tags" not in pub
    # a mark that changes nothing pushes nothing; bob got nothing of alice's
    await result(hub, "inbox_mark", {"user": "alice", "action": "read", "all": True})
    await result(hub, "inbox_mark", {"user": "alice", "action": "unread", "all": True})
    pub = await personal_push(phone, "alice")
    assert pub["data"]["mark"] == {"action": "unread", "all": True} and pub["data"]["counts"]["version"] == 4
    await hub.sb.notify("comment", ["bob"])
    assert (await personal_push(bob, "bob"))["data"]["counts"]["version"] == 1


async def test_the_sdk_s_badge_stays_exact_through_other_devices_marks(
    inbox_hub: InboxHubFactory, sdk: Any
) -> None:
    hub = await inbox_hub()
    badge = Badge()
    client = sdk(hub, token=token("alice"), events=badge)
    other = sdk(hub, token=token("alice"))
    await client.connect()
    await other.connect()
    await client.ready(TIMEOUT)
    await other.ready(TIMEOUT)
    counts = (await client.rpc("inbox.counts", {})).data
    assert counts == {"unread": 0, "unseen": 0, "total": 0, "version": 0}
    ids = [(await hub.sb.notify("comment", ["alice"], title=f"n{i}")).recipients[0].item_id for i in range(3)]
    await badge.shows(unread=3, unseen=3, total=3, version=3)
    assert [i["title"] for i in badge.items] == ["n0", "n1", "n2"]
    await other.rpc("inbox.mark", {"action": "seen", "all": True})
    await badge.shows(unread=3, unseen=0, version=4)
    await other.rpc("inbox.mark", {"action": "read", "ids": ids[:2]})
    await badge.shows(unread=1, unseen=0, total=3, version=5)
    await other.rpc("inbox.mark", {"action": "archived", "ids": [ids[2]]})
    await badge.shows(unread=0, total=2, version=6)
    assert (await client.rpc("inbox.counts", {})).data == badge.counts


async def test_an_offline_user_finds_the_notification_later(
    inbox_hub: InboxHubFactory, raw_client: Any
) -> None:
    hub = await inbox_hub()
    sent = await hub.sb.notify("comment", ["carol"], title="while you were away")
    status = await result(hub, "notification_status", {"notification_id": sent.notification_id})
    assert status["summary"]["in_app"] == {"sent": 1}  # stored, not delivered: no device was connected
    carol = await raw_client(hub, connect=user("carol"))
    page = await rpc_data(carol, "inbox.list")
    assert [i["title"] for i in page["items"]] == ["while you were away"]
    assert await rpc_data(carol, "inbox.counts") == {"unread": 1, "unseen": 1, "total": 1, "version": 1}


async def _in_app(hub: RunningHub, notification_id: int) -> dict[str, str]:
    status = await result(hub, "notification_status", {"notification_id": notification_id})
    return {
        r["user"]: next(d["state"] for d in r["deliveries"] if d["channel"] == "in_app")
        for r in status["recipients"]
    }


async def test_delivered_means_a_connected_device_got_the_push_and_opt_outs_are_recorded(
    inbox_hub: InboxHubFactory, raw_client: Any
) -> None:
    hub = await inbox_hub()
    await result(hub, "preferences", {"user": "bob", "set": {"categories": {"comment": {"enabled": False}}}})
    alice = await raw_client(hub, connect=user("alice"))
    await raw_client(hub, connect=user("bob"))
    sent = await hub.sb.notify("comment", ["alice", "bob", "carol"])
    nid = sent.notification_id
    await personal_push(alice, "alice")

    async def alice_delivered() -> bool:
        return (await _in_app(hub, nid))["alice"] == "delivered"

    await eventually(alice_delivered)
    states = await _in_app(hub, nid)
    assert states == {"alice": "delivered", "bob": "skipped", "carol": "sent"}
    status = await result(hub, "notification_status", {"notification_id": nid, "limit": 2})
    assert [r["user"] for r in status["recipients"]] == ["alice", "bob"] and status[
        "next_after_user"
    ] == "bob"
    bob = next(r for r in status["recipients"] if r["user"] == "bob")
    assert {d["channel"]: (d["state"], d["error"]) for d in bob["deliveries"]} == {
        "in_app": ("skipped", "category preference"),
        "webhook": ("skipped", "category preference"),
        "email": ("skipped", "category preference"),
    }
    rest = await result(hub, "notification_status", {"notification_id": nid, "after_user": "bob"})
    assert [r["user"] for r in rest["recipients"]] == ["carol"] and rest["next_after_user"] is None
    assert status["summary"]["in_app"] == {"delivered": 1, "sent": 1, "skipped": 1}
    await rpc_data(alice, "inbox.mark", {"action": "read", "all": True})
    assert (await _in_app(hub, nid))["alice"] == "read"
    async with http_client(timeout=TIMEOUT) as http:
        metrics = (await http.get(f"{hub.http}/metrics")).text
    for line in (
        'switchboard_inbox_notifications_total{outcome="created"} 2.0',
        'switchboard_inbox_notifications_total{outcome="skipped"} 1.0',
        'switchboard_inbox_deliveries_total{channel="in_app",state="sent"} 2.0',
        'switchboard_inbox_deliveries_total{channel="in_app",state="skipped"} 1.0',
        'switchboard_inbox_deliveries_total{channel="in_app",state="delivered"} 1.0',
        'switchboard_inbox_deliveries_total{channel="email",state="skipped"} 3.0',
    ):
        assert line in metrics, line


async def test_a_deduplicated_notify_pushes_nothing(inbox_hub: InboxHubFactory, raw_client: Any) -> None:
    hub = await inbox_hub()
    alice = await raw_client(hub, connect=user("alice"))
    first = await result(hub, "notify", {"recipients": ["alice"], "category": "c", "dedupe_key": "k"})
    repeat = await result(hub, "notify", {"recipients": ["alice"], "category": "c", "dedupe_key": "k"})
    assert repeat == {"notification_id": first["notification_id"], "deduplicated": True, "recipients": []}
    await hub.sb.notify("c", ["alice"])
    versions = [(await personal_push(alice, "alice"))["data"]["counts"]["version"] for _ in range(2)]
    assert versions == [1, 2]  # the repeat's would have come between them
    body = await api(hub, "inbox_counts", {"user": "alice"})
    assert body["result"]["total"] == 2
