"""A document's current content as JSON (for the HTTP read endpoint and the server-side API).

Each root becomes one key: Text -> string (its characters, formatting dropped, each embedded object as
U+FFFC OBJECT REPLACEMENT CHARACTER, so that indexes into the string count as Yjs counts them), Map -> object,
Array -> list, XmlFragment -> its XML as a string; nested shared types the same way, binary values as
base64 strings, subdocuments as ``{"guid": ...}``. Roots are not typed in Yjs updates, so their kinds are
read from the document's items (``sync.update.root_kinds``) and the roots are typed in a scratch copy,
never in the live document.
"""

from __future__ import annotations

import base64
from typing import Any

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from sync.update import ARRAY, MAP, TEXT, root_kinds

_ROOT_TYPES: dict[str, type[Any]] = {TEXT: Text, MAP: Map, ARRAY: Array}


def document_json(doc: Doc[Any]) -> dict[str, Any]:
    update = doc.get_update()
    kinds = root_kinds(update)
    copy: Doc[Any] = Doc()
    copy.apply_update(update)
    return {
        name: to_json(copy.get(name, type=_ROOT_TYPES.get(kind, XmlFragment))) for name, kind in kinds.items()
    }


EMBED = "\ufffc"
"""Stands for an embedded object in a text (one index unit in Yjs, in UTF-16 and in code points)."""


def text_value(text: Text | XmlText) -> tuple[str, list[int]]:
    """The characters of ``text`` with each embed as ``EMBED``, and the code point offsets of the embeds."""
    parts: list[str] = []
    embeds: list[int] = []
    size = 0
    for chunk, _ in text.diff():
        if isinstance(chunk, str):
            parts.append(chunk)
            size += len(chunk)
        else:
            parts.append(EMBED)
            embeds.append(size)
            size += 1
    return "".join(parts), embeds


def to_json(value: Any) -> Any:
    if isinstance(value, Text):
        return text_value(value)[0]
    if isinstance(value, Map):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, Array):
        return [to_json(item) for item in value]
    if isinstance(value, XmlFragment | XmlElement | XmlText):
        return str(value)
    if isinstance(value, Doc):
        return {"guid": value.guid}
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    return value
