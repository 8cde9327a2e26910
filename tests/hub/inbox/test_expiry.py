"""The expiry sweep (hub/inbox/expiry.py): every node deletes expired items on its own schedule and pushes
the new counts, so an expired item leaves the list, the counts and every device's badge without anyone
asking. On SQLite and PostgreSQL; the store's clock is moved by the test (no waiting for an expiry)."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import pytest

from hub.inbox import expiry
from tests.conftest import TIMEOUT, RunningHub, token
from tests.hub.inbox.conftest import Badge, InboxHubFactory, personal_push, rpc_data, user
from tests.inbox.stored import table_sizes


class Wall:
    """The store's clock: real time plus an offset the test moves (the hub's own timers stay real)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def wall_clock(hub: RunningHub) -> Wall:
    wall = Wall()
    store: Any = hub.sb.inbox
    store.options = dataclasses.replace(store.options, clock=wall)
    return wall


async def test_an_expired_item_leaves_list_counts_and_every_badge(
    inbox_hub: InboxHubFactory, raw_client: Any, sdk: Any
) -> None:
    hub = await inbox_hub(inbox_expire_interval=0.05)
    wall = wall_clock(hub)
    phone = await raw_client(hub, connect=user("alice"))
    badge = Badge()
    laptop = sdk(hub, token=token("alice"), events=badge)
    await laptop.connect()
    await laptop.ready(TIMEOUT)
    keep = await hub.sb.notify("comment", ["alice"], title="stays")
    await hub.sb.notify("comment", ["alice"], title="brief", expire_at=wall() + 60)
    await badge.shows(unread=2, total=2, version=2)
    for _ in range(2):
        await personal_push(phone, "alice")

    wall.offset += 61  # the brief one expired: the next sweep deletes it and tells every device
    pub = await personal_push(phone, "alice")
    after = {"unread": 1, "unseen": 1, "total": 1, "version": 3}
    assert pub["data"] == {"type": "inbox.counts", "counts": after}
    await badge.shows(**after)
    page = await rpc_data(phone, "inbox.list")
    assert [i["id"] for i in page["items"]] == [keep.recipients[0].item_id]
    assert await rpc_data(phone, "inbox.counts") == after
    assert (await table_sizes(hub.sb.inbox))["inbox_items"] == 1  # deleted, not only hidden
    assert await hub.sb.notifications.expiry.sweep() == 0  # nothing more to do, nothing pushed


async def test_a_sweep_is_bounded_and_the_rest_waits_for_the_next(
    inbox_hub: InboxHubFactory, raw_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(expiry, "BATCH", 2)
    monkeypatch.setattr(expiry, "MAX_BATCHES", 2)
    hub = await inbox_hub(inbox_expire_interval=0)  # no periodic sweep: the test sweeps
    assert hub.sb.notifications.expiry._task is None
    wall = wall_clock(hub)
    users = [f"u{k}" for k in range(5)]
    devices = {u: await raw_client(hub, connect=user(u)) for u in users}
    for u in users:
        await hub.sb.notify("comment", [u], expire_at=wall() + 10)
        await personal_push(devices[u], u)
    wall.offset += 11
    assert await hub.sb.notifications.expiry.sweep() == 4  # two batches of two users
    assert await hub.sb.notifications.expiry.sweep() == 1
    for u in users:
        pub = await personal_push(devices[u], u)
        assert pub["data"]["counts"] == {"unread": 0, "unseen": 0, "total": 0, "version": 2}


async def test_a_failing_store_is_logged_and_the_sweep_goes_on(
    inbox_hub: InboxHubFactory, caplog: pytest.LogCaptureFixture
) -> None:
    hub = await inbox_hub(inbox_expire_interval=0)
    await hub.sb.inbox.close()
    with caplog.at_level(logging.WARNING, logger="switchboard.inbox"):
        assert await hub.sb.notifications.expiry.sweep() == 0
    assert any("inbox expiry sweep failed" in r.getMessage() for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)
    await hub.sb.inbox.open()
