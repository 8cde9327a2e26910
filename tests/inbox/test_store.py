"""The inbox store's behaviour, the same suite on SQLite and on PostgreSQL (``store_kind``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inbox.errors import InvalidCursor, InvalidInput, NotFound, SchemaError, StoreError
from inbox.model import (
    ArchivedFilter,
    Counts,
    DeliveryChannel,
    DeliveryState,
    ListQuery,
    Mark,
    MarkAction,
    Notification,
    Outcome,
    StatusFilter,
    TenantCounts,
)
from inbox.outbox import AttemptResult, Destination, OutboxEvent, RetryPolicy, TaskState, Topic, Verdict
from inbox.preferences import CategoryPolicy, CategoryPreference, PreferencePolicy, Preferences
from tests.inbox.conftest import Clock, MakeStore, Store
from tests.inbox.stored import execute, schema_versions, stored_counts, table_sizes

T = ""  # the default tenant


def note(*users: str, category: str = "comment", **kw: Any) -> Notification:
    return Notification(T, users, category, kw.pop("data", {"n": 1}), **kw)


async def everything(store: Store, user: str, tenant: str = T, **query: Any) -> list[int]:
    """Every item id of the user's listing, following cursors page by page."""
    ids: list[int] = []
    cursor = None
    while True:
        page = await store.list_items(tenant, user, ListQuery(limit=3, cursor=cursor, **query))
        ids += [i.id for i in page.items]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


# -- notify, list, counts ----------------------------------------------------------------------------


async def test_notify_stores_one_item_per_recipient_and_answers_their_counts(store: Store) -> None:
    first = await store.notify(note("alice", "bob", title="Hello", body="two\nlines", url="https://x"))
    assert not first.deduplicated
    assert [(r.user, r.outcome) for r in first.recipients] == [
        ("alice", Outcome.CREATED),
        ("bob", Outcome.CREATED),
    ]
    assert first.counts == {
        "alice": Counts(unread=1, unseen=1, total=1, version=1),
        "bob": Counts(unread=1, unseen=1, total=1, version=1),
    }
    second = await store.notify(note("alice", data={"n": 2}))
    assert second.counts["alice"] == Counts(2, 2, 2, 2)
    page = await store.list_items(T, "alice")
    assert [i.data for i in page.items] == [{"n": 2}, {"n": 1}]  # newest first
    assert page.items[1].title == "Hello" and page.items[1].body == "two\nlines"
    assert await store.counts(T, "alice") == Counts(2, 2, 2, 2)
    assert await store.counts(T, "nobody") == Counts(0, 0, 0, 0)
    assert await store.counts("other-tenant", "alice") == Counts(0, 0, 0, 0)


async def test_cursor_pages_cover_every_item_once_in_order(store: Store) -> None:
    for k in range(10):
        await store.notify(note("alice", data={"k": k}))
    ids = await everything(store, "alice")
    assert len(ids) == 10 and ids == sorted(ids, reverse=True)
    page = await store.list_items(T, "alice", ListQuery(limit=10))
    assert page.next_cursor is None and len(page.items) == 10


async def test_filters_by_status_archive_and_category(store: Store) -> None:
    a = (await store.notify(note("alice", category="comment"))).recipients[0].item_id
    b = (await store.notify(note("alice", category="mention"))).recipients[0].item_id
    c = (await store.notify(note("alice", category="mention"))).recipients[0].item_id
    assert a and b and c
    await store.mark(T, "alice", Mark(MarkAction.READ, ids=(b,)))
    await store.mark(T, "alice", Mark(MarkAction.ARCHIVED, ids=(c,)))
    assert await everything(store, "alice") == [b, a]
    assert await everything(store, "alice", status=StatusFilter.UNREAD) == [a]
    assert await everything(store, "alice", status=StatusFilter.READ) == [b]
    assert await everything(store, "alice", archived=ArchivedFilter.ONLY) == [c]
    assert await everything(store, "alice", archived=ArchivedFilter.INCLUDE) == [c, b, a]
    assert await everything(store, "alice", categories=("mention",)) == [b]
    assert await store.counts(T, "alice") == Counts(unread=1, unseen=1, total=2, version=5)


# -- marks ---------------------------------------------------------------------------------------------


async def test_marks_move_counts_and_keep_read_implies_seen(store: Store) -> None:
    ids = [(await store.notify(note("alice"))).recipients[0].item_id for _ in range(4)]
    assert all(ids)
    r = await store.mark(T, "alice", Mark(MarkAction.SEEN, ids=(ids[0], ids[1])))
    assert (r.changed, r.counts) == (2, Counts(unread=4, unseen=2, total=4, version=5))
    again = await store.mark(T, "alice", Mark(MarkAction.SEEN, ids=(ids[0],)))
    assert (again.changed, again.counts.version) == (0, 5)  # nothing changed: no new version
    r = await store.mark(T, "alice", Mark(MarkAction.READ, ids=(ids[2],)))
    assert r.counts == Counts(unread=3, unseen=1, total=4, version=6)
    r = await store.mark(T, "alice", Mark(MarkAction.UNSEEN, ids=(ids[2],)))  # unseen: also unread
    assert r.counts == Counts(unread=4, unseen=2, total=4, version=7)
    r = await store.mark(T, "alice", Mark(MarkAction.INTERACTED, ids=(ids[3],)))
    assert r.counts == Counts(unread=3, unseen=1, total=4, version=8)
    item = next(i for i in (await store.list_items(T, "alice")).items if i.id == ids[3])
    assert item.interacted_at and item.read_at and item.seen_at
    r = await store.mark(T, "alice", Mark(MarkAction.ARCHIVED, ids=(ids[0], ids[3])))
    assert r.counts == Counts(unread=2, unseen=1, total=2, version=9)
    r = await store.mark(T, "alice", Mark(MarkAction.UNARCHIVED, ids=(ids[0],)))
    assert r.counts == Counts(unread=3, unseen=1, total=3, version=10)
    r = await store.mark(T, "alice", Mark(MarkAction.UNREAD, everything=True))
    assert r.counts == await stored_counts(store, T, "alice")


async def test_mark_up_to_a_cursor_leaves_what_arrived_or_moved_up_since(store: Store) -> None:
    for _ in range(3):
        await store.notify(note("alice"))
    head = (await store.list_items(T, "alice")).head_cursor
    assert head is not None
    late = (await store.notify(note("alice"))).recipients[0].item_id
    r = await store.mark(T, "alice", Mark(MarkAction.READ, up_to=head))
    assert r.changed == 3 and r.counts.unread == 1
    assert await everything(store, "alice", status=StatusFilter.UNREAD) == [late]


async def test_marks_are_confined_to_the_user(store: Store) -> None:
    mine = (await store.notify(note("alice"))).recipients[0].item_id
    theirs = (await store.notify(note("bob"))).recipients[0].item_id
    assert mine and theirs
    r = await store.mark(T, "alice", Mark(MarkAction.READ, ids=(theirs,)))
    assert r.changed == 0
    assert (await store.counts(T, "bob")).unread == 1
    r = await store.mark("acme", "bob", Mark(MarkAction.READ, everything=True))
    assert r.changed == 0 and (await store.counts(T, "bob")).unread == 1


async def test_cursors_are_tamper_evident_and_bound_to_the_user(store: Store) -> None:
    for _ in range(3):
        await store.notify(note("alice", "bob"))
    page = await store.list_items(T, "alice", ListQuery(limit=1))
    assert page.next_cursor is not None and page.head_cursor is not None
    cursor = page.next_cursor
    with pytest.raises(InvalidCursor):
        await store.list_items(T, "bob", ListQuery(cursor=cursor))
    with pytest.raises(InvalidCursor):
        await store.list_items("acme", "alice", ListQuery(cursor=cursor))
    with pytest.raises(InvalidCursor):
        await store.mark(T, "bob", Mark(MarkAction.READ, up_to=page.head_cursor))
    for k in range(len(cursor)):
        flipped = cursor[:k] + ("A" if cursor[k] != "A" else "B") + cursor[k + 1 :]
        with pytest.raises(InvalidCursor):
            await store.list_items(T, "alice", ListQuery(cursor=flipped))
    for garbage in ["", "x", "!!!!", "A" * 28, "A" * 65, "\x00", "é" * 10]:
        with pytest.raises(InvalidCursor):
            await store.list_items(T, "alice", ListQuery(cursor=garbage))
    assert (await store.counts(T, "bob")).unread == 3


# -- dedupe and groups ---------------------------------------------------------------------------------


async def test_a_repeat_within_the_dedupe_window_answers_the_first_id_and_stores_nothing(
    store: Store, clock: Clock
) -> None:
    first = await store.notify(note("alice", dedupe_key="order-7", dedupe_window=60))
    sizes = await table_sizes(store)
    clock.advance(59)
    again = await store.notify(note("alice", "bob", dedupe_key="order-7", dedupe_window=60))
    assert again.deduplicated and again.notification_id == first.notification_id
    assert again.recipients == [] and again.counts == {}
    assert await table_sizes(store) == sizes
    assert await store.counts(T, "bob") == Counts()
    other_tenant = await store.notify(Notification("acme", ("alice",), "comment", dedupe_key="order-7"))
    assert not other_tenant.deduplicated
    clock.advance(2)
    later = await store.notify(note("alice", dedupe_key="order-7", dedupe_window=60))
    assert not later.deduplicated and later.notification_id != first.notification_id
    assert (await store.counts(T, "alice")).total == 2


async def test_a_group_collapses_within_its_window_with_count_and_latest_data(
    store: Store, clock: Clock
) -> None:
    group = {"group_key": "doc-1", "group_window": 300.0}
    first = await store.notify(note("alice", "bob", data={"by": "carol"}, **group))
    other = await store.notify(note("alice"))
    await store.mark(T, "alice", Mark(MarkAction.READ, everything=True))
    clock.advance(100)
    second = await store.notify(note("alice", data={"by": "dave"}, **group))
    assert second.recipients[0].outcome is Outcome.COLLAPSED
    assert second.recipients[0].item_id == first.recipients[0].item_id
    # unseen and unread again, and at the top: the user has not seen dave's comment
    assert second.counts["alice"] == Counts(unread=1, unseen=1, total=2, version=4)
    page = await store.list_items(T, "alice")
    top = page.items[0]
    assert (top.id, top.count, top.data, top.read_at) == (
        first.recipients[0].item_id,
        2,
        {"by": "dave"},
        None,
    )
    assert (
        top.notification_id == second.notification_id and top.first_notification_id == first.notification_id
    )
    assert page.items[1].id == other.recipients[0].item_id
    clock.advance(201)  # the window (from the group's first notification) is over
    third = await store.notify(note("alice", data={"by": "erin"}, **group))
    assert third.recipients[0].outcome is Outcome.CREATED
    assert (await store.counts(T, "alice")).total == 3
    assert (await store.counts(T, "bob")) == Counts(1, 1, 1, 1)


async def test_an_archived_group_item_takes_no_more_notifications(store: Store) -> None:
    group = {"group_key": "g", "group_window": 300.0}
    first = await store.notify(note("alice", **group))
    item = first.recipients[0].item_id
    assert item
    await store.mark(T, "alice", Mark(MarkAction.ARCHIVED, ids=(item,)))
    second = await store.notify(note("alice", **group))
    assert second.recipients[0].outcome is Outcome.CREATED and second.recipients[0].item_id != item


# -- preferences ---------------------------------------------------------------------------------------


POLICY = PreferencePolicy(
    categories={
        "security": CategoryPolicy(frozenset({DeliveryChannel.IN_APP, DeliveryChannel.EMAIL}), critical=True),
        "digest": CategoryPolicy(frozenset({DeliveryChannel.EMAIL})),
    }
)


def route_all(event: OutboxEvent) -> list[Destination]:
    return [
        Destination("webhook:main", DeliveryChannel.WEBHOOK),
        Destination("email", DeliveryChannel.EMAIL),
        Destination("audit"),
    ]


async def test_an_opt_out_is_honoured_and_recorded_and_critical_ignores_it(make_store: MakeStore) -> None:
    store = await make_store(policy=POLICY, route=route_all)
    assert await store.preferences(T, "alice") == Preferences()
    prefs = Preferences(
        channels={DeliveryChannel.EMAIL: False},
        categories={
            "comment": CategoryPreference(enabled=False),
            "security": CategoryPreference(enabled=False),
        },
    )
    await store.set_preferences(T, "alice", prefs)
    assert await store.preferences(T, "alice") == prefs
    skipped = await store.notify(note("alice", "bob"))
    alice, bob = skipped.recipients
    assert (alice.outcome, alice.item_id, alice.channels) == (Outcome.SKIPPED, None, frozenset())
    assert bob.outcome is Outcome.CREATED and bob.channels == {
        DeliveryChannel.IN_APP,
        DeliveryChannel.WEBHOOK,
    }
    assert "alice" not in skipped.counts and await store.counts(T, "alice") == Counts()
    status = await store.notification_status(T, skipped.notification_id)
    by_user = {r.user: {d.channel: (d.state, d.error) for d in r.deliveries} for r in status.recipients}
    assert by_user["alice"] == {
        DeliveryChannel.IN_APP: (DeliveryState.SKIPPED, "category preference"),
        DeliveryChannel.WEBHOOK: (DeliveryState.SKIPPED, "category preference"),
        DeliveryChannel.EMAIL: (DeliveryState.SKIPPED, "category preference"),
    }
    assert by_user["bob"] == {
        DeliveryChannel.IN_APP: (DeliveryState.SENT, ""),
        DeliveryChannel.WEBHOOK: (DeliveryState.QUEUED, ""),
        DeliveryChannel.EMAIL: (DeliveryState.SKIPPED, "category default"),
    }
    critical = await store.notify(note("alice", category="security"))
    assert critical.recipients[0].channels == {DeliveryChannel.IN_APP, DeliveryChannel.EMAIL}
    assert critical.counts["alice"].unread == 1
    # only bob's notification.created reached the webhook; alice's security notice went to email and audit
    tasks = await store.tasks()
    assert sorted((t.payload["user"], t.destination) for t in tasks) == [
        ("alice", "audit"),
        ("alice", "email"),
        ("bob", "audit"),
        ("bob", "webhook:main"),
    ]


async def test_a_channel_without_a_destination_is_recorded_as_skipped(store: Store) -> None:
    result = await store.notify(note("alice"))
    status = await store.notification_status(T, result.notification_id)
    deliveries = {d.channel: (d.state, d.error) for d in status.recipients[0].deliveries}
    assert deliveries[DeliveryChannel.WEBHOOK] == (DeliveryState.SKIPPED, "no destination configured")
    assert status.summary[DeliveryChannel.IN_APP] == {DeliveryState.SENT: 1}


# -- expiry --------------------------------------------------------------------------------------------


async def test_expired_items_are_neither_listed_nor_counted_and_the_sweep_keeps_counts(
    store: Store, clock: Clock
) -> None:
    await store.notify(note("alice", expire_at=clock.now + 10))
    keep = await store.notify(note("alice"))
    assert (await store.counts(T, "alice")).total == 2
    with pytest.raises(InvalidInput):
        await store.notify(note("alice", expire_at=clock.now - 1))
    clock.advance(10)
    assert await store.counts(T, "alice") == Counts(unread=1, unseen=1, total=1, version=2)
    assert await everything(store, "alice") == [keep.recipients[0].item_id]
    assert (await store.mark(T, "alice", Mark(MarkAction.READ, everything=True))).changed == 1
    swept = await store.expire()
    assert [(u.user, u.counts.total, u.counts.unread) for u in swept] == [("alice", 1, 0)]
    assert await store.counts(T, "alice") == swept[0].counts
    assert await store.expire() == []
    assert await stored_counts(store, T, "alice") == swept[0].counts


async def test_sweeps_of_several_nodes_at_once_remove_each_item_once(
    make_store: MakeStore, clock: Clock
) -> None:
    """Every node sweeps (hub/inbox/expiry.py): sweeps racing on one database must count each removal
    once, and the newest counts each pushes (highest version per user) must be the user's counts."""
    nodes = [await make_store(), await make_store()]
    users = [f"u{k}" for k in range(12)]
    for k, u in enumerate(users):
        await nodes[k % 2].notify(note(u))  # one that stays
        for i in range(k % 4 + 1):
            await nodes[i % 2].notify(note(u, expire_at=clock.now + 5 + i))
    clock.advance(10)
    pushed: dict[str, Counts] = {}
    rounds = 0
    while True:
        batches = await asyncio.gather(*(nodes[k % 2].expire(limit=3) for k in range(6)))
        swept = [s for batch in batches for s in batch]
        if not swept:
            break
        rounds += 1
        for s in swept:
            if s.user not in pushed or s.counts.version > pushed[s.user].version:
                pushed[s.user] = s.counts
    assert rounds >= 2  # the limit made them share the work
    for u in users:
        expected = await stored_counts(nodes[0], T, u)
        assert (expected.total, expected.unread) == (1, 1)
        assert await nodes[1].counts(T, u) == expected == pushed[u]


# -- delivery tracking and the outbox ------------------------------------------------------------------


async def test_delivery_states_follow_the_worker_and_the_user(make_store: MakeStore, clock: Clock) -> None:
    store = await make_store(route=route_all)
    n = await store.notify(note("alice"))
    nid = n.notification_id
    tasks = await store.claim("w1", ["webhook:main"])
    assert [t.destination for t in tasks] == ["webhook:main"]
    assert await store.record("w1", tasks[0], AttemptResult(ok=True, status=200)) is Verdict.DONE
    assert await store.record_delivery(T, nid, "alice", DeliveryChannel.IN_APP, DeliveryState.DELIVERED) == (
        DeliveryState.DELIVERED
    )
    # a late "sent" never undoes "delivered"
    assert await store.record_delivery(T, nid, "alice", DeliveryChannel.IN_APP, DeliveryState.SENT) == (
        DeliveryState.DELIVERED
    )
    await store.mark(T, "alice", Mark(MarkAction.READ, everything=True))
    status = await store.notification_status(T, nid)
    states = {d.channel: d.state for d in status.recipients[0].deliveries}
    assert states == {
        DeliveryChannel.IN_APP: DeliveryState.READ,
        DeliveryChannel.WEBHOOK: DeliveryState.SENT,
        DeliveryChannel.EMAIL: DeliveryState.SKIPPED,
    }
    with pytest.raises(NotFound):
        await store.record_delivery(T, nid, "bob", DeliveryChannel.IN_APP, DeliveryState.DELIVERED)
    with pytest.raises(NotFound):
        await store.record_delivery("acme", nid, "alice", DeliveryChannel.IN_APP, DeliveryState.DELIVERED)
    with pytest.raises(NotFound):
        await store.notification_status("acme", nid)


async def test_a_bulk_delivery_report_moves_each_delivery_forward_once(
    make_store: MakeStore, clock: Clock
) -> None:
    store = await make_store(policy=POLICY, route=route_all)
    await store.set_preferences(T, "carol", Preferences(categories={"comment": CategoryPreference(False)}))
    first = await store.notify(note("alice", "bob", "carol"))
    second = await store.notify(note("alice"))
    theirs = await store.notify(Notification("acme", ("alice",), "comment"))
    n1, n2 = first.notification_id, second.notification_id
    assert first.deliveries == {
        (DeliveryChannel.IN_APP, DeliveryState.SENT): 2,
        (DeliveryChannel.IN_APP, DeliveryState.SKIPPED): 1,
        (DeliveryChannel.WEBHOOK, DeliveryState.QUEUED): 2,
        (DeliveryChannel.WEBHOOK, DeliveryState.SKIPPED): 1,
        (DeliveryChannel.EMAIL, DeliveryState.SKIPPED): 3,
    }
    reports = [
        (T, n1, "alice"),
        (T, n1, "alice"),  # the same device's push seen by two nodes
        (T, n1, "bob"),
        (T, n1, "carol"),  # opted out: skipped stays skipped
        (T, n2, "alice"),
        ("acme", n1, "alice"),  # a notification of another tenant under that id: none
        (T, theirs.notification_id, "alice"),  # acme's notification reported as the default tenant's
        (T, 10**9, "alice"),  # no such notification
    ]
    moved = await store.record_deliveries(DeliveryChannel.IN_APP, DeliveryState.DELIVERED, reports)
    assert moved == 3
    assert await store.record_deliveries(DeliveryChannel.IN_APP, DeliveryState.DELIVERED, reports) == 0
    await store.mark(T, "alice", Mark(MarkAction.READ, ids=(second.recipients[0].item_id or 0,)))
    clock.advance(1)
    # a late report never undoes what the user did; an empty report writes nothing
    assert (
        await store.record_deliveries(DeliveryChannel.IN_APP, DeliveryState.DELIVERED, [(T, n2, "alice")])
        == 0
    )
    assert await store.record_deliveries(DeliveryChannel.IN_APP, DeliveryState.DELIVERED, []) == 0
    status = await store.notification_status(T, n1)
    in_app = {
        r.user: next(d.state for d in r.deliveries if d.channel is DeliveryChannel.IN_APP)
        for r in status.recipients
    }
    assert in_app == {
        "alice": DeliveryState.DELIVERED,
        "bob": DeliveryState.DELIVERED,
        "carol": DeliveryState.SKIPPED,
    }
    assert status.summary[DeliveryChannel.IN_APP] == {DeliveryState.DELIVERED: 2, DeliveryState.SKIPPED: 1}
    [alice] = (await store.notification_status(T, n2)).recipients
    assert {d.channel: d.state for d in alice.deliveries}[DeliveryChannel.IN_APP] is DeliveryState.READ
    acme = await store.notification_status("acme", theirs.notification_id)
    assert acme.summary[DeliveryChannel.IN_APP] == {DeliveryState.SENT: 1}
    # webhook deliveries queued for a worker move too when reported as sent, and only those named
    assert await store.record_deliveries(DeliveryChannel.WEBHOOK, DeliveryState.SENT, [(T, n1, "bob")]) == 1
    for bad in (
        lambda: store.record_deliveries(DeliveryChannel.IN_APP, DeliveryState.FAILED, [(T, n1, "bob")]),
        lambda: store.record_deliveries(DeliveryChannel.IN_APP, DeliveryState.SKIPPED, []),
        lambda: store.record_deliveries("in_app", DeliveryState.DELIVERED, []),
        lambda: store.record_deliveries(DeliveryChannel.IN_APP, DeliveryState.DELIVERED, [(T, 0, "bob")]),
        lambda: store.record_deliveries(DeliveryChannel.IN_APP, DeliveryState.DELIVERED, [(T, n1)]),
        lambda: store.record_deliveries(DeliveryChannel.IN_APP, DeliveryState.DELIVERED, [(T, n1, "")]),
        lambda: store.record_deliveries(DeliveryChannel.IN_APP, DeliveryState.DELIVERED, "abc"),
        lambda: store.record_deliveries(
            DeliveryChannel.IN_APP, DeliveryState.DELIVERED, [(T, n1, "bob")] * 10001
        ),
    ):
        with pytest.raises(InvalidInput):
            await bad()


async def test_retries_back_off_then_dead_letter_then_replay(make_store: MakeStore, clock: Clock) -> None:
    store = await make_store(
        route=route_all, retry=RetryPolicy(max_attempts=3, base=10.0, cap=100.0), rand=lambda: 0.5
    )
    n = await store.notify(note("alice"))
    [task] = await store.claim("w1", ["webhook:main"], lease=30)
    assert task.attempt == 1 and task.payload["user"] == "alice" and task.topic is Topic.NOTIFICATION_CREATED
    assert await store.claim("w2", ["webhook:main"]) == []  # leased
    assert (
        await store.record("w1", task, AttemptResult(ok=False, error="500 boom", status=500)) is Verdict.RETRY
    )
    queued = (await store.notification_status(T, n.notification_id)).recipients[0].deliveries
    assert (DeliveryChannel.WEBHOOK, DeliveryState.QUEUED, "500 boom") in [
        (d.channel, d.state, d.error) for d in queued
    ]
    assert await store.claim("w1", ["webhook:main"]) == []  # backing off: 10 * (0.5 + 0.25) = 7.5 s
    clock.advance(7.4)
    assert await store.claim("w1", ["webhook:main"]) == []
    clock.advance(0.2)
    [task2] = await store.claim("w1", ["webhook:main"])
    assert (task2.id, task2.event_id, task2.attempt) == (task.id, task.event_id, 2)
    assert (
        await store.record("w1", task2, AttemptResult(ok=False, error="429", retry_after=50)) is Verdict.RETRY
    )
    clock.advance(49)
    assert await store.claim("w1", ["webhook:main"]) == []  # Retry-After beats the 15 s backoff
    clock.advance(1)
    [task3] = await store.claim("w1", ["webhook:main"])
    assert await store.record("w1", task3, AttemptResult(ok=False, error="still down")) is Verdict.DEAD
    [dead] = await store.tasks(state=TaskState.DEAD)
    assert (dead.id, dead.attempts, dead.last_error) == (task.id, 3, "still down")
    status = await store.notification_status(T, n.notification_id)
    webhook = next(d for d in status.recipients[0].deliveries if d.channel is DeliveryChannel.WEBHOOK)
    assert (webhook.state, webhook.error) == (DeliveryState.FAILED, "still down")
    attempts = await store.attempts(task.id)
    assert [(a.attempt, a.verdict, a.error) for a in attempts] == [
        (1, Verdict.RETRY, "500 boom"),
        (2, Verdict.RETRY, "429"),
        (3, Verdict.DEAD, "still down"),
    ]
    assert await store.replay(destination="webhook:main") == 1
    [again] = await store.claim("w1", ["webhook:main"])
    assert (again.id, again.event_id, again.attempt) == (task.id, task.event_id, 1)
    assert await store.record("w1", again, AttemptResult(ok=True)) is Verdict.DONE
    webhook = next(
        d
        for d in (await store.notification_status(T, n.notification_id)).recipients[0].deliveries
        if d.channel is DeliveryChannel.WEBHOOK
    )
    assert webhook.state is DeliveryState.SENT and webhook.error == ""
    assert await store.replay([task.id]) == 0  # not a dead letter any more


async def test_the_console_s_reads_recent_tasks_depth_and_tenant_counts(make_store: MakeStore) -> None:
    store = await make_store(route=route_all)
    for k in range(5):
        await store.notify(note(f"u{k}"))
    await store.notify(Notification("acme", ("ann",), "comment", {}))
    tasks = await store.tasks(tenant=T, destination="webhook:main", limit=100)
    assert len(tasks) == 5
    ids = [t.id for t in tasks]
    newest = await store.tasks(tenant=T, destination="webhook:main", before_id=2**63 - 1, limit=2)
    assert [t.id for t in newest] == ids[:-3:-1]  # the two most recent, newest first
    older = await store.tasks(tenant=T, destination="webhook:main", before_id=newest[-1].id, limit=10)
    assert [t.id for t in older] == ids[-3::-1]
    window = await store.tasks(destination="webhook:main", after_id=ids[0], before_id=ids[3])
    assert [t.id for t in window] == [ids[2], ids[1]]
    [claimed] = await store.claim("w1", ["webhook:main"], limit=1)  # the oldest: u0's
    await store.record("w1", claimed, AttemptResult(ok=False, error="gone", retryable=False))
    assert await store.outbox_depth(tenant=T) == {
        ("webhook:main", TaskState.PENDING): 4,
        ("webhook:main", TaskState.DEAD): 1,
        ("audit", TaskState.PENDING): 5,
    }
    assert await store.outbox_depth(tenant="nobody") == {}
    everyone = await store.outbox_depth()
    assert (everyone[("webhook:main", TaskState.PENDING)], everyone[("audit", TaskState.PENDING)]) == (5, 6)
    await store.mark(T, "u0", Mark(MarkAction.READ, everything=True))
    await store.mark(T, "u1", Mark(MarkAction.SEEN, everything=True))
    await store.mark(T, "u2", Mark(MarkAction.ARCHIVED, everything=True))
    # read implies seen; archived items are not counted
    assert await store.tenant_counts(T) == TenantCounts(users=4, unread=3, unseen=2, total=4)
    assert await store.tenant_counts("acme") == TenantCounts(1, 1, 1, 1)
    assert await store.tenant_counts("nobody") == TenantCounts()
    for bad in (
        lambda: store.tasks(before_id=0),
        lambda: store.tasks(before_id=True),
        lambda: store.tasks(before_id="9"),
        lambda: store.outbox_depth(tenant="x" * 256),
        lambda: store.tenant_counts(None),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidInput):
            await bad()


async def test_a_4xx_is_not_retried_and_a_lost_lease_goes_to_another_worker(
    make_store: MakeStore, clock: Clock
) -> None:
    store = await make_store(route=route_all)
    await store.notify(note("alice", "bob"))
    first = await store.claim("w1", ["webhook:main"], limit=1, lease=30)
    second = await store.claim("w2", ["webhook:main"], limit=5, lease=30)
    assert len(first) == 1 and len(second) == 1 and first[0].id != second[0].id
    assert (
        await store.record("w2", second[0], AttemptResult(ok=False, error="404", retryable=False))
        is Verdict.DEAD
    )
    clock.advance(31)  # w1 stalled past its lease: w3 takes the task over
    [taken] = await store.claim("w3", ["webhook:main"])
    assert (taken.id, taken.event_id, taken.attempt) == (first[0].id, first[0].event_id, 2)
    assert await store.record("w1", first[0], AttemptResult(ok=True)) is Verdict.STALE
    assert await store.record("w3", taken, AttemptResult(ok=True)) is Verdict.DONE
    assert [a.verdict for a in await store.attempts(taken.id)] == [Verdict.STALE, Verdict.DONE]
    assert await store.tasks(state=TaskState.PENDING, destination="webhook:main") == []


async def test_workers_on_two_nodes_claim_disjoint_tasks(make_store: MakeStore) -> None:
    nodes = [await make_store(route=route_all), await make_store(route=route_all)]
    await nodes[0].notify(note(*(f"user{k}" for k in range(40))))
    claimed: list[int] = []

    async def worker(name: str, node: Store) -> None:
        while batch := await node.claim(name, ["webhook:main"], limit=3):
            claimed.extend(t.id for t in batch)

    await asyncio.gather(*(worker(f"w{k}", nodes[k % 2]) for k in range(6)))
    assert len(claimed) == 40 and len(set(claimed)) == 40


async def test_the_hub_s_events_go_where_the_router_sends_them(make_store: MakeStore) -> None:
    def route(event: OutboxEvent) -> list[Destination]:
        return [Destination("webhook:ops")] if event.topic is Topic.CHANNEL_OCCUPIED else []

    store = await make_store(route=route)
    events = [
        OutboxEvent(T, Topic.CHANNEL_OCCUPIED, {"channel": "chat:1"}),
        OutboxEvent("acme", Topic.CLIENT_CONNECTED, {"user": "alice"}),
    ]
    assert await store.append(events) == 1
    [task] = await store.claim("w", None)
    assert (task.topic, task.payload, task.destination) == (
        Topic.CHANNEL_OCCUPIED,
        {"channel": "chat:1"},
        "webhook:ops",
    )
    assert await store.record("w", task, AttemptResult(ok=True)) is Verdict.DONE
    assert await store.prune(before=0) == 0
    assert await store.prune(before=2e9) == 1
    assert await store.tasks() == [] and await store.attempts(task.id) == []


# -- atomicity, garbage, schema ------------------------------------------------------------------------


async def test_a_change_that_fails_midway_leaves_nothing(make_store: MakeStore) -> None:
    def broken(event: OutboxEvent) -> list[Destination]:
        raise RuntimeError("router bug")

    store = await make_store(route=broken)
    sizes = await table_sizes(store)
    with pytest.raises(RuntimeError):
        await store.notify(note("alice", "bob", dedupe_key="k"))
    assert await table_sizes(store) == sizes
    assert await store.counts(T, "alice") == Counts()


GARBAGE_NOTIFY: list[dict[str, Any]] = [
    {"recipients": ()},
    {"recipients": ("",)},
    {"recipients": ("a", "a")},
    {"recipients": ("bad\x00user",)},
    {"recipients": tuple(f"u{i}" for i in range(10001))},
    {"category": ""},
    {"category": "has space"},
    {"category": "x" * 65},
    {"data": {"big": "x" * 20000}},
    {"data": {"nan": float("nan")}},
    {"data": {1: "int key"}},
    {"data": ["not", "an", "object"]},
    {"data": {"big_int": 2**70}},
    {"data": {"surrogate": "\ud800"}},
    {"title": "x" * 513},
    {"title": "line\nbreak"},
    {"body": "x" * 4097},
    {"url": "u" * 2049},
    {"dedupe_key": ""},
    {"dedupe_window": 0},
    {"dedupe_window": float("inf")},
    {"group_key": "g"},
    {"group_window": 10},
    {"group_key": "g", "group_window": -1},
    {"group_key": "g", "group_window": 31 * 86400},
    {"expire_at": float("nan")},
    {"expire_at": True},
    {"channels": frozenset()},
    {"channels": frozenset({"sms"})},
]


async def test_garbage_notifications_are_refused_before_anything_is_written(store: Store) -> None:
    await store.notify(note("alice"))
    sizes = await table_sizes(store)
    for bad in GARBAGE_NOTIFY:
        fields: dict[str, Any] = {"tenant": T, "recipients": ("alice",), "category": "comment", **bad}
        with pytest.raises(InvalidInput):
            await store.notify(Notification(**fields))
    assert await table_sizes(store) == sizes
    assert await store.counts(T, "alice") == Counts(1, 1, 1, 1)


async def test_garbage_to_every_other_method_is_refused(store: Store) -> None:
    await store.notify(note("alice"))
    sizes = await table_sizes(store)
    calls: list[Any] = [
        lambda: store.list_items(T, "", ListQuery()),
        lambda: store.list_items("x" * 256, "alice"),
        lambda: store.list_items(T, "alice", ListQuery(limit=0)),
        lambda: store.list_items(T, "alice", ListQuery(limit=101)),
        lambda: store.list_items(T, "alice", ListQuery(categories=tuple(f"c{i}" for i in range(17)))),
        lambda: store.list_items(T, "alice", "all"),
        lambda: store.counts(T, None),
        lambda: store.mark(T, "alice", Mark(MarkAction.READ)),
        lambda: store.mark(T, "alice", Mark(MarkAction.READ, ids=(1,), everything=True)),
        lambda: store.mark(T, "alice", Mark(MarkAction.READ, ids=(0,))),
        lambda: store.mark(T, "alice", Mark(MarkAction.READ, ids=(2**63,))),
        lambda: store.mark(T, "alice", Mark(MarkAction.READ, ids=tuple(range(1, 1002)))),
        lambda: store.mark(T, "alice", Mark(MarkAction.READ, up_to="forged")),
        lambda: store.mark(T, "alice", Mark("read", everything=True)),  # type: ignore[arg-type]
        lambda: store.set_preferences(T, "alice", {"channels": {}}),
        lambda: store.notification_status(T, -1),
        lambda: store.notification_status(T, 1, limit=5000),
        lambda: store.record_delivery(T, 1, "alice", "in_app", "read"),
        lambda: store.append([OutboxEvent(T, Topic.PUBLICATION, {"x": "y" * 70000})]),
        lambda: store.append("events"),
        lambda: store.claim("", None),
        lambda: store.claim("w", "webhook:main"),
        lambda: store.claim("w", None, lease=0),
        lambda: store.claim("w", None, limit=10**6),
        lambda: store.replay([0]),
        lambda: store.tasks(after_id=-1),
        lambda: store.expire(limit=0),
    ]
    for call in calls:
        with pytest.raises(InvalidInput):
            await call()
    assert await table_sizes(store) == sizes
    assert await store.counts(T, "alice") == Counts(1, 1, 1, 1)


async def test_an_older_schema_is_migrated_and_keeps_its_data(make_store: MakeStore) -> None:
    old = await make_store(_migrate_to=1)
    await old.notify(note("alice", "bob"))
    await old.mark(T, "bob", Mark(MarkAction.READ, everything=True))
    await old.close()
    new = await make_store(route=route_all)
    assert await new.counts(T, "alice") == Counts(1, 1, 1, 1)
    assert (await new.counts(T, "bob")).unread == 0
    await new.notify(note("alice"))  # the outbox of version 2 is there
    assert len(await new.claim("w", ["webhook:main"])) == 1
    assert await schema_versions(new) == [1, 2, 3, 4]


async def test_nodes_starting_together_on_a_new_database_migrate_it_once(make_store: MakeStore) -> None:
    nodes = await asyncio.gather(*(make_store() for _ in range(3)))
    assert await schema_versions(nodes[0]) == [1, 2, 3, 4]
    await nodes[1].notify(note("alice"))
    assert (await nodes[2].counts(T, "alice")).total == 1


async def test_a_newer_schema_than_the_code_is_refused(make_store: MakeStore, store_kind: str) -> None:
    store = await make_store()
    await execute(store, "INSERT INTO schema_version VALUES (99, 0)")
    await store.close()
    with pytest.raises(SchemaError):
        await make_store()


async def test_a_closed_store_raises_store_error(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreError):
        await store.counts(T, "alice")
    with pytest.raises(StoreError):
        await store.notify(note("alice"))
