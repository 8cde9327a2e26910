"""Bots in the console's JSON (hub/admin): a user's connections say ``bot``, and the live presence of a
channel marks a bot's entries (``"bot": true`` beside its ``conn_info``), in the full list and in the diffs
the console's presence view shows a "bot" badge for."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import RunningHub, token
from tests.hub.admin.test_console_api import ADMIN, Events, clients, sign_in  # noqa: F401 (a fixture)
from tests.hub.bots.conftest import BOT_SECRET, bot_token


async def test_the_console_marks_bots(
    make_hub: Any,
    tmp_path: Any,
    clients: list[httpx.AsyncClient],  # noqa: F811 (the fixture)
    raw_client: Any,
) -> None:
    hub: RunningHub = await make_hub(
        admin_password=ADMIN, bot_token_hmac_secret_key=BOT_SECRET, data_dir=str(tmp_path)
    )
    s = await sign_in(hub, clients)
    ann = await raw_client(hub, connect={"token": token("ann", info={"name": "Ann"})})
    await ann.command("subscribe", {"channel": "chat:room"})
    async with s.http.stream("GET", "/admin/api/events", params={"channel": "chat:room"}) as r:
        events = Events(r)
        (person,) = (await events.next("presence"))["state"]["ann"].values()
        assert "bot" not in person and person["conn_info"] == {"name": "Ann"}
        helper = await raw_client(hub, connect={"token": bot_token("helper", info={"name": "Helper"})})
        await helper.command("subscribe", {"channel": "chat:room"})
        diff = await events.next("presence_diff")
        (joined,) = diff["joins"]["helper"].values()
        assert joined["bot"] is True and joined["conn_info"] == {"bot": True, "name": "Helper"}
    (conn,) = (await s.get("user", user="helper")).json()["connections"]
    assert conn["bot"] is True
    (conn,) = (await s.get("user", user="ann")).json()["connections"]
    assert conn["bot"] is False
