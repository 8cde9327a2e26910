"""The document as the edit ops see it (``sync.edit``): texts, maps and sequences, twice over.

``LiveDoc`` wraps the pycrdt document: its nodes change it (inside the edit's transaction). ``ShadowDoc``
reads through to a ``LiveDoc`` lazily and changes only itself: the dry run that checks every op before
the live run repeats it. Both answer every question the same way, so an op list the dry run accepts
applies whole. Nothing here decides whether an op is allowed; ``sync.edit`` does, once, for both.

Text positions are code point offsets into a ``TextValue`` (the text's characters, an embedded object as
U+FFFC); ``LiveText`` converts them to pycrdt's UTF-8 byte indexes (an embed counts 1 there).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from sync import cursors
from sync.content import text_value
from sync.cursors import RelativePosition, item_position
from sync.update import ARRAY, MAP, TEXT, XML, root_kinds

Step: TypeAlias = str | int
Path: TypeAlias = tuple[Step, ...]


# ---------------------------------------------------------------- text values and units


@dataclass(slots=True)
class TextValue:
    chars: str
    """The text, each embedded object as U+FFFC."""
    embeds: list[int] = field(default_factory=list)
    """Code point offsets of the embedded objects, ascending."""

    def splice(self, start: int, deleted: int, inserted: str) -> None:
        self.chars = self.chars[:start] + inserted + self.chars[start + deleted :]
        shift = len(inserted) - deleted
        self.embeds = [e if e < start else e + shift for e in self.embeds if not start <= e < start + deleted]

    def pycrdt_index(self, cp: int) -> int:
        """pycrdt's index (UTF-8 bytes; an embed counts 1) of code point offset ``cp``."""
        prefix = self.chars[:cp]
        size = len(prefix) if prefix.isascii() else len(prefix.encode())
        return size - 2 * sum(1 for e in self.embeds if e < cp)  # U+FFFC is 3 UTF-8 bytes, an embed 1


def to_codepoint(chars: str, index: int, unit: str) -> int | None:
    """The code point offset of ``index`` (in ``unit``); None when out of range or inside a character."""
    if unit == "codepoint" or chars.isascii():
        return index if index <= len(chars) else None
    units = chars[:index].encode("utf-16-le")  # index code points are at least index units
    if 2 * index > len(units):
        return None
    try:
        return len(units[: 2 * index].decode("utf-16-le"))
    except UnicodeDecodeError:
        return None  # the index splits a surrogate pair


def from_codepoint(chars: str, cp: int, unit: str) -> int:
    if unit == "codepoint":
        return cp
    prefix = chars[:cp]
    return len(prefix) if prefix.isascii() else len(prefix.encode("utf-16-le")) // 2


def unit_length(chars: str, unit: str) -> int:
    return from_codepoint(chars, len(chars), unit)


# ---------------------------------------------------------------- the document, as the ops see it

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
"""A map key, or an attribute, that is not there."""


@dataclass(frozen=True, slots=True)
class NewShared:
    """A shared type an op creates: ``text``/``xmltext`` from a string, ``map`` from an object, ``array``
    from a list, ``element`` from ``(tag, attributes, children)``."""

    kind: str
    content: Any


class TextNode(ABC):
    kind: str
    """``text`` or ``xmltext``."""

    @abstractmethod
    def value(self) -> TextValue: ...

    @abstractmethod
    def splice(
        self, start: int, deleted: int, inserted: str
    ) -> tuple[RelativePosition, RelativePosition] | None:
        """Replace ``deleted`` code points at ``start`` with ``inserted``; return relative positions of the
        result's start and end when the backend has them."""


class MapNode(ABC):
    """A Map's entries, or an XmlElement's attributes."""

    @abstractmethod
    def entry(self, key: str) -> Any:
        """A node, a JSON value, or ``MISSING``."""

    @abstractmethod
    def put(self, key: str, value: Any) -> None:
        """Store a JSON value or a ``NewShared``."""

    @abstractmethod
    def remove(self, key: str) -> None: ...


class SeqNode(ABC):
    kind: str
    """``array``, ``xmlfragment`` or ``xmlelement``."""

    @abstractmethod
    def length(self) -> int: ...

    @abstractmethod
    def get(self, index: int) -> Any:
        """A node or a JSON value."""

    @abstractmethod
    def insert(self, index: int, values: list[Any]) -> None: ...

    @abstractmethod
    def delete(self, index: int, length: int) -> None: ...


class DocNodes(ABC):
    """The roots of a document, as nodes."""

    @abstractmethod
    def root(self, name: str) -> Any:
        """The root's node, or None when the document has no such root."""

    @abstractmethod
    def create_root(self, name: str, kind: str) -> Any: ...


def node_kind(node: Any) -> str:
    """``text``, ``xmltext``, ``map``, ``array``, ``xmlfragment`` or ``xmlelement``."""
    return node.kind if isinstance(node, TextNode | SeqNode) else "map"


# ---- the live document (pycrdt)


class LiveDoc(DocNodes):
    def __init__(self, doc: Doc[Any]) -> None:
        self.doc = doc
        self._kinds: dict[str, str] | None = None
        self._roots: dict[str, Any] = {}

    def root(self, name: str) -> Any:
        if name not in self._roots:
            self._roots[name] = self._find_root(name)
        return self._roots[name]

    def _find_root(self, name: str) -> Any:
        roots = dict(self.doc.items())
        if name not in roots:
            return None
        typed = roots[name]
        if typed is None:  # integrated from updates, never asked for by a type: learn its kind from its items
            if self._kinds is None:
                self._kinds = root_kinds(self.doc.get_update())
            kind = self._kinds.get(name)
            if kind is None:
                return None  # every item deleted: as good as absent
            typed = self.doc.get(name, type=_ROOT_TYPES[kind])
        return _live(self.doc, typed)

    def create_root(self, name: str, kind: str) -> Any:
        self._roots[name] = _live(self.doc, self.doc.get(name, type=_ROOT_TYPES[kind]))
        return self._roots[name]


_ROOT_TYPES: dict[str, type[Any]] = {TEXT: Text, MAP: Map, ARRAY: Array, XML: XmlFragment}


def _live(doc: Doc[Any], value: Any) -> Any:
    if isinstance(value, Text):
        return LiveText(doc, value, "text")
    if isinstance(value, XmlText):
        return LiveText(doc, value, "xmltext")
    if isinstance(value, Map):
        return LiveMap(doc, value)
    if isinstance(value, Array):
        return LiveSeq(doc, value, "array")
    if isinstance(value, XmlElement):
        return LiveXmlElement(doc, value, "xmlelement")
    if isinstance(value, XmlFragment):
        return LiveSeq(doc, value, "xmlfragment")
    if isinstance(value, bytes | bytearray | Doc):
        return Opaque(type(value).__name__)
    return value


@dataclass(frozen=True, slots=True)
class Opaque:
    """A value no op can edit or step into (binary, a subdocument); it can be replaced or deleted."""

    what: str


def _prelim(value: Any) -> Any:
    """The pycrdt value to integrate for a JSON value or a ``NewShared``."""
    if not isinstance(value, NewShared):
        return value
    kind, content = value.kind, value.content
    if kind == "text":
        return Text(content)
    if kind == "map":
        return Map(content)
    if kind == "array":
        return Array(content)
    if kind == "xmltext":
        return XmlText(content)
    tag, attributes, children = content
    return XmlElement(tag, attributes, [_prelim(child) for child in children])


class LiveText(TextNode):
    def __init__(self, doc: Doc[Any], shared: Text | XmlText, kind: str) -> None:
        self.doc = doc
        self.shared = shared
        self.kind = kind
        self._text: TextValue | None = None
        """What the text holds, kept up to date by ``splice`` (nothing else changes it during an edit)."""

    def value(self) -> TextValue:
        if self._text is None:
            self._text = TextValue(*text_value(self.shared))
        return TextValue(self._text.chars, list(self._text.embeds))

    def splice(
        self, start: int, deleted: int, inserted: str
    ) -> tuple[RelativePosition, RelativePosition] | None:
        current = self.value()
        begin = current.pycrdt_index(start)
        doc = self.doc
        first = cursors.clock(doc)
        gone = cursors.deleted(doc) if deleted and not inserted else None
        if deleted:
            del self.shared[begin : current.pycrdt_index(start + deleted)]
        if inserted:
            self.shared.insert(begin, inserted)
        current.splice(start, deleted, inserted)
        self._text = current
        if inserted:
            # the inserted items are this client's next clocks (a format item yrs may put around them
            # decodes to the same index as the character beside it)
            end = cursors.clock(doc)
            return item_position(doc.client_id, first, start=True), item_position(doc.client_id, end - 1)
        if gone is not None:
            # any character of the deleted range decodes to the point of deletion
            where = cursors.first_new_deletion(gone, cursors.deleted(doc))
            if where is not None:
                position = item_position(*where, start=True)
                return position, position
        return None


class LiveMap(MapNode):
    def __init__(self, doc: Doc[Any], shared: Map[Any]) -> None:
        self.doc = doc
        self.shared = shared

    def entry(self, key: str) -> Any:
        return _live(self.doc, self.shared[key]) if key in self.shared else MISSING

    def put(self, key: str, value: Any) -> None:
        self.shared[key] = _prelim(value)

    def remove(self, key: str) -> None:
        del self.shared[key]


class LiveSeq(SeqNode):
    def __init__(self, doc: Doc[Any], shared: Array[Any] | XmlFragment | XmlElement, kind: str) -> None:
        self.doc = doc
        self.shared = shared
        self.kind = kind

    def length(self) -> int:
        return len(self.shared) if isinstance(self.shared, Array) else len(self.shared.children)

    def get(self, index: int) -> Any:
        if isinstance(self.shared, Array):
            return _live(self.doc, self.shared[index])
        return _live(self.doc, self.shared.children[index])

    def insert(self, index: int, values: list[Any]) -> None:
        for offset, value in enumerate(values):
            if isinstance(self.shared, Array):
                self.shared.insert(index + offset, _prelim(value))
            else:
                self.shared.children.insert(index + offset, _prelim(value))

    def delete(self, index: int, length: int) -> None:
        if isinstance(self.shared, Array):
            del self.shared[index : index + length]
        else:
            del self.shared.children[index : index + length]


class LiveXmlElement(LiveSeq, MapNode):
    shared: XmlElement

    def entry(self, key: str) -> Any:
        value = self.shared.attributes.get(key)
        return MISSING if value is None else value

    def put(self, key: str, value: Any) -> None:
        self.shared.attributes[key] = value

    def remove(self, key: str) -> None:
        del self.shared.attributes[key]


# ---- the shadow: reads through to the live document, changes only itself


class ShadowDoc(DocNodes):
    def __init__(self, live: LiveDoc) -> None:
        self.live = live
        self.roots: dict[str, Any] = {}

    def root(self, name: str) -> Any:
        if name not in self.roots:
            source = self.live.root(name)
            self.roots[name] = None if source is None else _shadow(source)
        return self.roots[name]

    def create_root(self, name: str, kind: str) -> Any:
        node = _shadow_new(NewShared(kind, _EMPTY[kind]))
        self.roots[name] = node
        return node


_EMPTY: dict[str, Any] = {TEXT: "", MAP: {}, ARRAY: []}


def _shadow(value: Any) -> Any:
    """The shadow of a live node (lazy), or the JSON value itself (never changed in place)."""
    if isinstance(value, LiveText):
        return ShadowText(value.kind, source=value)
    if isinstance(value, LiveXmlElement):
        return ShadowXmlElement(source=value)
    if isinstance(value, LiveSeq):
        return ShadowSeq(value.kind, source=value)
    if isinstance(value, LiveMap):
        return ShadowMap(source=value)
    return value


def _shadow_new(value: Any) -> Any:
    if not isinstance(value, NewShared):
        return value
    kind, content = value.kind, value.content
    if kind in ("text", "xmltext"):
        return ShadowText(kind, TextValue(content))
    if kind == "map":
        return ShadowMap(entries=dict(content))
    if kind == "array":
        return ShadowSeq("array", items=list(content))
    tag, attributes, children = content
    return ShadowXmlElement(items=[_shadow_new(child) for child in children], attributes=dict(attributes))


class ShadowText(TextNode):
    def __init__(self, kind: str, text: TextValue | None = None, source: LiveText | None = None) -> None:
        self.kind = kind
        self._text = text
        self._source = source

    def value(self) -> TextValue:
        if self._text is None:
            assert self._source is not None
            self._text = self._source.value()
        return TextValue(self._text.chars, list(self._text.embeds))

    def splice(self, start: int, deleted: int, inserted: str) -> None:
        text = self.value()
        text.splice(start, deleted, inserted)
        self._text = text
        return None


class ShadowMap(MapNode):
    def __init__(self, source: LiveMap | None = None, entries: dict[str, Any] | None = None) -> None:
        self._source = source
        self._entries: dict[str, Any] = entries if entries is not None else {}

    def entry(self, key: str) -> Any:
        if key not in self._entries:
            self._entries[key] = MISSING if self._source is None else _shadow(self._source.entry(key))
        return self._entries[key]

    def put(self, key: str, value: Any) -> None:
        self._entries[key] = _shadow_new(value)

    def remove(self, key: str) -> None:
        self._entries[key] = MISSING


class ShadowSeq(SeqNode):
    def __init__(self, kind: str, source: LiveSeq | None = None, items: list[Any] | None = None) -> None:
        self.kind = kind
        self._source = source
        self._items = items

    @property
    def items(self) -> list[Any]:
        if self._items is None:
            assert self._source is not None
            source = self._source
            self._items = [_shadow(source.get(i)) for i in range(source.length())]
        return self._items

    def length(self) -> int:
        return len(self.items)

    def get(self, index: int) -> Any:
        return self.items[index]

    def insert(self, index: int, values: list[Any]) -> None:
        self.items[index:index] = [_shadow_new(value) for value in values]

    def delete(self, index: int, length: int) -> None:
        del self.items[index : index + length]


class ShadowXmlElement(ShadowSeq, MapNode):
    def __init__(
        self,
        source: LiveXmlElement | None = None,
        items: list[Any] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        super().__init__("xmlelement", source, items)
        self._element = source
        self._attributes: dict[str, Any] = attributes if attributes is not None else {}

    def entry(self, key: str) -> Any:
        if key not in self._attributes:
            self._attributes[key] = MISSING if self._element is None else self._element.entry(key)
        return self._attributes[key]

    def put(self, key: str, value: Any) -> None:
        self._attributes[key] = value

    def remove(self, key: str) -> None:
        self._attributes[key] = MISSING


def xml_texts(node: Any, path: Path) -> Iterator[tuple[TextNode, Path]]:
    """The XmlText descendants of an XML container, in document order, with their paths."""
    for index in range(node.length()):
        child = node.get(index)
        if isinstance(child, TextNode):
            yield child, (*path, index)
        elif isinstance(child, SeqNode):
            yield from xml_texts(child, (*path, index))
