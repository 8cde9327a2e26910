"""A y-websocket client without I/O, as the stock provider behaves: a pycrdt Doc, the messages it would
send (``outbox``) and what it does with each message it receives. Tests drive it through a DocRoom
directly (tests/sync) or over a real WebSocket (tests/hub/ydocs.py)."""

from __future__ import annotations

from typing import Any

import orjson
from pycrdt import Doc, Text

from sync import protocol
from sync.awareness import AwarenessStates
from sync.protocol import AwarenessEntry


class YClient:
    def __init__(self, client_id: int | None = None, doc: Doc[Any] | None = None) -> None:
        self.doc: Doc[Any] = doc if doc is not None else Doc(client_id=client_id)
        self.outbox: list[bytes] = []
        self.synced = False
        self.denied: list[str] = []
        self.awareness = AwarenessStates()
        self.local_state: Any = None
        self.local_clock = 0
        self._remote = False
        self._subscription = self.doc.observe(self._on_change)

    @property
    def client_id(self) -> int:
        return self.doc.client_id

    @property
    def text(self) -> Text:
        return self.doc.get("text", type=Text)

    def _on_change(self, event: Any) -> None:
        if not self._remote:  # the provider relays only its own edits (origin !== provider)
            self.outbox.append(protocol.update(event.update))

    def take(self) -> list[bytes]:
        out, self.outbox = self.outbox, []
        return out

    def on_open(self) -> None:
        """What the provider sends when its socket opens."""
        self.synced = False
        self.outbox.append(protocol.sync_step1(self.doc.get_state()))
        if self.local_state is not None:
            self.outbox.append(self._awareness_message())

    def set_awareness(self, state: Any) -> None:
        self.local_clock += 1
        self.local_state = state
        self.outbox.append(self._awareness_message())

    def _awareness_message(self) -> bytes:
        raw = orjson.dumps(self.local_state)
        entry = AwarenessEntry(self.client_id, self.local_clock, raw)
        return protocol.awareness(protocol.encode_awareness([entry]))

    def states(self) -> dict[int, Any]:
        return {e.client_id: orjson.loads(e.state) for e in self.awareness.snapshot()}

    def handle(self, data: bytes) -> None:
        message = protocol.decode(data)
        if isinstance(message, protocol.SyncStep1):
            self.outbox.append(protocol.sync_step2(self.doc.get_update(message.state_vector)))
        elif isinstance(message, protocol.SyncStep2 | protocol.SyncUpdate):
            self._remote = True
            try:
                self.doc.apply_update(message.update)
            finally:
                self._remote = False
            if isinstance(message, protocol.SyncStep2):
                self.synced = True
        elif isinstance(message, protocol.AwarenessMessage):
            self.awareness.apply(protocol.decode_awareness(message.update), None, 0.0)
        elif isinstance(message, protocol.QueryAwareness):
            if self.local_state is not None:
                self.outbox.append(self._awareness_message())
        elif isinstance(message, protocol.PermissionDenied):
            self.denied.append(message.reason)
