"""Edits from agents that do not speak Yjs: a JSON list of operations applied as ONE pycrdt transaction.

The mirror image of ``sync.content``: that module shows a document as JSON, this one changes it with JSON.
``apply_edit`` is sans-I/O (no event loop, no store): the hub runs it on a room's live document, which
stores and relays the transaction's update like any other.

Operations (these fields and no others; ``P`` a path, ``I``/``N`` integers >= 0, ``S`` a string, ``V`` a
JSON value)::

    {"op": "text.insert",  "path": P, "index": I, "text": S}
    {"op": "text.delete",  "path": P, "index": I, "length": N}
    {"op": "text.replace", "path": P, "index": I, "length": N, "text": S}           a range
    {"op": "text.replace", "path": P, "find": S, "text": S, "occurrence": K | "all"}  K-th match (default 1)
    {"op": "map.set",      "path": P, "key": S, "value": V, "as": "text" | "map" | "array"}   ("as" optional)
    {"op": "map.delete",   "path": P, "key": S}
    {"op": "array.insert", "path": P, "index": I, "values": [V, ...], "as": ...}    ("as" optional)
    {"op": "array.delete", "path": P, "index": I, "length": N}                      (length optional, 1)

Paths. ``P`` starts with a root's name, then map keys (strings) and array indexes (integers) into nested
shared types, and on into the JSON values stored inside them: ``["doc", "sections", 2, "title"]``. In XML
(an XmlFragment root, as ProseMirror/TipTap keep a document), integers step into an element's children
(XmlElement or XmlText) and strings name an element's attributes.

Targets. Text ops edit a Text or an XmlText character-wise (a real CRDT edit that merges with concurrent
typing). ``text.replace`` with ``find`` on an XML container searches the container's XmlText descendants
in document order (a match never spans two of them). Map ops edit a Map, or an XmlElement's attributes.
Array ops edit an Array, or the children of an XML container, whose values are then a string (a new XmlText)
or ``{"element": tag, "attributes": {...}, "children": [...]}``. ``"as"`` stores a value as a new shared
type (a string as Text, an object as Map, a list as Array) instead of as a JSON value. Ops that reach into a
JSON value (a plain string, object or list stored in a map or array) rewrite that stored value as a whole:
last writer wins for it, as it does for any JSON value in Yjs. ``find`` is literal and case-sensitive;
matches are counted left to right and do not overlap (as ``str.replace`` counts them).

Roots. A root takes its kind from the document (``sync.update.root_kinds``; ``xml`` is an XmlFragment). A
root the document does not have is created by the first op that targets it directly, with the kind that
op needs (a text op makes a Text, ``map.*`` a Map, ``array.*`` an Array).

Indexes. Ops apply in order, each to the document as the ops before it left it. Text indexes and lengths
count UTF-16 code units by default (``unit="utf16"``: what ``Y.Text``, CodeMirror, JavaScript string
indexes, and the browser count), or Unicode code points (``unit="codepoint"``: what Python's ``str`` counts);
returned ranges are in the same unit. pycrdt itself counts UTF-8 bytes (yrs ``OffsetKind::Bytes``); the
conversion happens here, so an agent, a JS editor and ``GET /doc/{name}/content`` agree on every index. An
embedded object in a text counts as one unit (as in Yjs) and shows as U+FFFC in the content JSON. A UTF-16
index inside a surrogate pair is refused; indexes count code units, not grapheme clusters, exactly as a JS
editor does (an index between ``e`` and a combining accent is valid). Inserted text carries no formatting.

Sizes (``EditLimits``): ops in one edit; UTF-8 bytes the ops carry and insert (a replace of every match
counts its text once per match, a rewritten JSON value its whole size); steps in a path and nesting of
values; matches one op replaces.

Versions. ``if_version`` (see ``sync.version``) refuses the whole edit with ``StaleVersion`` unless the
document is exactly at that version (no insert and no deletion since); it may also be the version's tag
(``Version.tag``, the /content ETag), which tells only "the same" from "changed". Every result carries the
new version.

Atomicity. The whole list is checked before anything is applied: the shape of every op, the sizes, then a
dry run against a shadow of the document (the parts the ops touch, read from it lazily, changed only in
the shadow) that checks kinds, paths, indexes and matches exactly as the real run will meet them. Only
then do the ops run on the document, in one transaction: an edit applies whole or not at all. A refused
edit leaves the document byte-identical (it may type a root that had no type yet; that changes no byte).

Result. ``EditResult``: the new version; the Yjs v1 update the transaction produced (what every replica
needs, to store and relay as any update; ``b"\\x00\\x00"`` when nothing changed); the edited text ranges,
in request units as they stand right after their op, each with Yjs relative positions of its start and
end (``sync.cursors``, built from the ids of the characters the op inserted or deleted) from which an
editor shows the agent's cursor, wherever later changes move the text.

Error tree (under the package's ``SyncError``; ``op`` is the index of the offending op, None for the
request as a whole; ``reason`` says what and where)::

    EditRejected          nothing was applied
     +-- InvalidEdit      malformed, or does not fit the document: unknown op or field, wrong type, path
     |                    not found, kind mismatch, index out of range, string not found
     +-- EditTooLarge     over an ``EditLimits`` bound (also a ``LimitExceeded``)
     +-- StaleVersion     ``if_version`` is not the document's version (``current`` is)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import orjson
from pycrdt import Doc

from sync.cursors import RelativePosition
from sync.edit_nodes import (
    MISSING,
    DocNodes,
    LiveDoc,
    MapNode,
    NewShared,
    Opaque,
    Path,
    SeqNode,
    ShadowDoc,
    Step,
    TextNode,
    TextValue,
    from_codepoint,
    node_kind,
    to_codepoint,
    unit_length,
    xml_texts,
)
from sync.protocol import LimitExceeded, SyncError
from sync.update import ARRAY, MAP, TEXT
from sync.version import Relation, Version, compare, document_version, is_tag

MAX_SAFE_INTEGER = 2**53 - 1
EMPTY_UPDATE = b"\x00\x00"

Unit: TypeAlias = Literal["utf16", "codepoint"]
UNITS: tuple[Unit, ...] = ("utf16", "codepoint")


# ---------------------------------------------------------------- errors


class EditRejected(SyncError):
    """The edit was refused; the document is unchanged."""

    def __init__(self, reason: str, op: int | None = None) -> None:
        super().__init__(reason if op is None else f"op {op}: {reason}")
        self.op = op


class InvalidEdit(EditRejected):
    """The request is malformed, or an op does not fit the document."""


class EditTooLarge(EditRejected, LimitExceeded):
    """An ``EditLimits`` bound would be passed."""


class StaleVersion(EditRejected):
    """``if_version`` is not the document's version."""

    def __init__(self, reason: str, current: str) -> None:
        super().__init__(reason)
        self.current = current


@dataclass(frozen=True, slots=True)
class EditLimits:
    max_ops: int = 256
    max_bytes: int = 256 * 1024
    """UTF-8 bytes of the strings and JSON values the ops carry, and of what they insert (a replace of
    every match inserts its text once per match)."""
    max_depth: int = 32
    """Steps in a path; nesting of a JSON value or an XML element."""
    max_replacements: int = 1000
    """Matches one ``text.replace`` with ``"occurrence": "all"`` may replace."""


# ---------------------------------------------------------------- parsed ops

SHARED_KINDS = ("text", "map", "array")


@dataclass(frozen=True, slots=True)
class TextInsert:
    path: Path
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class TextDelete:
    path: Path
    index: int
    length: int


@dataclass(frozen=True, slots=True)
class TextReplace:
    path: Path
    text: str
    index: int | None = None
    length: int | None = None
    find: str | None = None
    occurrence: int | Literal["all"] = 1


@dataclass(frozen=True, slots=True)
class MapSet:
    path: Path
    key: str
    value: Any
    as_: str | None = None


@dataclass(frozen=True, slots=True)
class MapDelete:
    path: Path
    key: str


@dataclass(frozen=True, slots=True)
class ArrayInsert:
    path: Path
    index: int
    values: tuple[Any, ...]
    as_: str | None = None


@dataclass(frozen=True, slots=True)
class ArrayDelete:
    path: Path
    index: int
    length: int = 1


Op: TypeAlias = TextInsert | TextDelete | TextReplace | MapSet | MapDelete | ArrayInsert | ArrayDelete
TEXT_OPS = (TextInsert, TextDelete, TextReplace)
MAP_OPS = (MapSet, MapDelete)

_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # op name: (required fields, optional fields) besides "op" and "path"
    "text.insert": (frozenset({"index", "text"}), frozenset()),
    "text.delete": (frozenset({"index", "length"}), frozenset()),
    "text.replace": (frozenset({"text"}), frozenset({"index", "length", "find", "occurrence"})),
    "map.set": (frozenset({"key", "value"}), frozenset({"as"})),
    "map.delete": (frozenset({"key"}), frozenset()),
    "array.insert": (frozenset({"index", "values"}), frozenset({"as"})),
    "array.delete": (frozenset({"index"}), frozenset({"length"})),
}


@dataclass(frozen=True, slots=True)
class EditedRange:
    op: int
    path: Path
    """The edited text (a Text, an XmlText, or a string value inside a map or array)."""
    start: int
    end: int
    """``[start, end)`` holds what the op inserted (``start == end`` after a pure deletion), in request
    units, as the text stood right after the op."""
    anchor: RelativePosition | None = None
    head: RelativePosition | None = None
    """Yjs relative positions (JSON) of ``start`` and ``end``; None for a string value inside a map or
    array (a JSON value has no positions)."""


@dataclass(frozen=True, slots=True)
class EditResult:
    version: str
    """The document's version after the edit (``sync.version``)."""
    update: bytes
    """The Yjs v1 update of the edit's transaction (``EMPTY_UPDATE`` when nothing changed)."""
    ranges: tuple[EditedRange, ...] = ()

    @property
    def cursor(self) -> EditedRange | None:
        """Where the agent's cursor goes: the last edited range that has relative positions."""
        for edited in reversed(self.ranges):
            if edited.anchor is not None and edited.head is not None:
                return edited
        return None


# ---------------------------------------------------------------- the entry point


def apply_edit(
    doc: Doc[Any],
    ops: Any,
    *,
    if_version: str | None = None,
    unit: str = "utf16",
    limits: EditLimits = EditLimits(),
    origin: Any = None,
) -> EditResult:
    """Check ``ops`` whole, then apply them to ``doc`` in one transaction (see the module docstring).

    Must be called outside any transaction on ``doc`` (``RuntimeError``): the update is taken when this
    function's own transaction commits. Raises ``EditRejected`` (nothing applied).
    """
    if doc._txn is not None:  # checked first: the dry run and the version are read outside it
        raise RuntimeError("apply_edit runs its own transaction; call it outside any other")
    parsed = parse_ops(ops, limits)
    if unit not in UNITS:
        raise InvalidEdit(f"unit must be one of {', '.join(UNITS)}")
    if if_version is not None:
        seen: Version | None = None  # None: a tag (a /content ETag), which says only same or changed
        if not (isinstance(if_version, str) and is_tag(if_version)):
            try:
                seen = Version.decode(if_version)  # judged before the document's version is read
            except ValueError as exc:
                raise InvalidEdit(f"if_version: {exc}") from None
        now = document_version(doc)
        if seen is not None:
            relation = compare(now, seen)
        else:
            relation = Relation.SAME if now.tag() == if_version else Relation.CHANGED
        if relation is Relation.BEHIND:
            raise StaleVersion("this replica has not yet received every change of if_version", now.encode())
        if relation is Relation.CHANGED:
            raise StaleVersion("the document changed since if_version", now.encode())
    live = LiveDoc(doc)
    _run(parsed, ShadowDoc(live), unit, limits)  # raises before anything is applied
    captured: list[bytes] = []
    subscription = doc.observe(lambda event: captured.append(event.update))
    try:
        with doc.new_transaction(origin=origin):
            ranges = _run(parsed, live, unit, limits)
    finally:
        doc.unobserve(subscription)
    return EditResult(
        document_version(doc).encode(), captured[0] if captured else EMPTY_UPDATE, tuple(ranges)
    )


# ---------------------------------------------------------------- parsing (shape and size only)


def parse_ops(raw: Any, limits: EditLimits = EditLimits()) -> list[Op]:
    """The ops of a request, checked for shape and size (not against any document)."""
    if not isinstance(raw, list):
        raise InvalidEdit("ops must be a list of operations")
    if not raw:
        raise InvalidEdit("ops is empty")
    if len(raw) > limits.max_ops:
        raise EditTooLarge(f"{len(raw)} ops; at most {limits.max_ops} in one edit")
    budget = _Budget(limits.max_bytes)
    return [_parse_op(item, i, limits, budget) for i, item in enumerate(raw)]


class _Budget:
    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def spend(self, size: int, op: int) -> None:
        self.left -= size
        if self.left < 0:
            raise EditTooLarge(f"the edit carries more than {self.limit} bytes", op)


def _parse_op(raw: Any, i: int, limits: EditLimits, budget: _Budget) -> Op:
    if not isinstance(raw, dict):
        raise InvalidEdit("an operation is an object", i)
    name = raw.get("op")
    if not isinstance(name, str) or name not in _FIELDS:
        raise InvalidEdit(f"unknown op {_show(name)}; one of {', '.join(_FIELDS)}", i)
    required, optional = _FIELDS[name]
    fields = set(raw) - {"op", "path"}
    if "path" not in raw:
        raise InvalidEdit(f"{name}: missing field 'path'", i)
    missing = required - fields
    if missing:
        raise InvalidEdit(f"{name}: missing field {_show(sorted(missing)[0])}", i)
    unknown = fields - required - optional
    if unknown:
        raise InvalidEdit(f"{name}: unknown field {_show(sorted(unknown)[0])}", i)
    path = _parse_path(raw["path"], i, limits, budget)
    where = f"{name} at {_show_path(path)}"

    def integer(key: str, minimum: int = 0) -> int:
        value = raw[key]
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < minimum
            or value > MAX_SAFE_INTEGER
        ):
            raise InvalidEdit(f"{where}: {key} must be an integer >= {minimum}", i)
        return value

    def string(key: str, nonempty: bool = False) -> str:
        value = raw[key]
        if not isinstance(value, str):
            raise InvalidEdit(f"{where}: {key} must be a string", i)
        if nonempty and not value:
            raise InvalidEdit(f"{where}: {key} must not be empty", i)
        budget.spend(_utf8_size(value, f"{where}: {key}", i), i)
        return value

    def shared_kind() -> str | None:
        kind = raw.get("as")
        if kind is None:
            return None
        if kind not in SHARED_KINDS:
            raise InvalidEdit(f"{where}: 'as' must be one of {', '.join(SHARED_KINDS)}", i)
        return str(kind)

    def value(data: Any, kind: str | None, label: str) -> Any:
        _check_json(data, limits.max_depth, f"{where}: {label}", i)
        if kind is not None and not isinstance(data, _AS_TYPES[kind]):
            raise InvalidEdit(f"{where}: {label} must be a {_AS_NAMES[kind]} to be stored as {kind}", i)
        budget.spend(len(orjson.dumps(data)), i)
        return data

    if name == "text.insert":
        return TextInsert(path, integer("index"), string("text", nonempty=True))
    if name == "text.delete":
        return TextDelete(path, integer("index"), integer("length", 1))
    if name == "text.replace":
        text = string("text")
        if "find" in raw:
            if "index" in raw or "length" in raw:
                raise InvalidEdit(f"{where}: give either find or index and length, not both", i)
            occurrence: int | Literal["all"] = 1
            if "occurrence" in raw:
                if raw["occurrence"] == "all":
                    occurrence = "all"
                else:
                    occurrence = integer("occurrence", 1)
            return TextReplace(path, text, find=string("find", nonempty=True), occurrence=occurrence)
        if "index" not in raw or "length" not in raw:
            raise InvalidEdit(f"{where}: needs find, or index and length", i)
        if "occurrence" in raw:
            raise InvalidEdit(f"{where}: occurrence goes with find", i)
        return TextReplace(path, text, index=integer("index"), length=integer("length"))
    if name == "map.set":
        kind = shared_kind()
        return MapSet(path, string("key"), value(raw["value"], kind, "value"), kind)
    if name == "map.delete":
        return MapDelete(path, string("key"))
    if name == "array.insert":
        kind = shared_kind()
        values = raw["values"]
        if not isinstance(values, list) or not values:
            raise InvalidEdit(f"{where}: values must be a non-empty list", i)
        return ArrayInsert(
            path, integer("index"), tuple(value(v, kind, f"values[{n}]") for n, v in enumerate(values)), kind
        )
    length = integer("length", 1) if "length" in raw else 1
    return ArrayDelete(path, integer("index"), length)


_AS_TYPES: dict[str, type[Any]] = {"text": str, "map": dict, "array": list}
_AS_NAMES = {"text": "string", "map": "JSON object", "array": "list"}


def _parse_path(raw: Any, i: int, limits: EditLimits, budget: _Budget) -> Path:
    if not isinstance(raw, list) or not raw:
        raise InvalidEdit("path must be a non-empty list: a root name, then keys and indexes", i)
    if len(raw) > limits.max_depth:
        raise EditTooLarge(f"path deeper than {limits.max_depth}", i)
    if not isinstance(raw[0], str) or not raw[0]:
        raise InvalidEdit("path must start with a root name (a non-empty string)", i)
    for step in raw:
        if isinstance(step, str):
            budget.spend(_utf8_size(step, "path", i), i)
        elif not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise InvalidEdit(
                f"path step {_show(step)} is neither a key (string) nor an index (integer >= 0)", i
            )
    return tuple(raw)


def _utf8_size(text: str, label: str, i: int) -> int:
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        raise InvalidEdit(f"{label} is not valid Unicode (a lone surrogate)", i) from None


def _check_json(value: Any, depth: int, label: str, i: int) -> None:
    """A JSON value pycrdt stores faithfully and every Yjs client reads back the same."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise InvalidEdit(f"{label}: integer {value} is not exact in JavaScript; send it as a string", i)
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEdit(f"{label}: numbers must be finite", i)
        return
    if isinstance(value, str):
        _utf8_size(value, label, i)
        return
    if depth <= 0:
        raise EditTooLarge(f"{label}: nested too deeply", i)
    if isinstance(value, list):
        for item in value:
            _check_json(item, depth - 1, label, i)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidEdit(f"{label}: object keys must be strings", i)
            _utf8_size(key, label, i)
            _check_json(item, depth - 1, label, i)
        return
    raise InvalidEdit(f"{label}: {type(value).__name__} is not a JSON value", i)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _show_path(path: Path) -> str:
    return _show(list(path))


# ---------------------------------------------------------------- the run (the same code for both)


@dataclass(slots=True)
class _Target:
    path: Path
    node: Any
    """The shared type at the path, or None when the path ends inside a JSON value."""
    value: Any = None
    """The JSON value at the path (when ``node`` is None)."""
    owner: Any = None
    slot: Step = ""
    inner: Path = ()
    """Where the JSON value sits: ``owner``'s entry ``slot``, then ``inner`` steps into its value."""


class _Run:
    def __init__(self, nodes: DocNodes, unit: str, limits: EditLimits) -> None:
        self.nodes = nodes
        self.unit = unit
        self.limits = limits
        self.budget = _Budget(limits.max_bytes)
        self.ranges: list[EditedRange] = []
        self.i = 0

    def fail(self, reason: str) -> InvalidEdit:
        return InvalidEdit(reason, self.i)

    # ---- paths

    def locate(self, path: Path, create: str | None) -> _Target:
        """The target of ``path``; ``create``: the kind of root to make when the path is a missing root."""
        name = path[0]
        assert isinstance(name, str)
        node = self.nodes.root(name)
        if node is None:
            if create is None or len(path) > 1:
                raise self.fail(f"the document has no root {name!r}")
            node = self.nodes.create_root(name, create)
        target = _Target(path[:1], node)
        for depth, step in enumerate(path[1:], start=2):
            here = _show_path(path[: depth - 1])
            if target.node is None:
                target.value = self.step_json(target.value, step, here)
                target.inner += (step,)
            else:
                child = self.step_node(target.node, step, here)
                if isinstance(child, Opaque):
                    raise self.fail(f"{_show_path(path[:depth])} is {child.what}: it can only be replaced")
                if isinstance(child, TextNode | MapNode | SeqNode):
                    target.node = child
                else:
                    target = _Target(path[:depth], None, child, target.node, step)
            target.path = path[:depth]
        return target

    def step_node(self, node: Any, step: Step, here: str) -> Any:
        if isinstance(step, str):
            if not isinstance(node, MapNode):
                raise self.fail(f"{here} is {_article(node_kind(node))}: no key {step!r} in it")
            found = node.entry(step)
            if found is MISSING:
                raise self.fail(f"no key {step!r} in {here}")
            return found
        if not isinstance(node, SeqNode):
            raise self.fail(f"{here} is {_article(node_kind(node))}: no index {step} in it")
        if step >= node.length():
            raise self.fail(f"index {step} is past the end of {here} (length {node.length()})")
        return node.get(step)

    def step_json(self, value: Any, step: Step, here: str) -> Any:
        if isinstance(step, str):
            if not isinstance(value, dict):
                raise self.fail(f"{here} is {_json_kind(value)}: no key {step!r} in it")
            if step not in value:
                raise self.fail(f"no key {step!r} in {here}")
            return value[step]
        if not isinstance(value, list):
            raise self.fail(f"{here} is {_json_kind(value)}: no index {step} in it")
        if step >= len(value):
            raise self.fail(f"index {step} is past the end of {here} (length {len(value)})")
        return value[step]

    def rewrite(self, target: _Target, change: Callable[[Any], Any]) -> None:
        """Store ``change(value)`` in place of the JSON value at ``target`` (its whole slot is rewritten)."""
        owner, slot = target.owner, target.slot
        current = owner.entry(slot) if isinstance(slot, str) else owner.get(slot)
        updated = _replace_in(current, target.inner, change)
        self.budget.spend(len(orjson.dumps(updated)), self.i)
        if isinstance(slot, str):
            owner.put(slot, updated)
        else:
            owner.delete(slot, 1)
            owner.insert(slot, [updated])

    # ---- ops

    def run(self, ops: list[Op]) -> list[EditedRange]:
        for index, op in enumerate(ops):
            self.i = index
            if isinstance(op, TEXT_OPS):
                self.text_op(op)
            elif isinstance(op, MAP_OPS):
                self.map_op(op)
            else:
                self.array_op(op)
        return self.ranges

    def text_op(self, op: TextInsert | TextDelete | TextReplace) -> None:
        target = self.locate(op.path, TEXT)
        node = target.node
        if (
            isinstance(op, TextReplace)
            and op.find is not None
            and isinstance(node, SeqNode)
            and node.kind != "array"
        ):
            self.replace_in_xml(op, target)
            return
        if node is None:
            if not isinstance(target.value, str):
                raise self.fail(f"{_show_path(target.path)} is {_json_kind(target.value)}, not a text")
            text = TextValue(target.value)
        elif isinstance(node, TextNode):
            text = node.value()
        else:
            raise self.fail(f"{_show_path(target.path)} is {_article(node_kind(node))}, not a text")
        splices = self.splices(op, text, target.path)
        if node is None:
            for start, deleted, inserted in splices:
                text.splice(start, deleted, inserted)
            final = text.chars
            self.rewrite(target, lambda _: final)
            self.record(target.path, text.chars, splices, [None] * len(splices))
        else:
            positions = [node.splice(*splice) for splice in splices]  # right to left: indexes stay valid
            self.record(target.path, node.value().chars, splices, positions)

    def splices(
        self, op: TextInsert | TextDelete | TextReplace, text: TextValue, path: Path
    ) -> list[tuple[int, int, str]]:
        """``(start, deleted, inserted)`` in code points, right to left."""
        if isinstance(op, TextReplace) and op.find is not None:
            matches = self.matches(text.chars, op.find)
            if not matches:
                raise self.fail(f"{op.find!r} not found in {_show_path(path)}")
            chosen = self.choose(matches, op, _show_path(path))
            self.spend(op.text, len(chosen))
            return [(start, len(op.find), op.text) for start in reversed(chosen)]
        index = op.index
        assert index is not None
        start = self.codepoint(text.chars, index, path)
        if isinstance(op, TextInsert):
            self.spend(op.text, 1)
            return [(start, 0, op.text)]
        length = op.length
        assert length is not None
        end = self.codepoint(text.chars, index + length, path, what="index + length")
        inserted = op.text if isinstance(op, TextReplace) else ""
        self.spend(inserted, 1)
        return [(start, end - start, inserted)]

    def codepoint(self, chars: str, index: int, path: Path, what: str = "index") -> int:
        cp = to_codepoint(chars, index, self.unit)
        if cp is None:
            size = unit_length(chars, self.unit)
            if index > size:
                raise self.fail(
                    f"{what} {index} is past the end of {_show_path(path)} (length {size} in {self.unit})"
                )
            raise self.fail(
                f"{what} {index} splits a character of {_show_path(path)} (a UTF-16 surrogate pair)"
            )
        return cp

    def matches(self, chars: str, find: str) -> list[int]:
        found: list[int] = []
        start = chars.find(find)
        while start >= 0:
            found.append(start)
            start = chars.find(find, start + len(find))
        return found

    def choose(self, matches: list[int], op: TextReplace, where: str) -> list[int]:
        if op.occurrence == "all":
            if len(matches) > self.limits.max_replacements:
                raise EditTooLarge(
                    f"{op.find!r} occurs {len(matches)} times in {where}; "
                    f"at most {self.limits.max_replacements} replaced at once",
                    self.i,
                )
            return matches
        if op.occurrence > len(matches):
            raise self.fail(
                f"{op.find!r} occurs {len(matches)} times in {where}; asked for occurrence {op.occurrence}"
            )
        return [matches[op.occurrence - 1]]

    def spend(self, inserted: str, times: int) -> None:
        self.budget.spend(len(inserted.encode()) * times, self.i)

    def record(
        self,
        path: Path,
        final: str,
        splices: list[tuple[int, int, str]],
        positions: list[tuple[RelativePosition, RelativePosition] | None],
    ) -> None:
        """Ranges of splices applied right to left, in left-to-right order, as they stand in ``final``."""
        shift = 0
        for (start, deleted, inserted), where in zip(reversed(splices), reversed(positions), strict=True):
            begin = start + shift
            shift += len(inserted) - deleted
            anchor, head = where if where is not None else (None, None)
            self.ranges.append(
                EditedRange(
                    self.i,
                    path,
                    from_codepoint(final, begin, self.unit),
                    from_codepoint(final, begin + len(inserted), self.unit),
                    anchor,
                    head,
                )
            )

    def replace_in_xml(self, op: TextReplace, target: _Target) -> None:
        assert op.find is not None
        texts = list(xml_texts(target.node, target.path))
        found = [
            (node, path, start) for node, path in texts for start in self.matches(node.value().chars, op.find)
        ]
        where = _show_path(target.path)
        if not found:
            raise self.fail(f"{op.find!r} not found in the text of {where}")
        chosen = set(self.choose(list(range(len(found))), op, where))
        self.spend(op.text, len(chosen))
        for node, path in texts:
            starts = [start for n, (other, _, start) in enumerate(found) if other is node and n in chosen]
            if not starts:
                continue
            splices = [(start, len(op.find), op.text) for start in reversed(starts)]
            positions = [node.splice(*splice) for splice in splices]
            self.record(path, node.value().chars, splices, positions)

    def map_op(self, op: MapSet | MapDelete) -> None:
        target = self.locate(op.path, MAP)
        node = target.node
        where = _show_path(target.path)
        if node is None:
            if not isinstance(target.value, dict):
                raise self.fail(f"{where} is {_json_kind(target.value)}, not a map")
            if isinstance(op, MapSet):
                self.not_shared(op.as_, where)
                self.rewrite(target, lambda value: {**value, op.key: op.value})
            else:
                if op.key not in target.value:
                    raise self.fail(f"no key {op.key!r} in {where}")
                self.rewrite(target, lambda value: {k: v for k, v in value.items() if k != op.key})
            return
        if not isinstance(node, MapNode):
            raise self.fail(f"{where} is {_article(node_kind(node))}, not a map")
        element = isinstance(node, SeqNode)  # an XmlElement: the map is its attributes
        if isinstance(op, MapDelete):
            if node.entry(op.key) is MISSING:
                raise self.fail(f"no {'attribute' if element else 'key'} {op.key!r} in {where}")
            node.remove(op.key)
            return
        if element:
            self.not_shared(op.as_, where)
            if op.value is None:
                raise self.fail(f"attribute {op.key!r} of {where} cannot be null (map.delete removes it)")
        node.put(op.key, op.value if op.as_ is None else NewShared(op.as_, op.value))

    def array_op(self, op: ArrayInsert | ArrayDelete) -> None:
        target = self.locate(op.path, ARRAY)
        node = target.node
        where = _show_path(target.path)
        if node is None:
            items = target.value
            if not isinstance(items, list):
                raise self.fail(f"{where} is {_json_kind(items)}, not a list")
            if isinstance(op, ArrayInsert):
                self.not_shared(op.as_, where)
                self.check_insert(op.index, len(items), where)
                self.rewrite(target, lambda value: [*value[: op.index], *op.values, *value[op.index :]])
            else:
                self.check_range(op.index, op.length, len(items), where)
                self.rewrite(target, lambda value: [*value[: op.index], *value[op.index + op.length :]])
            return
        if not isinstance(node, SeqNode):
            raise self.fail(f"{where} is {_article(node_kind(node))}, not an array")
        if isinstance(op, ArrayDelete):
            self.check_range(op.index, op.length, node.length(), where)
            node.delete(op.index, op.length)
            return
        self.check_insert(op.index, node.length(), where)
        if node.kind == "array":
            values = list(op.values) if op.as_ is None else [NewShared(op.as_, v) for v in op.values]
        else:
            self.not_shared(op.as_, where)
            values = [self.xml_node(value, where, self.limits.max_depth) for value in op.values]
        node.insert(op.index, values)

    def check_insert(self, index: int, length: int, where: str) -> None:
        if index > length:
            raise self.fail(f"index {index} is past the end of {where} (length {length})")

    def check_range(self, index: int, length: int, size: int, where: str) -> None:
        if index + length > size:
            raise self.fail(
                f"items {index} to {index + length - 1} are past the end of {where} (length {size})"
            )

    def not_shared(self, kind: str | None, where: str) -> None:
        if kind is not None:
            raise self.fail(f"'as' makes a shared type, which {where} cannot hold")

    def xml_node(self, value: Any, where: str, depth: int) -> NewShared:
        """An XML child from its JSON form: a string, or {"element", "attributes", "children"}."""
        if isinstance(value, str):
            return NewShared("xmltext", value)
        if not isinstance(value, dict) or not isinstance(value.get("element"), str):
            raise self.fail(f"children of {where} are strings or {{'element': tag, ...}} objects")
        unknown = set(value) - {"element", "attributes", "children"}
        if unknown:
            raise self.fail(f"unknown field {sorted(unknown)[0]!r} in an element for {where}")
        tag = value["element"]
        if not tag or any(c.isspace() or c in "<>/\"'&=" for c in tag):
            raise self.fail(f"{tag!r} is not an element name")
        attributes = value.get("attributes", {})
        if not isinstance(attributes, dict) or any(v is None for v in attributes.values()):
            raise self.fail(f"attributes of an element for {where} are an object without nulls")
        children = value.get("children", [])
        if not isinstance(children, list):
            raise self.fail(f"children of an element for {where} are a list")
        if depth <= 0:
            raise EditTooLarge(f"elements for {where} nested too deeply", self.i)
        return NewShared("element", (tag, attributes, [self.xml_node(c, where, depth - 1) for c in children]))


def _run(ops: list[Op], nodes: DocNodes, unit: str, limits: EditLimits) -> list[EditedRange]:
    return _Run(nodes, unit, limits).run(ops)


def _replace_in(value: Any, inner: Path, change: Callable[[Any], Any]) -> Any:
    """A copy of ``value`` with ``change`` applied at ``inner`` (copies along the path only)."""
    if not inner:
        return change(value)
    step, rest = inner[0], inner[1:]
    if isinstance(value, dict):
        assert isinstance(step, str)
        return {**value, step: _replace_in(value[step], rest, change)}
    assert isinstance(step, int) and isinstance(value, list)
    return [*value[:step], _replace_in(value[step], rest, change), *value[step + 1 :]]


def _article(kind: str) -> str:
    names = {
        "text": "a text",
        "xmltext": "an XML text",
        "map": "a map",
        "array": "an array",
        "xmlfragment": "an XML fragment",
        "xmlelement": "an XML element",
    }
    return names.get(kind, kind)


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON list"
    if isinstance(value, str):
        return "a JSON string"
    if value is None:
        return "null"
    return f"a JSON {type(value).__name__}"
