"""Where an agent's cursor is, in the form the Yjs editor bindings read from awareness (pure).

What the bindings put into awareness (read from their sources):

- y-codemirror.next (``y-remote-selections.js``), y-prosemirror and TipTap's collaboration cursor (which
  uses y-prosemirror's ``yCursorPlugin``), y-quill: the field ``cursor`` holds ``{anchor, head}``, each a
  ``Y.RelativePosition`` (``Y.createRelativePositionFromTypeIndex(type, index)``) that ``JSON.stringify``
  turned into ``{"type": {"client", "clock"} | null, "tname": str | null, "item": {"client", "clock"} |
  null, "assoc": int}``; a reader calls ``Y.createRelativePositionFromJSON`` then
  ``Y.createAbsolutePositionFromRelativePosition`` and draws the caret at ``head`` and a selection between
  the two. y-codemirror.next draws it only when the position's type is its ``Y.Text``; y-prosemirror when
  it lies inside its ``Y.XmlFragment`` (an ``XmlText`` inside it included).
- the field ``user`` holds ``{name, color, colorLight}``; y-prosemirror wants ``color`` as ``#rrggbb``
  (anything else draws a warning), y-codemirror.next uses ``colorLight`` for the selection
  (default ``color + "33"``).

A relative position names an item (a character) by its id, ``(client, clock)``, with ``assoc`` 0 (the
position before that character, so it moves with it) or -1 (after it); or, with no item, the start (assoc
-1) or end (assoc 0) of a type, named ``tname`` for a root and ``type`` (the type's item id) otherwise.
An item deleted since still decodes, to where it stood: the position of a deleted character is the
point of its deletion.

pycrdt's ``StickyIndex`` writes this same JSON (``to_json()``; its binary ``encode()`` is Yjs's
``encodeRelativePosition``), but in pycrdt 0.14 it cannot be trusted to find the character: it walks the
items by their UTF-8 length (pycrdt's index unit) and then takes the rest of the index as a UTF-16 offset
into the item it reached, so after any non-ASCII character it names the wrong character or one that does
not exist (and ``get_index`` then panics); AFTER the last character it panics; an ``XmlText`` has none.
So positions are built here from item ids that follow from what a transaction did: the ids it inserted
are its client's clocks before and after (``clock``), the ids it deleted are the new entries of the
document's delete set (``deleted`` before and after, ``first_new_deletion``).
"""

from __future__ import annotations

import hashlib
from typing import Any, TypeAlias

from pycrdt import Doc

from sync.protocol import Reader
from sync.update import read_delete_set

RelativePosition: TypeAlias = dict[str, Any]
"""The JSON form of a ``Y.RelativePosition``."""

CURSOR_FIELD = "cursor"
USER_FIELD = "user"
BOT_FIELD = "bot"
"""True in an agent's state (and in its ``user``): a client tells agents from people by either."""
MAX_NAME_LENGTH = 64

PALETTE = ("#30bced", "#6eeb83", "#ffbc42", "#ecd444", "#ee6352", "#9ac2c9", "#8acb88", "#1be7ff")
"""Colours the Yjs demos use for people; an agent without a colour of its own gets one by its name."""


def item_position(client: int, clock: int, start: bool = False) -> RelativePosition:
    """A relative position before (``start``) or after the item ``(client, clock)``."""
    return {"item": {"client": client, "clock": clock}, "assoc": 0 if start else -1}


def clock(doc: Doc[Any]) -> int:
    """The next clock of ``doc``'s own client (inside a transaction: after what it did so far)."""
    reader = Reader(doc.get_state())
    for _ in range(reader.var_uint()):
        client, value = reader.var_uint(), reader.var_uint()
        if client == doc.client_id:
            return value
    return 0


def deleted(doc: Doc[Any]) -> dict[int, list[tuple[int, int]]]:
    """The delete set of ``doc`` (client -> ``[start, end)`` clock ranges), inside a transaction too.

    An update from the current state vector holds no struct, only the whole delete set; pycrdt's
    ``Snapshot.from_doc`` would say the same but blocks forever inside a transaction.
    """
    reader = Reader(doc.get_update(doc.get_state()))
    for _ in range(reader.var_uint()):  # no structs: every section is empty
        reader.var_uint()
        reader.var_uint()
        reader.var_uint()
    return read_delete_set(reader)


def first_new_deletion(
    before: dict[int, list[tuple[int, int]]], after: dict[int, list[tuple[int, int]]]
) -> tuple[int, int] | None:
    """An id deleted in ``after`` and not in ``before``."""
    for client, ranges in after.items():
        old = sorted(before.get(client, ()))
        for start, end in ranges:
            candidate = start
            for old_start, old_end in old:
                if old_start <= candidate < old_end:
                    candidate = old_end
            if candidate < end:
                return client, candidate
    return None


def agent_color(name: str) -> str:
    return PALETTE[hashlib.blake2b(name.encode(), digest_size=1).digest()[0] % len(PALETTE)]


def agent_state(
    name: str,
    anchor: RelativePosition | None = None,
    head: RelativePosition | None = None,
    color: str | None = None,
) -> dict[str, Any]:
    """The awareness state of an agent: who (``bot`` and ``user.bot`` are true) and, when given, its
    cursor."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ValueError(f"an agent's name is 1 to {MAX_NAME_LENGTH} printable characters")
    if color is None:
        color = agent_color(name)
    elif not _is_hex_color(color):
        raise ValueError("color must be '#rrggbb'")
    cursor = None if anchor is None or head is None else {"anchor": anchor, "head": head}
    return {
        USER_FIELD: {"name": name, "color": color, "colorLight": color + "33", "bot": True},
        BOT_FIELD: True,
        CURSOR_FIELD: cursor,
    }


def _is_hex_color(color: Any) -> bool:
    return (
        isinstance(color, str)
        and len(color) == 7
        and color[0] == "#"
        and all(c in "0123456789abcdefABCDEF" for c in color[1:])
    )
