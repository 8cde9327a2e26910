"""What an agent's edit and a streamed reply cost the event loop (sync.edit, channels.streams).

A document of ``--chars`` characters typed in many small inserts (some at the start, so the text is many
items) with some deletions, received as the hub holds it (roots untyped), then:

- the first edit (its root untyped: the root's kind is read from the whole update) and later edits;
- a replace of the first match; ``document_version``; an edit with ``if_version``; an edit of a small
  document;
- ``ChannelStreams.accept`` per chunk, and per ordinary publication of a streams channel.

usage: nice .venv/bin/python bench/edit.py [--chars 1200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson
from pycrdt import Doc, Text

from channels.publication import Publication
from channels.streams import ChannelStreams
from sync.edit import apply_edit
from sync.version import document_version

WORDS = "lorem ipsum dolor sit amet, consectetur adipiscing elit. é😀 "


def timed(label: str, fn: Callable[[], Any], repeat: int = 1) -> None:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    print(f"{label:<58} {(time.perf_counter() - start) / repeat * 1000:9.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chars", type=int, default=1_200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    source: Doc[Any] = Doc()
    source["body"] = body = Text()
    for i in range(args.chars // len(WORDS)):
        body.insert(len(body) if i % 3 else 0, WORDS)
    for i in range(args.chars // 600):
        del body[i * 10 : i * 10 + 2]
    update = source.get_update()
    print(f"document: {len(update)} update bytes, {len(str(body))} characters")
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    insert = [{"op": "text.insert", "path": ["body"], "index": 100, "text": "agent says hi"}]
    replace = [{"op": "text.replace", "path": ["body"], "find": "adipiscing", "text": "ADIPISCING"}]
    timed("first edit (untyped root: kinds read from the update)", lambda: apply_edit(doc, insert))
    timed("later edit", lambda: apply_edit(doc, insert), args.repeat)
    timed("replace the first match", lambda: apply_edit(doc, replace), args.repeat)
    timed("document_version", lambda: document_version(doc), args.repeat)
    timed(
        "edit with if_version (version read, edit, version again)",
        lambda: apply_edit(doc, insert, if_version=document_version(doc).encode()),
        args.repeat,
    )
    small: Doc[Any] = Doc()
    small["t"] = Text("hello world")
    small_op = [{"op": "text.insert", "path": ["t"], "index": 0, "text": "x"}]
    timed("an edit of a small document", lambda: apply_edit(small, small_op), 200)

    streams = ChannelStreams()
    chunks = [
        Publication(orjson.dumps({"stream": {"id": "m", "seq": i}, "text": "tok "})) for i in range(10_000)
    ]
    start = time.perf_counter()
    for pub in chunks:
        streams.accept(pub, 0.0)
    print(f"{'stream chunk through accept':<58} {(time.perf_counter() - start) / len(chunks) * 1e6:9.2f} us")
    plain = Publication(b'{"text": "an ordinary message"}')
    start = time.perf_counter()
    for _ in range(100_000):
        streams.accept(plain, 0.0)
    print(
        f"{'ordinary publication through accept':<58} {(time.perf_counter() - start) / 100_000 * 1e6:9.2f} us"
    )


if __name__ == "__main__":
    main()
