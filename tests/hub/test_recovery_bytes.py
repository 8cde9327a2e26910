"""Recovery bounded by bytes: a recovery whose publications would not fit the connection's write bound
(``client_queue_max_size``) answers ``recovered: false`` instead of a reply the writer refuses. Before,
the client was closed with 3008 while the reply was written, reconnected, asked for the same recovery
and was closed again, forever."""

from __future__ import annotations

import dataclasses

from channels.publication import ClientInfo, Publication
from hub import codes
from hub.recovery import PUBLICATION_OVERHEAD, publications_size, recovery_room
from tests.conftest import OPEN, token
from tests.hub.test_sdk_channels import connected, subscribed
from tests.hub.test_sdk_recovery import drop_and_hold

QUEUE = 64 * 1024
BIG = {"text": "x" * 4000}
COUNT = 40  # 40 x 4 KB: more than twice the write bound, well within the count limit (300)


async def big_hub(make_hub):
    return await make_hub(channel=dataclasses.replace(OPEN, history_size=1000), client_queue_max_size=QUEUE)


def test_sizes() -> None:
    info = ClientInfo("u", "c", b"ci", None)
    pubs = [Publication(b"12345", offset=1, info=info, tags={"a": "b"})]
    assert publications_size(pubs) == PUBLICATION_OVERHEAD + 5 + 1 + 1 + 2 + 2
    assert recovery_room(1000, 100) == 400
    assert recovery_room(1000, 900) == 0


async def test_raw_client_too_large_recovery_is_not_recovered_and_stays_connected(make_hub, raw_client):
    hub = await big_hub(make_hub)
    client = await raw_client(hub, connect={})
    epoch = (await client.command("subscribe", {"channel": "big"}))["subscribe"]["epoch"]
    await client.command("unsubscribe", {"channel": "big"})
    for _ in range(COUNT):
        await hub.sb.publish("big", BIG)

    reply = await client.command(
        "subscribe", {"channel": "big", "recover": True, "offset": 0, "epoch": epoch}
    )
    result = reply["subscribe"]
    assert (result.get("was_recovering"), result.get("recovered", False)) == (True, False)
    assert "publications" not in result
    assert result["offset"] == COUNT
    # still connected: the next publication arrives
    await hub.sb.publish("big", {"n": 1})
    assert (await client.push("pub"))["pub"]["data"] == {"n": 1}

    # a gap that fits is still recovered whole
    await client.command("unsubscribe", {"channel": "big"})
    for n in range(3):
        await hub.sb.publish("big", {"n": n})
    reply = await client.command(
        "subscribe", {"channel": "big", "recover": True, "offset": COUNT + 1, "epoch": epoch}
    )
    result = reply["subscribe"]
    assert result.get("recovered") is True
    assert [p["data"] for p in result["publications"]] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_connect_subs_share_the_room(make_hub, raw_client):
    """Server-side subscriptions recovered in one connect reply share one room: each fits alone, both
    together would not (the first is recovered, the second not), and the client stays connected."""
    hub = await big_hub(make_hub)
    epochs = {}
    for name in ("a", "b"):
        for _ in range(6):  # 6 x 4 KB = 25 KB each: under half the bound (32 KB) alone, over it together
            epochs[name] = (await hub.sb.publish(name, BIG)).position.epoch
    client = await raw_client(hub)
    subs = {name: {"recover": True, "offset": 0, "epoch": epochs[name]} for name in ("a", "b")}
    reply = await client.command("connect", {"token": token("u", channels=["a", "b"]), "subs": subs})
    got = reply["connect"]["subs"]
    assert sorted(bool(got[name].get("recovered")) for name in ("a", "b")) == [False, True]
    await hub.sb.publish("b", {"n": 1})
    assert (await client.push("pub"))["pub"]["data"] == {"n": 1}


async def test_sdk_client_recovers_once_and_stays_connected(make_hub, sdk):
    hub = await big_hub(make_hub)
    client, rec = await connected(sdk, hub, token=token("sub"))
    _, sub_rec = await subscribed(client, "big")  # recovery is forced in the namespace
    await hub.sb.publish("big", {"n": 0})
    assert (await sub_rec.pub()).data == {"n": 0}

    await drop_and_hold(hub, client, rec, "server")
    for _ in range(COUNT):
        await hub.sb.publish("big", BIG)
    rec.gate.set()

    _, again = await sub_rec.next("subscribed")  # before the fix: 3008 while it is written, forever
    assert (again.was_recovering, again.recovered) == (True, False)
    await hub.sb.publish("big", {"n": 1})
    assert (await sub_rec.pub()).data == {"n": 1}  # no recovered publication before it
    slow = [
        ctx
        for kind, ctx in rec.seen
        if kind in ("connecting", "disconnected") and ctx.code == codes.SLOW.code
    ]
    assert slow == []
