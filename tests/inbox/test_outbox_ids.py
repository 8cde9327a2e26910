"""What the webhook worker relies on from the outbox: event ids that are never handed out twice (they make
the webhook-id), a database origin name, and the queue depth per destination and state."""

from __future__ import annotations

from inbox.outbox import AttemptResult, Destination, OutboxEvent, RetryPolicy, TaskState, Topic
from tests.inbox.conftest import Clock, MakeStore


def to_hooks(event: OutboxEvent) -> list[Destination]:
    return (
        [Destination("webhook:a"), Destination("webhook:b")]
        if event.payload.get("n", 0) % 2
        else [Destination("webhook:a")]
    )


def events(*numbers: int) -> list[OutboxEvent]:
    return [OutboxEvent("", Topic.PUBLICATION, {"n": n}) for n in numbers]


async def test_an_event_id_is_never_handed_out_again_after_its_event_was_pruned(
    make_store: MakeStore, clock: Clock
) -> None:
    store = await make_store(route=to_hooks)
    await store.append(events(2, 4))
    delivered = await store.claim("w", None)
    first_ids = {t.event_id for t in delivered}
    for task in delivered:
        await store.record("w", task, AttemptResult(ok=True))
    clock.advance(10)
    assert await store.prune(before=clock()) == 2  # every event is gone, the newest included
    await store.append(events(6))
    [task] = await store.claim("w", None)
    assert task.event_id not in first_ids
    assert task.event_id > max(first_ids)


async def test_the_origin_is_set_on_open_and_kept_by_the_database(make_store: MakeStore) -> None:
    first = await make_store()
    second = await make_store()  # another instance on the same database: another node or process
    assert len(first.origin) == 12 and first.origin.isalnum()
    assert second.origin == first.origin


async def test_outbox_depth_counts_pending_and_dead_tasks_per_destination(
    make_store: MakeStore, clock: Clock
) -> None:
    store = await make_store(route=to_hooks, retry=RetryPolicy(max_attempts=1))
    assert await store.outbox_depth() == {}
    await store.append(events(1, 2, 3))  # a: 3 tasks, b: 2 tasks
    assert await store.outbox_depth() == {
        ("webhook:a", TaskState.PENDING): 3,
        ("webhook:b", TaskState.PENDING): 2,
    }
    [task] = await store.claim("w", ["webhook:b"], limit=1)
    await store.record("w", task, AttemptResult(ok=False, error="boom"))  # one attempt allowed: dead
    [task] = await store.claim("w", ["webhook:a"], limit=1)
    await store.record("w", task, AttemptResult(ok=True))  # done: not counted
    assert await store.outbox_depth() == {
        ("webhook:a", TaskState.PENDING): 2,
        ("webhook:b", TaskState.PENDING): 1,
        ("webhook:b", TaskState.DEAD): 1,
    }
