"""A console tab's stream without a server (hub/admin/stream.py): the tail's rate limit and queue bound
drop with a counter, never grow; the roster keeps vanished nodes, boundedly."""

from __future__ import annotations

from typing import Any

from channels.publication import ClientInfo, Publication
from hub.admin import stream as st


def make_stream() -> st.Stream:
    async def nothing() -> Any:
        return {}

    async def valid() -> bool:
        return True

    return st.Stream(
        None,  # type: ignore[arg-type]  # the node is only read for presence, not used here
        sid="s",
        tenant=None,
        key=("", "feed"),
        presence=False,
        live_presence=False,
        nodes=nothing,
        still_valid=valid,
        interval=1.0,
    )


async def test_a_flood_is_cut_to_the_tail_rate_and_counted() -> None:
    stream = make_stream()
    info = ClientInfo("u", "c")
    for n in range(10_000):
        stream.publication(("", "feed"), Publication(b'{"n":%d}' % n, offset=n + 1, info=info))
    assert stream.total == 10_000
    assert stream.dropped >= 10_000 - st.TAIL_BURST - 5  # the burst passes, the rest waits for tokens
    assert stream._queued <= st.QUEUE_BYTES and len(stream._queue) <= st.TAIL_BURST + 5


async def test_a_slow_browser_never_makes_the_queue_grow() -> None:
    stream = make_stream()
    big = b'"' + b"x" * (st.PREVIEW_BYTES * 4) + b'"'
    for n in range(2_000):
        stream._bucket.tokens = stream._bucket.burst  # as if the rate allowed each one
        stream.publication(("", "feed"), Publication(big, offset=n + 1))
    assert stream._queued <= st.QUEUE_BYTES
    assert stream.dropped == 2_000 - len(stream._queue)
    assert all(b'"truncated":true' in frame for frame in stream._queue)  # payloads are cut to a preview


def test_roster_shows_vanished_nodes_for_a_while_and_boundedly() -> None:
    roster = st.Roster()
    roster.update([{"name": "a"}, {"name": "b"}], now=0.0)
    roster.update([{"name": "a"}], now=1.0)
    assert roster.as_json() == {"nodes": [{"name": "a"}], "gone": [{"info": {"name": "b"}, "gone_at": 1.0}]}
    roster.update([{"name": "a"}, {"name": "b"}], now=2.0)  # back: no longer gone
    assert roster.as_json()["gone"] == []
    for i in range(st.GONE_KEPT * 3):
        roster.update([{"name": f"n{i}"}], now=10.0 + i)
    assert len(roster.gone) == st.GONE_KEPT
    roster.update([], now=10.0 + st.GONE_KEPT * 3 + st.GONE_FOR + 1)
    assert [g["info"]["name"] for g in roster.as_json()["gone"]] == [f"n{st.GONE_KEPT * 3 - 1}"]


async def test_a_presence_list_keeps_its_first_connections_only() -> None:
    stream = make_stream()
    stream._pending = None  # the first full state is in: diffs apply from here
    for n in range(st.MAX_PRESENCE * 2):
        stream.join(("", "feed"), ClientInfo(f"u{n}", f"c{n}"))
    assert sum(len(m) for m in stream._state.values()) == st.MAX_PRESENCE and stream._truncated
    stream.leave(("", "feed"), ClientInfo("u0", "c0"))
    assert "u0" not in stream._state
    assert stream._queued <= st.QUEUE_BYTES
