"""The document endpoint with real sockets: sync, relay and awareness between Python y-websocket clients."""

from __future__ import annotations

from tests.conftest import RunningHub
from tests.hub.ydocs import YConnect, yconnect  # noqa: F401 (fixtures)
from tests.hub.ydocs import docs_hub  # noqa: F401


async def test_two_clients_edit_one_document(docs_hub: RunningHub, yconnect: YConnect) -> None:
    alice = await yconnect(docs_hub, "notes")
    bob = await yconnect(docs_hub, "notes")
    alice.text.insert(0, "hello")
    await alice.flush()
    await bob.until(lambda: str(bob.text) == "hello")
    bob.text.insert(5, " world")
    await bob.flush()
    await alice.until(lambda: str(alice.text) == "hello world")
