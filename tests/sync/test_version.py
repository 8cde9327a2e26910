"""Document versions: a state vector and a digest of the delete set, equal for equal documents however
their updates arrived, different after any insert or deletion."""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from sync.version import (
    Relation,
    Version,
    compare,
    decode_state_vector,
    document_version,
    encode_state_vector,
    is_tag,
    tag_of,
)


def test_state_vector_encoding_is_yjs_own() -> None:
    doc: Doc[Any] = Doc()
    for client in (5, 300, 2**40):
        other: Doc[Any] = Doc(client_id=client)
        other.get("t", type=Text).insert(0, "x" * (client % 7 + 1))
        doc.apply_update(other.get_update())
    state = decode_state_vector(doc.get_state())
    assert encode_state_vector(state) == encode_state_vector(decode_state_vector(encode_state_vector(state)))
    assert list(decode_state_vector(encode_state_vector(state))) == sorted(state, reverse=True)
    assert Version.decode(document_version(doc).encode()).state == state


def test_a_deletion_changes_the_version_and_not_the_state_vector() -> None:
    doc: Doc[Any] = Doc()
    text = doc.get("t", type=Text)
    text += "hello"
    before = document_version(doc)
    del text[0:1]
    after = document_version(doc)
    assert after.state == before.state and after.deletions != before.deletions
    assert compare(after, before) is Relation.CHANGED
    assert compare(before, after) is Relation.CHANGED  # equal state vectors: only "different" can be said
    assert compare(after, after) is Relation.SAME
    text += "!"
    assert compare(before, document_version(doc)) is Relation.BEHIND


def test_version_strings_round_trip() -> None:
    doc: Doc[Any] = Doc()
    doc.get("t", type=Text).insert(0, "x")
    version = document_version(doc)
    text = version.encode()
    state, digest = text.split(".")
    assert base64.b64decode(state) == encode_state_vector(version.state)
    assert len(digest) == 16
    assert Version.decode(text) == version


def test_a_tag_is_23_characters_whatever_the_version_and_never_taken_for_one() -> None:
    """A version grows with every client id that edited (2,000 editors: 16 KB and more, past what a stock
    proxy takes in a header); its tag, the /content ETag, does not."""
    doc: Doc[Any] = Doc()
    tags = set()
    for client in range(1, 2001):
        other: Doc[Any] = Doc(client_id=10**9 + client * 1_000_003)  # 32-bit ids, as a browser's
        other.get("t", type=Text).insert(0, "x")
        doc.apply_update(other.get_update())
        if client in (1, 2, 2000):
            version = document_version(doc)
            tag = version.tag()
            assert len(tag) == 23 and is_tag(tag) and tag == tag_of(version.encode())
            assert not is_tag(version.encode())  # a version always has its "."
            tags.add(tag)
    assert len(version.encode()) > 15_000 and len(tags) == 3
    for garbage in ("", "t", "t" * 23, "x" * 23, "t" + "." * 22, "t" + "A" * 21):
        assert is_tag(garbage) == (garbage == "t" * 23)  # only the shape is judged: a wrong tag is "changed"


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 20), st.booleans()), max_size=30), st.randoms())
@settings(max_examples=40, deadline=None)
def test_equal_documents_have_equal_versions_whatever_the_order_of_updates(
    steps: list[tuple[int, int, bool]], rng: Any
) -> None:
    docs = [Doc(client_id=n + 1) for n in range(3)]
    updates: list[bytes] = []
    for who, pos, delete in steps:
        doc = docs[who]
        for update in updates:
            doc.apply_update(update)
        text = doc.get("t", type=Text)
        before = doc.get_state()
        if delete and len(text):
            del text[min(pos, len(text) - 1)]
        else:
            text.insert(min(pos, len(text)), "ab")
        updates.append(doc.get_update(before) if not delete else doc.get_update())
    replicas = []
    for _ in range(2):
        replica: Doc[Any] = Doc()
        shuffled = list(updates)
        rng.shuffle(shuffled)
        for update in shuffled + shuffled:  # the second pass brings what waited for a missing dependency
            replica.apply_update(update)
        replicas.append(replica)
    assert str(replicas[0].get("t", type=Text)) == str(replicas[1].get("t", type=Text))
    assert document_version(replicas[0]) == document_version(replicas[1])
