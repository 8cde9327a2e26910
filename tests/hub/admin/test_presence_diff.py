"""The console's presence diff (hub/admin/presence_diff.py): pure functions, checked without a loop or a
browser, as properties over random states and diffs."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hub.admin import presence_diff as pd

clients = st.sampled_from([f"c{i}" for i in range(8)])
users = st.sampled_from(["", "alice", "bob", "carol"])
metas = st.builds(
    lambda c, u, info: {"client": c, "user": u, **({"conn_info": info} if info is not None else {})},
    clients,
    users,
    st.none() | st.integers(0, 2),
)


@st.composite
def states(draw: Any) -> pd.State:
    chosen = draw(st.lists(metas, max_size=8, unique_by=lambda m: m["client"]))
    return pd.from_metas(chosen)


diffs = st.builds(pd.Diff, joins=states(), leaves=states())


@given(states(), states())
def test_sync_state_then_its_diff_reaches_the_new_state(old: pd.State, new: pd.State) -> None:
    synced = pd.sync_state(old, new)
    assert synced.state == new
    assert pd.sync_diff(old, synced.diff).state == new


@given(states())
def test_a_state_synced_with_itself_changes_nothing(state: pd.State) -> None:
    assert not pd.sync_state(state, state).diff
    assert not pd.sync_diff(state, pd.Diff(joins=state)).diff


@given(states(), diffs)
def test_sync_diff_mutates_nothing_and_is_idempotent(state: pd.State, diff: pd.Diff) -> None:
    before, diff_before = copy.deepcopy(state), copy.deepcopy(diff)
    once = pd.sync_diff(state, diff)
    assert (state, diff) == (before, diff_before)
    twice = pd.sync_diff(once.state, diff)
    assert twice.state == once.state
    assert not twice.diff


@given(states(), diffs)
def test_the_effective_diff_is_exactly_what_changed(state: pd.State, diff: pd.Diff) -> None:
    synced = pd.sync_diff(state, diff)
    assert synced.diff == pd.sync_state(state, synced.state).diff
    assert all(metas for metas in synced.state.values())  # no key is left without a connection


@given(states(), metas)
def test_a_join_then_its_leave_leave_the_rest_untouched(state: pd.State, meta: dict[str, Any]) -> None:
    joined = pd.sync_diff(state, pd.join(meta))
    left = pd.sync_diff(joined.state, pd.leave(meta))
    key = pd.presence_key(meta)
    expected = {
        k: {c: m for c, m in ms.items() if (k, c) != (key, meta["client"])} for k, ms in state.items()
    }
    assert left.state == {k: ms for k, ms in expected.items() if ms}


@given(states(), metas)
def test_a_leave_that_is_not_the_join_removes_nothing(state: pd.State, meta: dict[str, Any]) -> None:
    joined = pd.sync_diff(state, pd.join(meta)).state
    other = {**meta, "conn_info": "another"}
    assert pd.sync_diff(joined, pd.leave(other)).state == joined


def test_a_changed_meta_is_a_leave_and_a_join() -> None:
    old = pd.from_metas([{"client": "c1", "user": "alice", "conn_info": 1}])
    new = pd.from_metas([{"client": "c1", "user": "alice", "conn_info": 2}])
    diff = pd.sync_state(old, new).diff
    assert diff.as_json() == {
        "joins": {"alice": {"c1": {"client": "c1", "user": "alice", "conn_info": 2}}},
        "leaves": {"alice": {"c1": {"client": "c1", "user": "alice", "conn_info": 1}}},
    }
    assert pd.count(new) == (1, 1)


def test_a_leave_of_someone_absent_is_no_change() -> None:
    state = pd.from_metas([{"client": "c1", "user": "alice"}])
    synced = pd.sync_diff(state, pd.leave({"client": "c2", "user": "bob"}))
    assert synced.state == state and not synced.diff
