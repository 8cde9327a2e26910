"""The agent's awareness state and the id bookkeeping behind its cursor, without an event loop (what Yjs
makes of them: tests/sync/test_cursors_js.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pycrdt import Doc, Text

from sync.cursors import PALETTE, agent_color, agent_state, clock, deleted, first_new_deletion, item_position
from sync.protocol import AwarenessEntry, decode_awareness, encode_awareness


def test_agent_state_is_what_the_editor_bindings_read() -> None:
    anchor, head = item_position(5, 0, start=True), item_position(5, 3)
    state = agent_state("Summarizer", anchor, head, color="#ee6352")
    assert state == {
        "user": {"name": "Summarizer", "color": "#ee6352", "colorLight": "#ee635233", "bot": True},
        "bot": True,
        "cursor": {"anchor": {"item": {"client": 5, "clock": 0}, "assoc": 0}, "head": head},
    }
    assert head == {"item": {"client": 5, "clock": 3}, "assoc": -1}
    (entry,) = decode_awareness(encode_awareness([AwarenessEntry(9, 1, orjson.dumps(state))]))
    assert orjson.loads(entry.state) == state
    assert agent_state("Summarizer")["cursor"] is None  # present, no cursor (between edits)


def test_an_agent_without_a_colour_gets_a_stable_one_from_its_name() -> None:
    assert agent_color("helper") == agent_color("helper") in PALETTE
    assert len({agent_color(f"agent {n}") for n in range(40)}) > 3
    assert agent_state("helper")["user"]["color"] == agent_color("helper")


@pytest.mark.parametrize(
    ("name", "color"),
    [
        ("", None),
        ("x" * 65, None),
        ("tab\there", None),
        (7, None),
        ("ok", "red"),
        ("ok", "#12345"),
        ("ok", "#1234567"),
    ],
)
def test_agent_state_refuses_bad_names_and_colours(name: Any, color: Any) -> None:
    with pytest.raises(ValueError):
        agent_state(name, color=color)


def test_clock_and_deletions_inside_a_transaction() -> None:
    doc: Doc[Any] = Doc(client_id=3)
    text = doc.get("t", type=Text)
    assert clock(doc) == 0
    with doc.transaction():
        text += "hello"
        assert clock(doc) == 5  # the transaction's own inserts count at once
        before = deleted(doc)
        del text[1:3]
        after = deleted(doc)
    assert before == {} and after == {3: [(1, 3)]}
    assert first_new_deletion(before, after) == (3, 1)
    with doc.transaction():
        del text[0:2]  # "h" (clock 0) and "l" (clock 3): around what was deleted before
        again = deleted(doc)
    assert first_new_deletion(after, again) == (3, 0)
    assert first_new_deletion(again, again) is None
    assert first_new_deletion({3: [(0, 4)]}, {3: [(0, 5)]}) == (3, 4)
