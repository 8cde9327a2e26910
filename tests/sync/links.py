"""Wiring YClients to DocRooms in memory: a Peer that queues what the room sends, and a pump that moves
messages both ways until nothing moves (waiting for the journal between, as the relays wait for it)."""

from __future__ import annotations

from sync.protocol import SyncError
from sync.room import DocRoom
from tests.sync.yclient import YClient


class Link:
    """The room's side of one connection."""

    def __init__(self, client: YClient) -> None:
        self.client = client
        self.inbox: list[bytes] = []
        self.terminated: SyncError | None = None
        self.notices: list[str] = []
        self.replying = False
        """Whether a sync step 2 sent to it is still on its way (a test sets it)."""

    def send(self, message: bytes, shared: bool = False) -> None:
        self.inbox.append(message)

    def send_reply(self, message: bytes, shared: bool = False) -> None:
        self.send(message, shared)

    def notice(self, what: str) -> None:
        self.notices.append(what)

    def terminate(self, error: SyncError) -> None:
        self.terminated = error


def connect(room: DocRoom, client: YClient, can_write: bool = True) -> Link:
    link = Link(client)
    room.join(link, can_write)
    client.on_open()
    return link


async def pump(room: DocRoom, links: list[Link]) -> None:
    while True:
        moved = False
        for link in links:
            for message in link.client.take():
                room.receive(link, message)
                moved = True
        await room.journal.flush()
        for link in links:
            inbox, link.inbox = link.inbox, []
            for message in inbox:
                link.client.handle(message)
                moved = True
        if not moved:
            return
