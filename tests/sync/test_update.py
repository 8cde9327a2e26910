"""The Yjs update reader against pycrdt's own encoder: clock ranges equal pycrdt's state vectors, root
kinds are recognised, and malformed bytes raise only ProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from sync.protocol import ProtocolError
from sync.room import decode_state_vector
from sync.update import client_ranges, root_kinds

texts = st.text(alphabet=st.sampled_from("ab é😀\n"), min_size=1, max_size=5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 30), texts, st.booleans()), max_size=25))
def test_client_ranges_equal_pycrdt_state_vectors(ops: list[tuple[int, int, str, bool]]) -> None:
    docs = [Doc() for _ in range(3)]
    for who, pos, chunk, delete in ops:
        doc = docs[who]
        text = doc.get("text", type=Text)
        if delete and len(text) > 1:
            del text[0 : min(2, len(text))]
        else:
            text.insert(min(pos, len(text)), chunk)
        doc.get("meta", type=Map)[chunk] = pos
        for other in docs:
            if other is not doc:
                other.apply_update(doc.get_update(other.get_state()))
    for doc in docs:
        assert client_ranges(doc.get_update()) == decode_state_vector(doc.get_state())


def test_root_kinds() -> None:
    doc = Doc()
    doc["t"] = Text("hello")
    doc["m"] = Map({"a": 1, "nested": Map({"b": [1, {"c": None}]})})
    doc["a"] = Array([1, "two", b"three", Text("four")])
    doc["x"] = XmlFragment([XmlElement("p", {"class": "c"}, [XmlText("para")])])
    doc["empty"] = Text("")
    text = doc["t"]
    assert isinstance(text, Text)
    del text[0:2]  # the root's first item deleted: the others still resolve through their origins
    text.insert(0, "He")
    assert root_kinds(doc.get_update()) == {"t": "text", "m": "map", "a": "array", "x": "xml"}


@given(st.binary(max_size=80))
def test_garbage_raises_only_protocol_error(raw: bytes) -> None:
    try:
        client_ranges(raw)
        root_kinds(raw)
    except ProtocolError:
        pass


def test_deep_nesting_is_refused_not_recursed() -> None:
    """One struct of "any" content holding one array nested 10,000 deep: refused by the depth bound (without
    it, the reader recurses until RecursionError). The update is well-formed up to the nesting, so nothing
    else can refuse it first."""
    nested = b"\x75\x01" * 10_000 + b"\x7e"  # [[[...[null]...]]]
    # 1 client section: 1 struct of client 5 from clock 0; info 0x08 (content "any", no origins): in the
    # root named "t" (varUint 1, varString "t"); 1 value; then an empty delete set.
    body = b"\x01" + b"\x01\x05\x00" + b"\x08" + b"\x01" + b"\x01t" + b"\x01" + nested + b"\x00"
    shallow = body.replace(nested, b"\x75\x01" * 3 + b"\x7e")
    assert client_ranges(shallow) == {5: 1}  # the same update, nested 3 deep, is read
    with pytest.raises(ProtocolError, match="nested too deeply"):
        client_ranges(body)
