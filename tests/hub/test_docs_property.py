"""The convergence property over real sockets: random concurrent edits from several Python clients, with
clean and abrupt disconnects and offline edits in between, always converge; what the store holds (read
back through a fresh store, as a restarted node would) equals the live document."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from sync.store_sqlite import SqliteDocumentStore
from tests.conftest import RunningHub
from tests.hub.ydocs import WsYClient, YConnect, settle
from tests.sync.yclient import YClient

CLIENTS = 3
_names = itertools.count()

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("insert"),
            st.integers(0, CLIENTS - 1),
            st.integers(0, 40),
            st.text("abcxy", min_size=1, max_size=3),
        ),
        st.tuples(st.just("delete"), st.integers(0, CLIENTS - 1), st.integers(0, 40), st.integers(1, 3)),
        st.tuples(st.just("close"), st.integers(0, CLIENTS - 1)),
        st.tuples(st.just("drop"), st.integers(0, CLIENTS - 1)),
        st.tuples(st.just("join"), st.integers(0, CLIENTS - 1)),
    ),
    max_size=25,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
async def test_random_edits_with_disconnects_converge_and_are_stored(
    docs_hub: RunningHub, yconnect: YConnect, ops: list[tuple[Any, ...]]
) -> None:
    name = f"prop-{next(_names)}"
    clients = [YClient() for _ in range(CLIENTS)]
    conns: list[WsYClient | None] = [await yconnect(docs_hub, name, client=c) for c in clients]
    for op in ops:
        kind, who = op[0], op[1]
        conn = conns[who]
        if kind in ("insert", "delete"):
            text = clients[who].text
            pos = min(op[2], len(text))
            if kind == "insert":
                text.insert(pos, op[3])
            elif pos < len(text):
                del text[pos : min(len(text), pos + op[3])]
            if conn is not None:
                await conn.flush()
            else:
                clients[who].take()  # offline: sent with the step 2 of the next connection
        elif kind == "close" and conn is not None:
            await conn.close()
            conns[who] = None
        elif kind == "drop" and conn is not None:
            conn.abort()
            conns[who] = None
        elif kind == "join" and conn is None:
            conns[who] = await yconnect(docs_hub, name, client=clients[who])
    for who, conn in enumerate(conns):
        if conn is None:
            conns[who] = await yconnect(docs_hub, name, client=clients[who])

    room = docs_hub.sb.documents.rooms.rooms[("", name)]
    server_changed = asyncio.Event()
    subscription = room.doc.observe(lambda event: server_changed.set())

    def live() -> str:
        return str(room.doc.get("text", type=Text))

    connected = [c for c in conns if c is not None]
    await settle(connected, lambda: all(str(c.text) == live() for c in clients), server_changed)
    room.doc.unobserve(subscription)
    stored = SqliteDocumentStore(Path(docs_hub.sb.config.data_dir) / "documents.sqlite3")
    await stored.open()
    try:
        fresh: Doc[Any] = Doc()
        for update in (await stored.load(("", name))).updates:
            fresh.apply_update(update)
    finally:
        await stored.close()
    assert str(fresh.get("text", type=Text)) == live()
    for conn in conns:
        assert conn is not None
        await conn.close()
