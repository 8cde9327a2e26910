"""The hub's events out, end to end in one node: a client connects, subscribes, publishes, leaves and
disconnects, a document is edited; a real receiver gets each event, signed, once (after dedupe), with its
payload; the server API shows, explains and replays deliveries; nothing is built or stored when nothing
is configured, and a store that is down drops events only past the bound, counted."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Text

from hub.config import ApiKey, Config
from hub.outbound import tap as tap_module
from hub.outbound.settings import parse_webhooks
from sync.content import document_json
from tests.conftest import TIMEOUT, HubFactory, RunningHub, http_client, token
from tests.conftest import test_config as hub_config
from tests.workers.conftest import SECRET
from tests.workers.receiver import Receiver

API_KEY = "events-api-key"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver(SECRET).start()
    yield r
    await r.stop()


def hooked(receiver: Receiver, tmp_path: Path, events: list[str], **kw: Any) -> Config:
    entry = {"name": "main", "url": receiver.url, "secret": SECRET, "events": events, "max_concurrency": 1}
    entry.update(kw.pop("hook", {}))
    return hub_config(
        webhooks=parse_webhooks([entry]),
        data_dir=str(tmp_path),
        api_key=API_KEY,
        document_changed_wait=0.2,
        document_changed_max_wait=0.6,
        **kw,
    )


async def api(hub: RunningHub, method: str, params: dict[str, Any], key: str = API_KEY) -> dict[str, Any]:
    async with http_client(timeout=TIMEOUT) as http:
        response = await http.post(f"{hub.http}/api/{method}", json=params, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_clients_life_reaches_the_webhook_in_order_with_its_payloads(
    make_hub: HubFactory, raw_client: Any, receiver: Receiver, tmp_path: Path
) -> None:
    events = ["client.connected", "client.disconnected", "channel.occupied", "channel.vacated", "publication"]
    hub = await make_hub(hooked(receiver, tmp_path, events, hook={"namespaces": ["chat"]}))
    client = await raw_client(hub, connect={"token": token("alice")})
    for channel in ("chat:room", "nohist:quiet"):  # nohist: a namespace the webhook leaves out
        assert "subscribe" in await client.command(
            "subscribe", {"channel": channel}
        )  # a namespace the webhook leaves out
    await client.command("publish", {"channel": "chat:room", "data": {"text": "hi"}})
    await client.command("publish", {"channel": "nohist:quiet", "data": {"text": "not sent"}})
    await client.command("unsubscribe", {"channel": "chat:room"})
    await client.ws.close()
    await receiver.wait_for(lambda: len(receiver.processed()) == 5)
    kinds = [r.body["type"] for r in receiver.requests]
    assert kinds == [
        "client.connected",
        "channel.occupied",
        "publication",
        "channel.vacated",
        "client.disconnected",
    ]
    connected, occupied, publication, vacated, disconnected = (r.body for r in receiver.requests)
    client_id = connected["data"]["client"]
    assert connected["data"] == {
        "client": client_id,
        "user": "alice",
        "transport": "websocket",
        "node": hub.sb.node.id,
    }
    assert connected["tenant"] == ""
    assert occupied["data"]["channel"] == vacated["data"]["channel"] == "chat:room"
    assert occupied["data"]["at"] <= vacated["data"]["at"]
    assert publication["data"] == {
        "channel": "chat:room",
        "offset": 1,
        "epoch": publication["data"]["epoch"],
        "data": {"text": "hi"},
        "info": {"user": "alice", "client": client_id},
    }
    assert disconnected["data"]["client"] == client_id and disconnected["data"]["code"] == 3000
    assert len({r.webhook_id for r in receiver.requests}) == 5
    async with asyncio.timeout(TIMEOUT), http_client() as http:
        while 'verdict="done"} 5.0' not in (text := (await http.get(f"{hub.http}/metrics")).text):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # the last attempt is recorded after its answer: poll
    assert 'switchboard_outbox_attempts_total{destination="webhook:main",verdict="done"} 5.0' in text
    assert 'switchboard_outbox_events_total{topic="publication"} 1.0' in text


async def test_a_document_change_is_reported_once_its_edits_settle_with_its_content(
    make_hub: HubFactory, receiver: Receiver, tmp_path: Path
) -> None:
    hub = await make_hub(hooked(receiver, tmp_path, ["document.changed"]))
    docs = hub.sb.documents

    def write(doc: Any, text: str) -> None:
        doc.get("body", type=Text).insert(len(str(doc.get("body", type=Text))), text)

    for word in ("one ", "two ", "three"):  # a burst: one event
        await docs.transact("notes:a", lambda d, w=word: write(d, w))
    await receiver.wait_for(lambda: len(receiver.processed()) == 1)
    [first] = receiver.of_type("document.changed")
    content = await docs.content("notes:a")
    assert first == {"document": "notes:a", "version": first["version"], "content": content}
    assert content == {"body": "one two three"}
    await docs.transact("notes:a", lambda d: write(d, "!"))  # a later change: a second event
    await receiver.wait_for(lambda: len(receiver.processed()) == 2)
    second = receiver.of_type("document.changed")[1]
    assert second["content"] == {"body": "one two three!"} and second["version"] != first["version"]
    async with docs.open("notes:a") as doc:
        assert second["content"] == document_json(doc)


async def test_continuous_edits_are_reported_at_least_every_max_wait(
    make_hub: HubFactory, receiver: Receiver, tmp_path: Path
) -> None:
    hub = await make_hub(hooked(receiver, tmp_path, ["document.changed"]))
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < 1.5:  # never a pause as long as the 0.2 s wait
        await hub.sb.documents.transact("notes:busy", lambda d: d.get("t", type=Text).insert(0, "x"))
        await asyncio.sleep(0.05)  # the editing pace of this test, not a wait for an effect
    await receiver.wait_for(lambda: len(receiver.processed()) >= 2)  # 0.6 s max wait: reported meanwhile


async def test_the_server_api_lists_explains_and_replays_deliveries(
    make_hub: HubFactory, receiver: Receiver, tmp_path: Path
) -> None:
    keys = [ApiKey("acme-key", "acme")]
    hub = await make_hub(hooked(receiver, tmp_path, ["publication"], api_keys=keys))
    refusing = True
    receiver.plan = lambda _id, _n: "refuse" if refusing else "ok"
    await hub.sb.publish("chat:room", {"n": 1})
    await hub.sb.publish("chat:room", {"n": 2}, tenant="acme")
    await receiver.wait_for(lambda: len(receiver.requests) == 2)
    async with asyncio.timeout(TIMEOUT):
        while len((await api(hub, "webhook_tasks", {"state": "dead"}))["result"]["tasks"]) < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # the attempt is recorded after the answer: poll
    listed = (await api(hub, "webhook_tasks", {"state": "dead", "payload": True}))["result"]
    [task] = listed["tasks"]
    assert listed["next_after_id"] is None
    recent = (await api(hub, "webhook_tasks", {"before_id": 2**63 - 1, "limit": 1}))["result"]
    assert [t["id"] for t in recent["tasks"]] == [task["id"]] and recent["next_before_id"] == task["id"]
    assert (await api(hub, "webhook_tasks", {"before_id": task["id"]}))["result"] == {
        "tasks": [],
        "next_before_id": None,
    }
    assert task["destination"] == "webhook:main" and task["topic"] == "publication"
    assert task["payload"]["data"] == {"n": 1} and task["attempts"] == 1
    assert task["webhook_id"] in {r.webhook_id for r in receiver.requests}
    [attempt] = (await api(hub, "webhook_attempts", {"task_id": task["id"]}))["result"]["attempts"]
    assert (
        attempt["verdict"] == "dead"
        and attempt["status"] == 400
        and attempt["error"] == "HTTP 400: no thanks"
    )
    # tenants: acme's key sees acme's task only, and cannot read or replay the default tenant's
    [acme_task] = (await api(hub, "webhook_tasks", {}, key="acme-key"))["result"]["tasks"]
    assert acme_task["id"] != task["id"]
    assert (await api(hub, "webhook_attempts", {"task_id": task["id"]}, key="acme-key"))["error"][
        "code"
    ] == 102
    assert (await api(hub, "webhook_replay", {"ids": [task["id"]]}, key="acme-key"))["result"] == {
        "replayed": 0
    }
    refusing = False
    assert (await api(hub, "webhook_replay", {"ids": [task["id"]]}))["result"] == {"replayed": 1}
    await receiver.wait_for(lambda: bool(receiver.processed()))
    [delivered] = receiver.processed().values()
    assert delivered[0].webhook_id == task["webhook_id"]


GARBAGE: list[tuple[str, Any]] = [
    ("webhook_tasks", {"state": "lost"}),
    ("webhook_tasks", {"state": 1}),
    ("webhook_tasks", {"limit": 0}),
    ("webhook_tasks", {"limit": 101}),
    ("webhook_tasks", {"limit": "10"}),
    ("webhook_tasks", {"after_id": -1}),
    ("webhook_tasks", {"after_id": 2**64}),
    ("webhook_tasks", {"destination": ""}),
    ("webhook_tasks", {"destination": "x" * 200}),
    ("webhook_tasks", {"destination": "bad\nname"}),
    ("webhook_tasks", {"payload": "yes"}),
    ("webhook_tasks", {"everything": True}),
    ("webhook_tasks", {"before_id": 0}),
    ("webhook_tasks", {"before_id": "9"}),
    ("webhook_tasks", {"before_id": None}),
    ("webhook_tasks", {"before_id": 2**63}),
    ("webhook_attempts", {}),
    ("webhook_attempts", {"task_id": 0}),
    ("webhook_attempts", {"task_id": "1"}),
    ("webhook_attempts", {"task_id": True}),
    ("webhook_replay", {}),
    ("webhook_replay", {"ids": []}),
    ("webhook_replay", {"ids": [0]}),
    ("webhook_replay", {"ids": ["1"]}),
    ("webhook_replay", {"ids": list(range(1, 1002))}),
    ("webhook_replay", {"ids": 5}),
    ("webhook_replay", {"all": "true"}),
    ("webhook_replay", {"destination": 7}),
    ("webhook_replay", {"ids": [1], "tenant": 5}),
]


async def test_garbage_to_the_webhook_methods_is_107_and_an_unknown_task_102(
    make_hub: HubFactory, receiver: Receiver, tmp_path: Path
) -> None:
    hub = await make_hub(hooked(receiver, tmp_path, ["publication"]))
    for method, params in GARBAGE:
        reply = await api(hub, method, params)
        assert reply.get("error", {}).get("code") == 107, (method, params, reply)
    assert (await api(hub, "webhook_attempts", {"task_id": 12345}))["error"]["code"] == 102
    batch = await api(hub, "batch", {"commands": [{"webhook_tasks": {}}, {"webhook_replay": {"all": True}}]})
    assert batch["replies"] == [
        {"webhook_tasks": {"tasks": [], "next_after_id": None}},
        {"webhook_replay": {"replayed": 0}},
    ]


async def test_without_webhooks_nothing_is_built_stored_or_served(
    make_hub: HubFactory, raw_client: Any, tmp_path: Path
) -> None:
    hub = await make_hub(data_dir=str(tmp_path), api_key=API_KEY)
    assert hub.sb.node.events is None and hub.sb.node.registry.watch is None
    client = await raw_client(hub, connect={})
    await client.command("subscribe", {"channel": "chat:room"})
    await client.command("publish", {"channel": "chat:room", "data": 1})
    # the inbox's store exists (the hub's notifications live there), but no event was written to its outbox
    assert await hub.sb.inbox.outbox_depth() == {}
    assert (await api(hub, "webhook_tasks", {}))["error"]["code"] == 108


async def test_a_store_that_is_down_drops_events_only_past_the_bound_and_counts_them(
    make_hub: HubFactory, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setattr(tap_module, "MAX_PENDING", 50)
    hub = await make_hub(hooked(receiver, tmp_path, ["publication"]))
    blocker = sqlite3.connect(tmp_path / "inbox.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock: every append waits, then fails
    try:
        for n in range(80):
            await hub.sb.publish("chat:room", {"n": n})
        metrics = hub.sb.outbound.metrics
        assert metrics.dropped["overflow"] == 30
        tap = hub.sb.outbound.tap
        assert tap is not None and len(tap.pending) == 50
        assert sum("outbox behind: events dropped" in r.getMessage() for r in caplog.records) == 1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await receiver.wait_for(lambda: len(receiver.processed()) == 50)  # the kept ones, in order, once
    assert [r.body["data"]["data"]["n"] for r in receiver.requests] == list(range(50))
