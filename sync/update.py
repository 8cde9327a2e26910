"""A reader of Yjs v1 updates (the structs, not their integration), sans-I/O.

pycrdt applies updates; this module only looks inside them, for two things pycrdt does not tell:

- ``client_ranges``: for each client, the clock range an update covers, so a room can tell that some
  structs of an update could not be integrated (they wait for missing dependencies);
- ``root_kinds``: what kind of shared type each root of a document is (a root's type is not encoded in
  updates: Yjs types a root when a program first asks for it), so a document can be shown as JSON.

Format (yjs ``encoding.js`` ``writeClientsStructs`` / ``readClientsStructRefs``, lib0 v1 encoding)::

    update    = varUint(clients) clients * section, delete set
    delete set = varUint(clients) clients * (varUint(client) varUint(n) n * (varUint(clock) varUint(len)))
    section   = varUint(structs) varUint(client) varUint(clock) structs * struct
    struct    = info:uint8, then by ``info & 0x1f``: 0 GC varUint(len) | 10 Skip varUint(len) | item
    item      = [origin ID if info & 0x80] [right origin ID if info & 0x40]
                [if neither: varUint(1) varString(root name) | varUint(0) ID(parent item)]
                [varString(key) if neither and info & 0x20] content
    content   = 1 deleted varUint(len) | 2 JSON varUint(n) n*varString | 3 binary varUint8Array
              | 4 string varString (length in UTF-16 units) | 5 embed varString | 6 format varString varString
              | 7 type varUint(ref) [varString(name) for XmlElement 3, XmlHook 5] | 8 any varUint(n) n*any
              | 9 doc varString any
    ID        = varUint(client) varUint(clock)

Malformed input raises ``ProtocolError``. Nesting of lib0 ``any`` values is bounded (``MAX_DEPTH``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sync.protocol import ProtocolError, Reader

MAX_DEPTH = 64

TYPE_ARRAY, TYPE_MAP, TYPE_TEXT, TYPE_XML_ELEMENT, TYPE_XML_FRAGMENT, TYPE_XML_HOOK, TYPE_XML_TEXT = range(7)

ID = tuple[int, int]


@dataclass(slots=True)
class Item:
    client: int
    clock: int
    length: int
    content: int
    """Content ref (1 deleted ... 9 doc); 0 for GC, 10 for skip."""
    origin: ID | None = None
    right_origin: ID | None = None
    root: str | None = None
    """The root's name when the item sits directly in a root and says so."""
    parent: ID | None = None
    """The parent type's item when the item sits in a nested type and says so."""
    key: str | None = None
    """Its key in a map."""
    type_ref: int = -1
    """For content 7 (a nested shared type): which type."""


def _skip_any(reader: Reader, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise ProtocolError("value nested too deeply")
    data = reader.data
    if reader.pos >= len(data):
        raise ProtocolError("truncated value")
    kind = data[reader.pos]
    reader.pos += 1
    if kind in (127, 126, 121, 120):  # undefined, null, false, true
        return
    if kind == 125:  # signed varint: same continuation rule as varUint
        reader.var_uint()
    elif kind in (124, 123, 122):  # float32, float64, bigint64
        width = 4 if kind == 124 else 8
        if reader.pos + width > len(data):
            raise ProtocolError("truncated number")
        reader.pos += width
    elif kind in (119, 116):  # string, Uint8Array
        reader.var_bytes()
    elif kind == 118:  # object
        for _ in range(reader.var_uint()):
            reader.var_bytes()
            _skip_any(reader, depth + 1)
    elif kind == 117:  # array
        for _ in range(reader.var_uint()):
            _skip_any(reader, depth + 1)
    else:
        raise ProtocolError(f"unknown value type {kind}")


def _id(reader: Reader) -> ID:
    return reader.var_uint(), reader.var_uint()


def _utf16_length(raw: bytes) -> int:
    if raw.isascii():
        return len(raw)
    try:
        return len(raw.decode("utf-8").encode("utf-16-le")) // 2
    except UnicodeError:
        raise ProtocolError("string is not UTF-8") from None


def read_items(update: bytes) -> list[Item]:
    """Every struct of ``update`` (its delete set is not read)."""
    reader = Reader(update)
    items: list[Item] = []
    for _ in range(reader.var_uint()):
        count = reader.var_uint()
        client = reader.var_uint()
        clock = reader.var_uint()
        for _ in range(count):
            if reader.pos >= len(update):
                raise ProtocolError("truncated struct")
            info = update[reader.pos]
            reader.pos += 1
            ref = info & 0x1F
            if ref == 0 or ref == 10:
                length = reader.var_uint()
                items.append(Item(client, clock, length, ref))
                clock += length
                continue
            item = Item(client, clock, 1, ref)
            if info & 0x80:
                item.origin = _id(reader)
            if info & 0x40:
                item.right_origin = _id(reader)
            if not info & 0xC0:
                if reader.var_uint() == 1:
                    item.root = reader.var_string()
                else:
                    item.parent = _id(reader)
                if info & 0x20:
                    item.key = reader.var_string()
            item.length = _read_content(reader, item)
            items.append(item)
            clock += item.length
    return items


def _read_content(reader: Reader, item: Item) -> int:
    ref = item.content
    if ref == 1:  # deleted
        return reader.var_uint()
    if ref == 2:  # JSON
        n = reader.var_uint()
        for _ in range(n):
            reader.var_bytes()
        return n
    if ref == 3 or ref == 5:  # binary, embed
        reader.var_bytes()
        return 1
    if ref == 4:  # string: Yjs counts UTF-16 code units
        return _utf16_length(reader.var_bytes())  # yrs may encode an empty one (length 0)
    if ref == 6:  # format
        reader.var_bytes()
        reader.var_bytes()
        return 1
    if ref == 7:  # a nested type
        item.type_ref = reader.var_uint()
        if item.type_ref in (TYPE_XML_ELEMENT, TYPE_XML_HOOK):
            reader.var_bytes()
        return 1
    if ref == 8:  # any
        n = reader.var_uint()
        for _ in range(n):
            _skip_any(reader)
        return n
    if ref == 9:  # subdocument
        reader.var_bytes()
        _skip_any(reader)
        return 1
    raise ProtocolError(f"unknown content type {ref}")


def read_delete_set(reader: Reader) -> dict[int, list[tuple[int, int]]]:
    """A Yjs v1 delete set: ``varUint(n)`` clients, each ``client varUint(k)`` then k ``clock length``."""
    result: dict[int, list[tuple[int, int]]] = {}
    for _ in range(reader.var_uint()):
        ranges = result.setdefault(reader.var_uint(), [])
        for _ in range(reader.var_uint()):
            start = reader.var_uint()
            ranges.append((start, start + reader.var_uint()))
    return result


def client_ranges(update: bytes) -> dict[int, int]:
    """For each client with structs in ``update``: the clock just past its last struct."""
    ends: dict[int, int] = {}
    for item in read_items(update):
        end = item.clock + item.length
        if end > ends.get(item.client, 0):
            ends[item.client] = end
    return ends


# ---------------------------------------------------------------- root kinds

TEXT, ARRAY, MAP, XML = "text", "array", "map", "xml"


def root_kinds(update: bytes) -> dict[str, str]:
    """What each root of the document encoded by ``update`` holds: ``text``, ``array``, ``map`` or
    ``xml`` (an XmlFragment). A root whose items are all deleted or garbage-collected is left out.

    An item names its parent only when it has no neighbours; the others inherit the parent of their
    origin, so parents are resolved through the origin chains.
    """
    items = read_items(update)
    by_client: dict[int, list[Item]] = {}
    for item in items:
        by_client.setdefault(item.client, []).append(item)

    def find(ident: ID) -> Item | None:
        column = by_client.get(ident[0])
        if not column:
            return None
        lo, hi = 0, len(column) - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            candidate = column[mid]
            if ident[1] < candidate.clock:
                hi = mid - 1
            elif ident[1] >= candidate.clock + candidate.length:
                lo = mid + 1
            else:
                return candidate
        return None

    root_of: dict[int, str | None] = {}

    def resolve(item: Item) -> str | None:
        chain: list[Item] = []
        on_chain: set[int] = set()
        current: Item | None = item
        answer: str | None = None
        while current is not None:
            if id(current) in root_of:
                answer = root_of[id(current)]
                break
            if id(current) in on_chain:
                break  # a cycle in hostile input
            chain.append(current)
            on_chain.add(id(current))
            if current.root is not None or current.parent is not None:
                answer = current.root
                break
            ref = current.origin or current.right_origin
            current = find(ref) if ref is not None else None
        for seen in chain:
            root_of[id(seen)] = answer
        return answer

    kinds: dict[str, set[str]] = {}
    for item in items:
        if item.content in (0, 10):
            continue
        name = resolve(item)
        if name is None:
            continue
        found = kinds.setdefault(name, set())
        if item.key is not None:
            found.add(MAP)
        elif item.content in (4, 5, 6):
            found.add(TEXT)
        elif item.content == 7 and item.type_ref in (TYPE_XML_ELEMENT, TYPE_XML_TEXT, TYPE_XML_HOOK):
            found.add(XML)
        elif item.content in (2, 3, 7, 8, 9):
            found.add(ARRAY)
    result: dict[str, str] = {}
    for name, found in kinds.items():
        for kind in (MAP, TEXT, XML, ARRAY):  # a map's keyed items decide; text may embed types
            if kind in found:
                result[name] = kind
                break
    return result
