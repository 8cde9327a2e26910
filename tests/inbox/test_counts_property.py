"""Counts never drift: random concurrent notify/mark/expire sequences from two store instances sharing one
database (two nodes; on SQLite two connections to one file) and several devices.

Afterwards, for every user, the counts returned by the user's last change (the highest ``version`` any
device received), a fresh ``counts()`` and a count over the stored items are all equal.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inbox.inbox import InboxOptions
from inbox.inbox_postgres import PostgresInbox
from inbox.inbox_sqlite import SqliteInbox
from inbox.model import Counts, ListQuery, Mark, MarkAction, Notification
from tests.inbox.conftest import Clock, Store, fresh_database
from tests.inbox.stored import stored_counts
from tests.postgres_servers import PostgresServer

USERS = ["u0", "u1", "u2"]
DEVICES = 3
"""Per user; each device talks to one of the two nodes."""

notify_op = st.tuples(
    st.just("notify"),
    st.lists(st.sampled_from(USERS), min_size=1, max_size=3, unique=True),
    st.sampled_from([None, "g1", "g2"]),  # group key
    st.sampled_from([None, None, "d1"]),  # dedupe key
    st.sampled_from([None, None, 150.0]),  # expires in
)
mark_op = st.tuples(
    st.just("mark"),
    st.sampled_from(USERS),
    st.sampled_from(list(MarkAction)),
    st.sampled_from(["ids", "all", "up_to"]),
    st.lists(st.integers(0, 50), max_size=4),  # indexes into the ids seen so far
)
other_op = st.sampled_from([("tick",), ("expire",)])
ops = st.lists(st.one_of(notify_op, notify_op, mark_op, mark_op, other_op), min_size=1, max_size=24)


@dataclass
class Run:
    nodes: list[Store]
    clock: Clock
    tenant: str
    ids: list[int] = field(default_factory=list)
    shown: dict[str, Counts] = field(default_factory=dict)
    """Per user: the newest counts any device was told (what its badge shows)."""

    def told(self, user: str, counts: Counts) -> None:
        if user not in self.shown or counts.version > self.shown[user].version:
            self.shown[user] = counts

    async def step(self, k: int, op: tuple[object, ...]) -> None:
        node = self.nodes[k % len(self.nodes)]  # device k talks to this node
        if op[0] == "notify":
            _, users, group, dedupe, expires = op
            n = Notification(
                self.tenant,
                tuple(users),  # type: ignore[arg-type]
                "comment",
                {"k": k},
                group_key=group,  # type: ignore[arg-type]
                group_window=200.0 if group else None,
                dedupe_key=dedupe,  # type: ignore[arg-type]
                dedupe_window=120.0,
                expire_at=self.clock.now + expires if expires else None,  # type: ignore[operator]
            )
            result = await node.notify(n)
            self.ids += [r.item_id for r in result.recipients if r.item_id is not None]
            for user, counts in result.counts.items():
                self.told(user, counts)
        elif op[0] == "mark":
            _, user, action, scope, picks = op
            assert isinstance(user, str) and isinstance(action, MarkAction) and isinstance(picks, list)
            if scope == "ids":
                chosen = tuple(sorted({self.ids[i % len(self.ids)] for i in picks})) if self.ids else ()
                if not chosen:
                    return
                mark = Mark(action, ids=chosen)
            elif scope == "up_to":
                head = (await node.list_items(self.tenant, user, ListQuery(limit=2))).head_cursor
                if head is None:
                    return
                mark = Mark(action, up_to=head)
            else:
                mark = Mark(action, everything=True)
            result = await node.mark(self.tenant, user, mark)
            if result.changed:
                self.told(user, result.counts)
        elif op[0] == "tick":
            self.clock.advance(100.0)
        else:
            await self.sweep(node)

    async def sweep(self, node: Store) -> None:
        for swept in await node.expire(limit=10000):
            if swept.tenant == self.tenant:  # the sweep is global: earlier examples' tenants expire too
                self.told(swept.user, swept.counts)


async def scenario(nodes: list[Store], clock: Clock, tenant: str, steps: list[tuple[object, ...]]) -> None:
    run = Run(nodes, clock, tenant)
    # Devices act concurrently: steps run in waves of up to DEVICES * 2 at once, across both nodes.
    wave = DEVICES * 2
    for start in range(0, len(steps), wave):
        await asyncio.gather(*(run.step(start + i, op) for i, op in enumerate(steps[start : start + wave])))
    await run.sweep(nodes[0])  # what expired since the last change is swept, and its counts pushed
    for user in USERS:
        fresh = await nodes[1].counts(tenant, user)
        stored = await stored_counts(nodes[0], tenant, user)
        shown = run.shown.get(user, Counts())
        assert shown == fresh == stored, (user, shown, fresh, stored)


_tenants = itertools.count()


@pytest.fixture(scope="module")
def where(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The database both nodes share: a SQLite file, or a schema on the session's PostgreSQL."""
    if request.param == "sqlite":
        yield str(tmp_path_factory.mktemp("inbox") / "inbox.sqlite3")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        yield asyncio.run(fresh_database(server))


@pytest.mark.parametrize("where", ["sqlite", "postgres"], indirect=True)
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=ops)
def test_counts_pushed_fresh_and_stored_agree_after_concurrent_changes(
    where: str, steps: list[tuple[object, ...]]
) -> None:
    tenant = f"t{next(_tenants)}"  # each example its own tenant: the users start empty

    async def main() -> None:
        clock = Clock()
        options = InboxOptions(clock=clock)
        nodes: list[Store]
        if where.startswith("postgresql://"):
            nodes = [PostgresInbox(where, options, pool_size=3) for _ in range(2)]
        else:
            nodes = [SqliteInbox(Path(where), options) for _ in range(2)]
        for node in nodes:
            await node.open()
        try:
            await scenario(nodes, clock, tenant, steps)
        finally:
            for node in nodes:
                await node.close()

    asyncio.run(main())
