"""A document as JSON: every root type, nested types, values, and roots never typed locally."""

from __future__ import annotations

import orjson
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from sync.content import document_json


def test_every_root_type_from_an_untyped_copy() -> None:
    source = Doc()
    source["title"] = Text("Hello")
    source["meta"] = Map({"n": 1, "tags": ["a", "b"], "inner": Map({"t": Text("deep")}), "blob": b"\x00\x01"})
    source["items"] = Array([1, 2.5, None, True, "s", Array(["x"])])
    source["body"] = XmlFragment([XmlElement("p", {"class": "c"}, [XmlText("para")])])
    received = Doc()
    received.apply_update(source.get_update())  # as the hub holds it: no root has a type yet
    content = document_json(received)
    assert content == {
        "title": "Hello",
        "meta": {"n": 1.0, "tags": ["a", "b"], "inner": {"t": "deep"}, "blob": "AAE="},
        "items": [1.0, 2.5, None, True, "s", ["x"]],
        "body": '<p class="c">para</p>',
    }
    orjson.dumps(content)
    assert dict(received.items())["title"] is None  # the live document's roots stay untyped


def test_empty_document() -> None:
    assert document_json(Doc()) == {}


def test_an_embed_in_a_text_shows_as_one_object_replacement_character() -> None:
    source = Doc()
    source["t"] = text = Text("ab")
    text.insert_embed(1, {"image": "cat.png"})
    assert document_json(source) == {"t": "a\ufffcb"}  # one index unit, as Yjs counts it
