"""The in-process broker: offsets, epochs, history trimming, idempotency, history queries.

Time is a fake clock injected into the broker; nothing sleeps. The broker's coroutines never suspend.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.broker import IDEMPOTENCY_TTL, HistoryPolicy
from channels.broker_memory import DEFAULT_META_TTL, MemoryBroker
from channels.errors import ChannelError, UnrecoverablePosition
from channels.names import ChannelKey
from channels.publication import ClientInfo, Publication, StreamPosition

KEY: ChannelKey = ("", "chat:room")
OTHER: ChannelKey = ("tenant-b", "chat:room")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Handler:
    def __init__(self) -> None:
        self.pubs: list[tuple[ChannelKey, Publication]] = []
        self.joins: list[tuple[ChannelKey, ClientInfo]] = []
        self.leaves: list[tuple[ChannelKey, ClientInfo]] = []

    def handle_publication(self, key: ChannelKey, pub: Publication, epoch: str) -> None:
        self.pubs.append((key, pub))

    def handle_join(self, key: ChannelKey, info: ClientInfo) -> None:
        self.joins.append((key, info))

    def handle_leave(self, key: ChannelKey, info: ClientInfo) -> None:
        self.leaves.append((key, info))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def handler() -> Handler:
    return Handler()


@pytest.fixture
def broker(clock: Clock, handler: Handler) -> MemoryBroker:
    b = MemoryBroker(clock=clock)
    b.set_handler(handler)
    return b


HIST = HistoryPolicy(size=10, ttl=60.0)


async def publish_n(
    broker: MemoryBroker, n: int, key: ChannelKey = KEY, history: HistoryPolicy = HIST
) -> list[StreamPosition]:
    return [(await broker.publish(key, b"%d" % i, history=history)).position for i in range(n)]


def offsets(pubs: list[Publication]) -> list[int]:
    return [p.offset for p in pubs]


# ---------------------------------------------------------------- offsets and epochs


async def test_offsets_grow_by_one_and_epoch_is_stable(broker: MemoryBroker, handler: Handler) -> None:
    positions = await publish_n(broker, 5)
    assert [p.offset for p in positions] == [1, 2, 3, 4, 5]
    assert len({p.epoch for p in positions}) == 1 and positions[0].epoch
    assert [(k, p.offset, p.data) for k, p in handler.pubs] == [(KEY, i + 1, b"%d" % i) for i in range(5)]
    hist = await broker.history(KEY)
    assert hist.position == positions[-1]


async def test_channels_and_tenants_have_their_own_streams(broker: MemoryBroker) -> None:
    a = await publish_n(broker, 3, KEY)
    b = await publish_n(broker, 2, OTHER)
    assert [p.offset for p in b] == [1, 2]
    assert a[0].epoch != b[0].epoch
    assert offsets((await broker.history(OTHER)).publications) == [1, 2]


async def test_publish_without_history_has_no_position(broker: MemoryBroker, handler: Handler) -> None:
    for policy in (None, HistoryPolicy(0, 60.0), HistoryPolicy(10, 0.0)):
        result = await broker.publish(KEY, b"1", history=policy)
        assert result.position == StreamPosition() and not result.suppressed
    assert [p.offset for _, p in handler.pubs] == [0, 0, 0]
    hist = await broker.history(KEY)
    assert hist.publications == [] and hist.position.offset == 0


async def test_publication_carries_info_tags_and_time(broker: MemoryBroker, handler: Handler) -> None:
    info = ClientInfo("u", "c", b'{"a":1}', None)
    await broker.publish(KEY, b"{}", info=info, tags={"k": "v"}, history=HIST)
    pub = handler.pubs[0][1]
    assert pub.info == info and pub.tags == {"k": "v"} and pub.time > 0


async def test_history_is_empty_position_of_a_new_stream(broker: MemoryBroker) -> None:
    first = await broker.history(KEY, limit=0)
    assert first.position.offset == 0 and first.position.epoch and first.publications == []
    assert (await broker.history(KEY, limit=0)).position == first.position
    # the stream keeps that epoch when publishing begins
    assert (await broker.publish(KEY, b"1", history=HIST)).position == StreamPosition(1, first.position.epoch)


async def test_idle_stream_loses_its_epoch_after_meta_ttl(broker: MemoryBroker, clock: Clock) -> None:
    policy = HistoryPolicy(10, 60.0, meta_ttl=100.0)
    old = (await broker.publish(KEY, b"1", history=policy)).position
    clock.now += 100.0
    assert (await broker.history(KEY, limit=0, meta_ttl=100.0)).position == old
    clock.now += 0.5
    new = (await broker.publish(KEY, b"2", history=policy)).position
    assert new.offset == 1 and new.epoch != old.epoch
    with pytest.raises(UnrecoverablePosition):
        await broker.history(KEY, since=old, meta_ttl=100.0)


async def test_default_meta_ttl(broker: MemoryBroker, clock: Clock) -> None:
    old = (await broker.publish(KEY, b"1", history=HIST)).position
    clock.now += DEFAULT_META_TTL
    assert (await broker.history(KEY, limit=0)).position == old
    clock.now += 1
    assert (await broker.history(KEY, limit=0)).position.epoch != old.epoch


async def test_remove_history_keeps_position(broker: MemoryBroker) -> None:
    positions = await publish_n(broker, 3)
    await broker.remove_history(KEY)
    hist = await broker.history(KEY)
    assert hist.publications == [] and hist.position == positions[-1]
    assert (await broker.publish(KEY, b"x", history=HIST)).position == StreamPosition(4, positions[-1].epoch)
    await broker.remove_history(("", "never-published"))


# ---------------------------------------------------------------- trimming


async def test_history_size_trims_oldest(broker: MemoryBroker) -> None:
    policy = HistoryPolicy(size=3, ttl=60.0)
    await publish_n(broker, 5, history=policy)
    hist = await broker.history(KEY)
    assert offsets(hist.publications) == [3, 4, 5]
    assert [p.data for p in hist.publications] == [b"2", b"3", b"4"]
    assert hist.position.offset == 5


async def test_history_ttl_drops_expired(broker: MemoryBroker, clock: Clock) -> None:
    policy = HistoryPolicy(size=10, ttl=10.0)
    await broker.publish(KEY, b"a", history=policy)
    clock.now += 5
    await broker.publish(KEY, b"b", history=policy)
    clock.now += 4.999
    assert offsets((await broker.history(KEY)).publications) == [1, 2]
    clock.now += 0.001  # exactly ttl after the first: gone
    assert offsets((await broker.history(KEY)).publications) == [2]
    clock.now += 5
    hist = await broker.history(KEY)
    assert hist.publications == [] and hist.position.offset == 2
    assert (await broker.publish(KEY, b"c", history=policy)).position.offset == 3


async def test_sweep_drops_expired_publications_and_idle_streams(broker: MemoryBroker, clock: Clock) -> None:
    policy = HistoryPolicy(size=10, ttl=10.0, meta_ttl=50.0)
    old = (await broker.publish(KEY, b"a", history=policy)).position
    clock.now += 20
    broker.sweep()
    assert (await broker.history(KEY, meta_ttl=50.0)).publications == []
    clock.now += 31
    broker.sweep()
    assert (await broker.history(KEY, meta_ttl=50.0)).position.epoch != old.epoch


# ---------------------------------------------------------------- idempotency


async def test_idempotency_key_suppresses_within_300s_and_not_after(
    broker: MemoryBroker, clock: Clock, handler: Handler
) -> None:
    assert IDEMPOTENCY_TTL == 300.0
    policy = HistoryPolicy(size=10, ttl=3600.0)
    first = await broker.publish(KEY, b"1", history=policy, idempotency_key="k")
    assert not first.suppressed and first.position.offset == 1
    clock.now += 299.5
    again = await broker.publish(KEY, b"1", history=policy, idempotency_key="k")
    assert again.suppressed and again.position == first.position
    assert len(handler.pubs) == 1
    assert offsets((await broker.history(KEY)).publications) == [1]
    clock.now += 0.5  # 300 s after the first: the key is forgotten
    later = await broker.publish(KEY, b"1", history=policy, idempotency_key="k")
    assert not later.suppressed and later.position.offset == 2
    assert len(handler.pubs) == 2
    # the new publish starts a new window
    clock.now += 299
    assert (await broker.publish(KEY, b"1", history=policy, idempotency_key="k")).suppressed
    assert offsets((await broker.history(KEY)).publications) == [1, 2]


async def test_idempotency_is_per_channel_and_key(broker: MemoryBroker, handler: Handler) -> None:
    await broker.publish(KEY, b"1", history=HIST, idempotency_key="k")
    assert not (await broker.publish(OTHER, b"1", history=HIST, idempotency_key="k")).suppressed
    assert not (await broker.publish(KEY, b"1", history=HIST, idempotency_key="j")).suppressed
    assert not (await broker.publish(KEY, b"1", history=HIST)).suppressed
    assert not (await broker.publish(KEY, b"1", history=HIST, idempotency_key="")).suppressed
    assert len(handler.pubs) == 5


async def test_idempotency_without_history(broker: MemoryBroker, handler: Handler) -> None:
    await broker.publish(KEY, b"1", idempotency_key="k")
    result = await broker.publish(KEY, b"1", idempotency_key="k")
    assert result.suppressed and result.position == StreamPosition()
    assert len(handler.pubs) == 1


async def test_sweep_forgets_old_idempotency_keys(broker: MemoryBroker, clock: Clock) -> None:
    await broker.publish(KEY, b"1", idempotency_key="k")
    clock.now += 300
    broker.sweep()
    assert broker._idempotent == {}  # noqa: SLF001 - the memory bound is the point


# ---------------------------------------------------------------- history queries


async def test_limit(broker: MemoryBroker) -> None:
    await publish_n(broker, 5)
    assert offsets((await broker.history(KEY)).publications) == [1, 2, 3, 4, 5]
    assert offsets((await broker.history(KEY, limit=-1)).publications) == [1, 2, 3, 4, 5]
    assert offsets((await broker.history(KEY, limit=2)).publications) == [1, 2]
    none = await broker.history(KEY, limit=0)
    assert none.publications == [] and none.position.offset == 5
    assert offsets((await broker.history(KEY, limit=100)).publications) == [1, 2, 3, 4, 5]


async def test_reverse(broker: MemoryBroker) -> None:
    await publish_n(broker, 5)
    assert offsets((await broker.history(KEY, reverse=True)).publications) == [5, 4, 3, 2, 1]
    assert offsets((await broker.history(KEY, reverse=True, limit=2)).publications) == [5, 4]


async def test_since(broker: MemoryBroker) -> None:
    positions = await publish_n(broker, 5)
    epoch = positions[0].epoch
    assert offsets((await broker.history(KEY, since=StreamPosition(2, epoch))).publications) == [3, 4, 5]
    assert offsets((await broker.history(KEY, since=StreamPosition(2, epoch), limit=2)).publications) == [
        3,
        4,
    ]
    assert offsets((await broker.history(KEY, since=StreamPosition(0, epoch))).publications) == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert (await broker.history(KEY, since=StreamPosition(5, epoch))).publications == []
    assert (await broker.history(KEY, since=StreamPosition(9, epoch))).publications == []


async def test_since_reverse(broker: MemoryBroker) -> None:
    epoch = (await publish_n(broker, 5))[0].epoch
    assert offsets(
        (await broker.history(KEY, since=StreamPosition(4, epoch), reverse=True)).publications
    ) == [3, 2, 1]
    assert offsets(
        (await broker.history(KEY, since=StreamPosition(4, epoch), reverse=True, limit=2)).publications
    ) == [3, 2]
    assert (await broker.history(KEY, since=StreamPosition(1, epoch), reverse=True)).publications == []


async def test_wrong_epoch_is_unrecoverable(broker: MemoryBroker) -> None:
    await publish_n(broker, 3)
    for epoch in ("not-the-epoch", ""):
        with pytest.raises(UnrecoverablePosition):
            await broker.history(KEY, since=StreamPosition(1, epoch))
    assert issubclass(UnrecoverablePosition, ChannelError)


async def test_history_returns_a_copy(broker: MemoryBroker) -> None:
    await publish_n(broker, 3)
    (await broker.history(KEY)).publications.clear()
    assert offsets((await broker.history(KEY)).publications) == [1, 2, 3]


# ---------------------------------------------------------------- fan-out and lifecycle


async def test_join_leave_and_no_handler(broker: MemoryBroker, handler: Handler) -> None:
    info = ClientInfo("u", "c")
    await broker.publish_join(KEY, info)
    await broker.publish_leave(KEY, info)
    assert handler.joins == [(KEY, info)] and handler.leaves == [(KEY, info)]
    silent = MemoryBroker()
    await silent.publish(KEY, b"1", history=HIST)
    await silent.publish_join(KEY, info)
    await silent.publish_leave(KEY, info)
    await silent.subscribe(KEY)
    await silent.unsubscribe(KEY)


async def test_start_and_close_the_sweeper(clock: Clock) -> None:
    broker = MemoryBroker(clock=clock, sweep_interval=3600)
    await broker.start()
    await broker.start()
    await broker.close()
    await broker.close()


# ---------------------------------------------------------------- property


@settings(max_examples=100, deadline=None)
@given(
    size=st.integers(1, 6),
    ops=st.lists(st.one_of(st.just("pub"), st.integers(1, 40)), max_size=40),
)
async def test_history_is_the_newest_unexpired_suffix(size: int, ops: list[str | int]) -> None:
    """Whatever the publishes and clock steps, history holds the last ``size`` publications still within
    their ttl, with contiguous offsets ending at the top, and the epoch never changes."""
    clock = Clock()
    broker = MemoryBroker(clock=clock)
    policy = HistoryPolicy(size=size, ttl=30.0, meta_ttl=10_000.0)
    published: list[tuple[int, float]] = []  # offset, time
    epochs = set()
    for op in ops:
        if isinstance(op, str):
            pos = (await broker.publish(KEY, b"x", history=policy)).position
            assert pos.offset == len(published) + 1
            epochs.add(pos.epoch)
            published.append((pos.offset, clock.now))
        else:
            clock.now += op
        hist = await broker.history(KEY, meta_ttl=10_000.0)
        epochs.add(hist.position.epoch)
        expected = [o for o, t in published[-size:] if t + 30.0 > clock.now]
        assert offsets(hist.publications) == expected
        assert hist.position.offset == len(published)
    assert len(epochs) <= 1


# ---------------------------------------------------------------- reads keep nothing; epochs are never reused


async def test_reading_a_name_keeps_nothing(broker: MemoryBroker) -> None:
    """(Issue 10.) 100k history reads of fresh names kept 107 MB for 90 days: only a publication creates a
    stream now."""
    for i in range(1000):
        key = ("t", f"never:{i}")
        hist = await broker.history(key, limit=0)
        assert hist.position.offset == 0 and hist.position.epoch
        with pytest.raises(UnrecoverablePosition):
            await broker.history(key, since=StreamPosition(3, "elsewhere"))
        await broker.history(key, since=hist.position, reverse=True)
    assert broker._streams == {} and broker._meta_ttl == {}  # noqa: SLF001 - the memory bound is the point


async def test_an_empty_stream_read_in_another_meta_window_gets_another_epoch(
    broker: MemoryBroker, clock: Clock
) -> None:
    """The derived epoch of an absent stream changes with the meta-ttl window: a reader told E before the
    boundary cannot take the stream its first publication creates after it for the one it read."""
    policy = HistoryPolicy(10, 60.0, meta_ttl=100.0)
    clock.now = 1099.0
    told = (await broker.history(KEY, limit=0, meta_ttl=100.0)).position
    clock.now = 1100.0
    first = (await broker.publish(KEY, b"1", history=policy)).position
    assert first.offset == 1 and first.epoch != told.epoch
    with pytest.raises(UnrecoverablePosition):
        await broker.history(KEY, since=told, meta_ttl=100.0)


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.just("pub"),
            st.just("read"),
            st.tuples(st.just("recover"), st.integers(0, 1000)),
            st.tuples(st.just("wait"), st.floats(0.0, 60.0)),
        ),
        max_size=40,
    )
)
async def test_no_position_ever_told_recovers_into_a_gap(ops: list[Any]) -> None:
    """Whatever the publishes, reads (of an absent or live stream) and clock steps, including idle spells past
    the meta ttl that end a stream and window boundaries: recovering from any position the broker ever told
    is refused (UnrecoverablePosition, or a history that does not reach back to it) or yields exactly the
    publications made after that position was told."""
    clock = Clock()
    broker = MemoryBroker(clock=clock)
    policy = HistoryPolicy(size=5, ttl=40.0, meta_ttl=50.0)
    published: list[bytes] = []
    told: list[tuple[StreamPosition, int]] = []  # a position, and how many publications existed then
    for op in ops:
        if op == "pub":
            data = b"%d" % len(published)
            published.append(data)
            told.append(((await broker.publish(KEY, data, history=policy)).position, len(published)))
        elif op == "read":
            told.append(((await broker.history(KEY, limit=0, meta_ttl=50.0)).position, len(published)))
        elif op[0] == "wait":
            clock.now += op[1]
        elif told:
            position, seen = told[op[1] % len(told)]
            try:
                hist = await broker.history(KEY, since=position, meta_ttl=50.0)
            except UnrecoverablePosition:
                continue
            offsets_ = [p.offset for p in hist.publications]
            exact = offsets_ == list(range(position.offset + 1, hist.position.offset + 1))
            if exact and hist.position.epoch == position.epoch:
                assert [p.data for p in hist.publications] == published[seen:]
