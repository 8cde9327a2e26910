"""In-process presence: the shared behaviour (tests/presence/cases.py) plus what only memory promises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from channels.publication import ClientInfo
from presence.presence_memory import MemoryPresence
from tests.presence.cases import CASES, ROOM, Case, Op, check_against_model, ops_strategy


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
async def test_shared_behaviour(case: Case) -> None:
    p = MemoryPresence()
    await case(p, p)


async def test_empty_channels_are_forgotten() -> None:
    p = MemoryPresence()
    await p.add(ROOM, ClientInfo("alice", "c1"))
    await p.add(ROOM, ClientInfo("bob", "c2"))
    await p.remove(ROOM, "c1")
    await p.remove(ROOM, "c2")
    assert p._channels == {}  # noqa: SLF001 - empty channels must not pile up


async def test_close_forgets_everything() -> None:
    p = MemoryPresence()
    await p.add(ROOM, ClientInfo("alice", "c1"))
    await p.close()
    assert await p.get(ROOM) == {}


@settings(max_examples=100, deadline=None)
@given(ops_strategy)
async def test_matches_a_model(ops: list[Op]) -> None:
    p = MemoryPresence()
    await check_against_model([p], ops)
