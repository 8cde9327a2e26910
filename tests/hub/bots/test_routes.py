"""``hub.bots.routes`` without a loop: the longest registered prefix wins, bounds hold, and a bot's
registrations and calls go with it (a hypothesis model check against plain sets and dicts)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.bots.routes import LimitReached, Pending, Routes


def test_longest_prefix_and_tenants() -> None:
    routes = Routes(per_connection=2, per_node=3)
    assert routes.add("", "agent.", "a") and not routes.add("", "agent.", "a")
    routes.add("", "agent.weather.", "b")
    routes.add("acme", "agent.", "c")
    assert routes.bots_for("", "agent.weather.today") == ["b"]
    assert routes.bots_for("", "agent.news") == ["a"]
    assert routes.bots_for("acme", "agent.weather.today") == ["c"]
    assert routes.bots_for("", "agen") == [] and routes.bots_for("other", "agent.x") == []
    with pytest.raises(LimitReached, match="node"):
        routes.add("", "agent.x", "d")
    with pytest.raises(ValueError, match="one tenant"):
        routes.add("acme", "agent.y", "a")
    routes.drop("b")
    assert routes.bots_for("", "agent.weather.today") == ["a"] and routes.size == 2


def test_pending_picks_the_least_busy_bot_with_room() -> None:
    pending: Pending[str] = Pending(per_bot=2)
    first = pending.open("a", "call 1")
    assert pending.pick(["a", "b"]) == "b"
    pending.open("b", "call 2")
    pending.open("a", "call 3")
    assert pending.pick(["a", "b"]) == "b"
    pending.open("b", "call 4")
    assert pending.pick(["a", "b"]) is None
    with pytest.raises(LimitReached):
        pending.open("a", "call 5")
    assert pending.close("a", first) == "call 1" and pending.close("a", first) is None
    assert pending.close("b", first) is None  # request ids are per bot: another bot cannot answer it
    assert sorted(pending.drop("b")) == ["call 2", "call 4"] and pending.count("b") == 0


_step = st.tuples(
    st.sampled_from(["add", "remove", "drop"]),
    st.sampled_from(["", "t"]),
    st.sampled_from(["a.", "a.b", "a.bc", "b"]),
    st.sampled_from(["x", "y", "z"]),
)


@given(st.lists(_step, max_size=40), st.sampled_from(["a.bcd", "a.b", "b", "a.", "c"]))
def test_routes_match_a_model(steps: list[Any], method: str) -> None:
    routes = Routes(per_connection=2, per_node=4)
    model: dict[str, tuple[str, set[str]]] = {}
    order: list[tuple[str, str, str]] = []
    for op, tenant, prefix, bot in steps:
        if op == "add":
            owner = model.get(bot)
            if owner is not None and owner[0] != tenant:
                with pytest.raises(ValueError):
                    routes.add(tenant, prefix, bot)
                continue
            mine = owner[1] if owner else set()
            full = prefix not in mine and (len(mine) >= 2 or sum(len(p) for _, p in model.values()) >= 4)
            if full:
                with pytest.raises(LimitReached):
                    routes.add(tenant, prefix, bot)
                continue
            assert routes.add(tenant, prefix, bot) == (prefix not in mine)
            if prefix not in mine:
                model.setdefault(bot, (tenant, set()))[1].add(prefix)
                order.append((tenant, prefix, bot))
        elif op == "remove":
            had = bot in model and prefix in model[bot][1]
            assert routes.remove(prefix, bot) == had
            if had:
                owner_tenant, prefixes = model[bot]
                prefixes.discard(prefix)
                if not prefixes:
                    del model[bot]
                order.remove((owner_tenant, prefix, bot))
        else:
            routes.drop(bot)
            model.pop(bot, None)
            order = [o for o in order if o[2] != bot]
        assert routes.size == sum(len(p) for _, p in model.values())
    for tenant in ("", "t"):
        served = [p for (t, p, _) in order if t == tenant and method.startswith(p)]
        longest = max(served, key=len, default=None)
        expected = [b for (t, p, b) in order if t == tenant and p == longest]
        assert routes.bots_for(tenant, method) == expected
