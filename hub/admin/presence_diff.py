"""Presence as pure data, for the console's live presence list (sans-I/O, no clock, no I/O).

Modelled on Phoenix Presence (``syncState`` / ``syncDiff``): a channel's presence is a ``State``, a map
from a presence key (the user id; ``""`` for anonymous connections) to that key's metas, one per
connection, by client id. A meta is a JSON object (``{"client", "user", "conn_info"?, "chan_info"?}``).

- ``sync_state(state, new)`` compares a fresh snapshot with what is shown and returns the new state and
  the ``Diff`` between them: ``joins`` (metas in ``new`` that are not, or not identical, in ``state``) and
  ``leaves`` (metas of ``state`` that are not, or not identical, in ``new``). A meta whose content changed
  (same client id) is one leave and one join.
- ``sync_diff(state, diff)`` applies joins and leaves as they arrive (the hub's join/leave events) and
  returns the new state and the part of the diff that changed something: a join of a meta already
  present, or a leave of one that is not, is dropped (events may repeat what a snapshot already holds).
  A leave removes a meta only if it is the one that joined (equal content, as Phoenix matches a leave to
  its join by ``phx_ref``): applied joins-first, a diff that replaces a meta keeps the new one.

Obligations (tests/hub/admin/test_presence_diff.py states them as properties):
``sync_diff(old, sync_state(old, new).diff).state == new``; a state synced with itself yields an empty
diff; neither function mutates its arguments; ``sync_diff`` is idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Meta = Mapping[str, Any]
State = Mapping[str, Mapping[str, Meta]]
"""presence key -> client id -> meta."""


@dataclass(frozen=True, slots=True)
class Diff:
    joins: State = field(default_factory=dict)
    leaves: State = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.joins) or bool(self.leaves)

    def as_json(self) -> dict[str, Any]:
        return {"joins": _plain(self.joins), "leaves": _plain(self.leaves)}


@dataclass(frozen=True, slots=True)
class Synced:
    state: State
    diff: Diff


def presence_key(meta: Meta) -> str:
    user = meta.get("user", "")
    return user if isinstance(user, str) else ""


def from_metas(metas: Iterable[Meta]) -> State:
    """The state holding ``metas`` (each a connection: ``client`` is its id)."""
    out: dict[str, dict[str, Meta]] = {}
    for meta in metas:
        out.setdefault(presence_key(meta), {})[str(meta["client"])] = meta
    return out


def _plain(state: State) -> dict[str, dict[str, Meta]]:
    return {key: dict(metas) for key, metas in state.items()}


def _subtract(a: State, b: State) -> dict[str, dict[str, Meta]]:
    """Metas of ``a`` that ``b`` does not hold identically."""
    out: dict[str, dict[str, Meta]] = {}
    for key, metas in a.items():
        theirs = b.get(key, {})
        missing = {cid: meta for cid, meta in metas.items() if theirs.get(cid) != meta}
        if missing:
            out[key] = missing
    return out


def sync_state(state: State, new: State) -> Synced:
    """``new`` replaces ``state``: the new state and what changed."""
    diff = Diff(joins=_subtract(new, state), leaves=_subtract(state, new))
    return Synced(_plain(new), diff)


def sync_diff(state: State, diff: Diff) -> Synced:
    """Apply ``diff`` (joins first, then leaves) to ``state``; return the result and the effective diff
    (what differs between ``state`` and the result). Only the keys the diff touches are copied."""
    out: dict[str, Mapping[str, Meta]] = dict(state)
    touched: dict[str, dict[str, Meta]] = {}

    def metas_of(key: str) -> dict[str, Meta]:
        if key not in touched:
            touched[key] = dict(out.get(key, {}))
            out[key] = touched[key]
        return touched[key]

    for key, metas in diff.joins.items():
        if metas:
            metas_of(key).update(metas)
    for key, metas in diff.leaves.items():
        if key in out and metas:
            current = metas_of(key)
            for cid, meta in metas.items():
                if current.get(cid) == meta:
                    del current[cid]
    before = {key: state.get(key, {}) for key in touched}
    for key, metas in touched.items():
        if not metas:
            del out[key]
    return Synced(out, Diff(joins=_subtract(touched, before), leaves=_subtract(before, touched)))


def join(meta: Meta) -> Diff:
    """The diff of one connection joining."""
    return Diff(joins={presence_key(meta): {str(meta["client"]): meta}})


def leave(meta: Meta) -> Diff:
    """The diff of one connection leaving (the hub's leave carries what its join carried)."""
    return Diff(leaves={presence_key(meta): {str(meta["client"]): meta}})


def count(state: State) -> tuple[int, int]:
    """(connections, distinct presence keys)."""
    return sum(len(m) for m in state.values()), len(state)
