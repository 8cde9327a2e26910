"""The console's Notifications and deliveries endpoints without a browser (hub/admin/console.py): a
tenant's inbox counts, one user's inbox, every destination with its queue and recent deliveries (no
secret shown), dead letters, one delivery with its attempts, and replay (the server API's, audited,
refused to read-only sessions); tenants kept apart; garbage in every parameter gets a 400 with a reason.
A real webhook receiver (tests/workers/receiver.py) refuses, then accepts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.outbound.settings import parse_webhooks
from inbox.model import Mark, MarkAction
from tests.conftest import RunningHub, http_client
from tests.hub.admin.test_console_api import ADMIN, READONLY, Session, clients, sign_in  # noqa: F401
from tests.nodes import eventually
from tests.workers.conftest import SECRET
from tests.workers.receiver import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver(SECRET).start()
    yield r
    await r.stop()


@pytest.fixture
async def hooked(make_hub: Any, receiver: Receiver, tmp_path: Path) -> RunningHub:
    """A console over a hub whose one webhook refuses every event until the test says otherwise."""
    receiver.plan = lambda _id, _n: "refuse"
    entry = {
        "name": "backend",
        "url": receiver.url + "?token=receiver-credential",
        "secret": SECRET,
        "events": ["notification.created"],
    }
    hub: RunningHub = await make_hub(
        admin_password=ADMIN,
        admin_readonly_password=READONLY,
        data_dir=str(tmp_path),
        webhooks=parse_webhooks([entry]),
    )
    return hub


async def dead_letters(s: Session, tenant: str = "") -> list[dict[str, Any]]:
    r = await s.get("deliveries", tenant=tenant)
    assert r.status_code == 200, r.text
    tasks: list[dict[str, Any]] = r.json()["tasks"]
    return tasks


async def test_counts_destinations_dead_letters_attempts_and_replay(
    hooked: RunningHub,
    receiver: Receiver,
    clients: list[httpx.AsyncClient],  # noqa: F811
) -> None:
    hub = hooked
    s = await sign_in(hub, clients)
    for title in ("first", "second"):
        await hub.sb.notify("comment", ["alice"], title=title)
    await hub.sb.notify("comment", ["bob"], title="for bob")
    await hub.sb.notify("comment", ["ann"], title="acme's", tenant="acme")
    await hub.sb.notifications.mark("", "alice", Mark(MarkAction.READ, everything=True))

    async def three_dead() -> bool:
        return len(await dead_letters(s)) == 3

    await eventually(three_dead)  # the refusals are recorded after the receiver's answers
    view = (await s.get("notifications")).json()
    assert view["inbox"] == {"users": 2, "unread": 1, "unseen": 1, "total": 3}
    [dest] = view["destinations"]
    assert dest["destination"] == "webhook:backend" and dest["kind"] == "webhook"
    assert dest["url"] == receiver.url  # without its query: the receiver's credential stays out
    assert (dest["dead"], dest["pending"], dest["for_tenant"]) == (3, 0, True)
    assert [t["state"] for t in dest["recent"]] == ["dead"] * 3
    assert [t["id"] for t in dest["recent"]] == sorted((t["id"] for t in dest["recent"]), reverse=True)
    text = (await s.get("notifications")).text
    assert "receiver-credential" not in text and SECRET not in text

    dead = await dead_letters(s)
    first = dead[0]
    one = (await s.get("delivery", task_id=first["id"])).json()
    assert one["task"]["payload"]["user"] == "alice" and one["task"]["topic"] == "notification.created"
    [attempt] = one["attempts"]
    assert (attempt["verdict"], attempt["status"]) == ("dead", 400)

    inbox = (await s.get("inbox", user="alice")).json()
    assert inbox["counts"] == {"unread": 0, "unseen": 0, "total": 2, "version": 3}
    assert [i["title"] for i in inbox["items"]] == ["second", "first"] and inbox["next_cursor"] is None

    # acme's deliveries and counts are acme's
    acme = (await s.get("notifications", tenant="acme")).json()
    assert acme["inbox"] == {"users": 1, "unread": 1, "unseen": 1, "total": 1}
    assert [t["payload"]["user"] for t in [
        (await s.get("delivery", tenant="acme", task_id=t["id"])).json()["task"]
        for t in await dead_letters(s, "acme")
    ]] == ["ann"]  # fmt: skip
    assert (await s.get("delivery", task_id=(await dead_letters(s, "acme"))[0]["id"])).status_code == 400

    # read-only: refused and audited; admin: replayed, audited, delivered
    ro = await sign_in(hub, clients, READONLY)
    r = await ro.act("replay", ids=[first["id"]])
    assert (r.status_code, r.json()) == (403, {"error": "read-only: this session cannot act"})
    assert len(await dead_letters(s)) == 3
    receiver.plan = lambda _id, _n: "ok"
    r = await s.act("replay", ids=[first["id"]])
    assert r.json() == {"result": {"replayed": 1}}
    await receiver.wait_for(lambda: first["webhook_id"] in receiver.processed())

    async def two_dead() -> bool:
        return len(await dead_letters(s)) == 2

    await eventually(two_dead)
    r = await s.act("replay", all=True)
    assert r.json() == {"result": {"replayed": 2}}
    await receiver.wait_for(lambda: len(receiver.processed()) == 3)
    entries = (await s.get("audit", limit=10)).json()["entries"]
    replays = [(e["role"], json.loads(e["target"]), e["result"]) for e in entries if e["action"] == "replay"]
    assert replays == [
        ("admin", {"all": True}, "ok"),
        ("admin", {"ids": [first["id"]]}, "ok"),
        ("readonly", {"ids": [first["id"]]}, "refused: read-only"),
    ]


async def test_without_webhooks_the_view_says_nothing_goes_out(
    make_hub: Any,
    tmp_path: Path,
    clients: list[httpx.AsyncClient],  # noqa: F811
) -> None:
    hub = await make_hub(admin_password=ADMIN, data_dir=str(tmp_path))
    s = await sign_in(hub, clients)
    await hub.sb.notify("comment", ["alice"])
    view = (await s.get("notifications")).json()
    assert view == {
        "tenant": "",
        "inbox": {"users": 1, "unread": 1, "unseen": 1, "total": 1},
        "destinations": [],
    }
    r = await s.get("deliveries")
    assert r.status_code == 400 and r.json()["error"].startswith("108")
    r = await s.act("replay", all=True)
    assert (r.status_code, r.json()["code"]) == (400, 108)


async def test_every_new_read_needs_a_session(hooked: RunningHub) -> None:
    async with http_client(base_url=hooked.http) as http:
        for path in ("notifications", "deliveries", "delivery?task_id=1", "inbox?user=a"):
            assert (await http.get(f"/admin/api/{path}")).status_code == 401, path
        replay = await http.post("/admin/api/action", json={"action": "replay", "all": True})
        assert replay.status_code == 401


async def test_garbage_parameters_get_a_400_with_the_reason(
    hooked: RunningHub,
    clients: list[httpx.AsyncClient],  # noqa: F811
) -> None:
    s = await sign_in(hooked, clients)
    for path, params in [
        ("notifications", {"tenant": "t" * 300}),
        ("notifications", {"tenant": "a\x00b"}),
        ("deliveries", {"state": "lost"}),
        ("deliveries", {"state": "\x1b[31m"}),
        ("deliveries", {"limit": "0"}),
        ("deliveries", {"limit": "101"}),
        ("deliveries", {"limit": "many"}),
        ("deliveries", {"after_id": "-1"}),
        ("deliveries", {"after_id": str(2**64)}),
        ("deliveries", {"destination": "d" * 300}),
        ("deliveries", {"destination": "x" * 200}),
        ("delivery", {}),
        ("delivery", {"task_id": "0"}),
        ("delivery", {"task_id": "one"}),
        ("delivery", {"task_id": "99999"}),
        ("inbox", {}),
        ("inbox", {"user": "u" * 300}),
        ("inbox", {"user": "a b\n"}),
        ("inbox", {"user": "alice", "cursor": "forged"}),
        ("inbox", {"user": "alice", "tenant": "t" * 256}),
    ]:
        r = await s.get(path, **params)
        assert r.status_code == 400 and r.json()["error"], (path, params, r.status_code, r.text)
    for fields in [
        {},
        {"ids": []},
        {"ids": [0]},
        {"ids": ["1"]},
        {"ids": list(range(1, 1002))},
        {"ids": 5},
        {"all": "true"},
        {"destination": 7},
        {"ids": [1], "everything": True},
        {"tenant": 5, "all": True},
    ]:
        r = await s.act("replay", **fields)
        assert r.status_code == 400 and r.json()["error"], (fields, r.text)
