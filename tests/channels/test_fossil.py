"""The fossil delta codec: our deltas rebuild their target with our decoder and with the official SDKs'
decoders (centrifuge-python in-process, centrifuge-js in Node), carry through a JSON string (valid UTF-8)
for JSON clients, are much smaller than the data on a realistic sensor feed, and garbage never makes the
decoder raise anything but BadDelta."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from centrifuge import Publication as SdkPublication
from centrifuge.codecs import _JsonCodec, _ProtobufCodec
from centrifuge.fossil import apply_delta as sdk_apply_delta
from centrifuge.fossil import checksum as sdk_checksum
from hypothesis import example, given, settings
from hypothesis import strategies as st

from channels.errors import BadDelta
from channels.fossil import (
    MAX_DELTA_INPUT,
    DeltaMemo,
    apply_delta,
    checksum,
    create_delta,
    delta_payload,
    output_size,
)
from tests.hub.test_js_sdk import centrifuge_js  # noqa: F401  (a fixture)


@st.composite
def edited(
    draw: st.DrawFn, alphabet: st.SearchStrategy[bytes] = st.binary(min_size=1, max_size=40)
) -> tuple[bytes, bytes]:
    """A base and a target made from it by a few inserts, deletes and replacements: what a delta is for."""
    base = draw(st.binary(max_size=600))
    target = bytearray(base)
    for _ in range(draw(st.integers(0, 5))):
        at = draw(st.integers(0, len(target)))
        cut = draw(st.integers(0, min(30, len(target) - at)))
        target[at : at + cut] = draw(alphabet) if draw(st.booleans()) else b""
    return base, bytes(target)


def sensor_reading(rng: random.Random, fields: dict[str, Any], changes: int) -> bytes:
    """The next reading of a device with ~30 numeric fields, ``changes`` of which moved (plus its clock)."""
    for name in rng.sample([n for n in fields if n[1:3].isdigit()], changes):
        fields[name] = round(fields[name] + rng.uniform(-1, 1), 2)
    fields["ts"] += 1000
    return orjson.dumps(fields)


def sensor_fields(rng: random.Random) -> dict[str, Any]:
    kinds = ["temperature", "humidity", "pressure", "flow", "vibration"]
    fields: dict[str, Any] = {"device": "boiler-7", "site": "plant-3 / hall B", "ts": 1_700_000_000_000}
    fields.update({f"s{i:02d}_{kinds[i % 5]}": round(rng.uniform(0, 100), 2) for i in range(30)})
    fields["status"] = "ok"
    return fields


# -- round trips ---------------------------------------------------------------------------------------


@given(base=st.binary(max_size=300), target=st.binary(max_size=300))
@example(base=b"", target=b"")
@example(base=b"x" * 40, target=b"x" * 40)
def test_random_pairs_round_trip_with_ours_and_the_python_sdk(base: bytes, target: bytes) -> None:
    delta = create_delta(base, target)
    assert apply_delta(base, delta) == target
    assert sdk_apply_delta(base, delta) == target
    assert output_size(delta) == len(target)


@given(edited())
def test_edited_data_round_trips_and_costs_about_the_edits(pair: tuple[bytes, bytes]) -> None:
    base, target = pair
    delta = create_delta(base, target)
    assert apply_delta(base, delta) == target
    assert sdk_apply_delta(base, delta) == target


@given(st.binary(min_size=200, max_size=3000))
def test_a_single_local_edit_gives_a_delta_near_the_edit_size(base: bytes) -> None:
    at = len(base) // 3
    target = base[:at] + b"CHANGED" + base[at + 3 :]
    delta = create_delta(base, target)
    assert apply_delta(base, delta) == target
    # header + two copies + one insert + checksum: a few dozen bytes, whatever the payload's size
    assert len(delta) <= 7 + 32 + 16 + 16


@pytest.mark.parametrize("size", [4096, MAX_DELTA_INPUT])
def test_large_payloads_stay_valid_and_a_change_in_the_middle_costs_about_the_change(size: int) -> None:
    base = os.urandom(size)
    unrelated = os.urandom(size)
    delta = create_delta(base, unrelated)  # nothing to copy: the scan gives up on its budget
    assert apply_delta(base, delta) == unrelated and len(delta) < size + 32
    middle = base[: size // 3] + os.urandom(size // 3) + base[size // 3 * 2 :]
    delta = create_delta(base, middle)  # the common tail is found after the scan stopped
    assert apply_delta(base, delta) == middle and len(delta) < size // 3 + 64
    assert delta_payload(base, middle) == (delta, True)


def test_a_common_tail_shorter_than_a_block_is_copied() -> None:
    base, target = b"x" * 40 + b"0123456789ab", b"y" * 40 + b"0123456789ab"
    delta = create_delta(base, target)
    assert b"C@" in delta and apply_delta(base, delta) == target  # "C" = 12 bytes copied


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32), changes=st.integers(1, 6))
def test_realistic_sensor_feed_round_trips_and_is_small(seed: int, changes: int) -> None:
    rng = random.Random(seed)
    fields = sensor_fields(rng)
    previous = orjson.dumps(fields)
    for _ in range(5):
        current = sensor_reading(rng, fields, changes)
        delta = create_delta(previous, current)
        assert apply_delta(previous, delta) == current
        assert sdk_apply_delta(previous, delta) == current
        # a few changed numbers in ~900 bytes: the delta is a small fraction of the data
        assert len(delta) < 20 + 22 * (changes + 1), delta
        previous = current


# -- UTF-8 and the JSON protocol -----------------------------------------------------------------------

text_json = st.dictionaries(
    st.text(max_size=8),
    st.one_of(st.text(max_size=40), st.floats(allow_nan=False, allow_infinity=False)),
    max_size=8,
).map(lambda d: orjson.dumps(d))


@st.composite
def text_edits(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """Two JSON documents of non-ASCII text, the second an edit of the first (characters replaced inside
    strings: where a byte-level delta would split a multi-byte character)."""
    words = draw(
        st.lists(st.text(st.characters(codec="utf-8"), min_size=20, max_size=60), min_size=1, max_size=4)
    )
    base = orjson.dumps({"text": words})
    changed = list(words)
    for i in range(len(changed)):
        if draw(st.booleans()):
            at = draw(st.integers(0, len(changed[i]) - 1))
            changed[i] = (
                changed[i][:at]
                + draw(st.text(st.characters(codec="utf-8"), min_size=1, max_size=3))
                + changed[i][at + 1 :]
            )
    return base, orjson.dumps({"text": changed})


@given(text_edits())
@example((orjson.dumps({"text": "x" * 40 + "é"}), orjson.dumps({"text": "x" * 40 + "è"})))  # C3 A9 -> C3 A8
@example((orjson.dumps({"s": "🟢" * 12}), orjson.dumps({"s": "🟢" * 6 + "🔴" + "🟢" * 5})))
def test_deltas_of_text_are_utf8_and_survive_a_json_string(pair: tuple[bytes, bytes]) -> None:
    base, target = pair
    delta = create_delta(base, target)
    text = delta.decode("utf-8")  # raises if a segment split a character
    # What a JSON client gets: `data` as a JSON string; the SDK encodes the string as UTF-8 and applies it.
    wire = orjson.dumps({"data": text, "delta": True})
    received = orjson.loads(wire)["data"]
    assert sdk_apply_delta(base, received.encode("utf-8")) == target
    assert apply_delta(base, received.encode("utf-8")) == target


@given(base=text_json, target=text_json)
def test_deltas_between_unrelated_text_documents_are_utf8(base: bytes, target: bytes) -> None:
    delta = create_delta(base, target)
    delta.decode("utf-8")
    assert apply_delta(base, delta) == target


def test_python_sdk_json_and_protobuf_codecs_decode_a_chain() -> None:
    """centrifuge-python's own path for a delta subscription: JSON `data` strings, Protobuf bytes."""
    rng = random.Random(7)
    fields = sensor_fields(rng)
    fields["site"] = "Zürich — Halle 3"
    readings = [orjson.dumps(fields)] + [sensor_reading(rng, fields, 3) for _ in range(20)]
    held_json: Any = None
    held_pb: Any = None
    previous = None
    deltas = 0
    for data in readings:
        payload, is_delta = delta_payload(previous, data)
        deltas += is_delta
        pub_json = SdkPublication(offset=0, data=payload.decode("utf-8"), info=None, tags={}, delta=is_delta)
        decoded, held_json = _JsonCodec.apply_delta_if_needed(held_json, pub_json)
        assert decoded == orjson.loads(data)
        pub_pb = SdkPublication(offset=0, data=payload, info=None, tags={}, delta=is_delta)
        decoded_pb, held_pb = _ProtobufCodec.apply_delta_if_needed(held_pb, pub_pb)
        assert decoded_pb == data
        previous = data
    assert deltas == len(readings) - 1  # all but the first went as deltas


# -- the official JS SDK (Node) ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fossil_js(centrifuge_js: Path) -> Path:  # noqa: F811  (the fixture imported above)
    """The script beside the SDK test's, once that fixture has installed the npm packages."""
    return centrifuge_js.parent / "fossil.mjs"


def _chains() -> list[list[bytes]]:
    rng = random.Random(11)
    fields = sensor_fields(rng)
    feed = [orjson.dumps(fields)] + [sensor_reading(rng, fields, rng.randint(1, 5)) for _ in range(30)]
    text = [orjson.dumps({"msg": "Привет, мир! " * 4 + s}) for s in ("é", "è", "😀", "ё", "中文", "ё")]
    unrelated = [orjson.dumps({"a": 1}), orjson.dumps({"b": [2] * 30}), orjson.dumps(os.urandom(8).hex())]
    return [feed, text, unrelated]


async def _run_node(script: Path, protocol: str, chains: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    stdin = json.dumps({"protocol": protocol, "chains": chains}).encode()
    stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    return [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]


@pytest.mark.parametrize("protocol", ["json", "protobuf"])
async def test_js_sdk_decodes_our_delta_chains(fossil_js: Path, protocol: str) -> None:
    chains = _chains()
    wire: list[list[dict[str, Any]]] = []
    kinds: list[list[bool]] = []
    for chain in chains:
        pubs, flags, previous = [], [], None
        for data in chain:
            payload, is_delta = delta_payload(previous, data)
            encoded = payload.decode("utf-8") if protocol == "json" else base64.b64encode(payload).decode()
            pubs.append({"data": encoded, "delta": is_delta})
            flags.append(is_delta)
            previous = data
        wire.append(pubs)
        kinds.append(flags)
    results = await _run_node(fossil_js, protocol, wire)
    assert len(results) == len(chains)
    for chain, result in zip(chains, results, strict=True):
        assert "error" not in result, result
        assert [base64.b64decode(v) for v in result["values"]] == chain
        if protocol == "json":
            assert result["data"] == [orjson.loads(d) for d in chain]
    assert all(kinds[0][1:]) and all(kinds[1][1:])  # the feed and the text went as deltas
    assert not any(kinds[2])  # unrelated data went full


# -- the format, exactly -------------------------------------------------------------------------------


def test_format_of_a_small_delta() -> None:
    # No base block to copy: the whole target is one insert. The checksum of "abc" is 0x61626300 (padded),
    # in 6-bit digits 1 33 24 38 12 0: "1XObC0".
    assert checksum(b"abc") == 0x61626300
    assert create_delta(b"", b"abc") == b"3\n3:abc" + b"1XObC0;"
    base = b"0123456789abcdef" * 4
    delta = create_delta(base, base)
    assert delta.startswith(b"10\n10@0,")  # 64 bytes copied from offset 0 ("10" in base 64)
    assert apply_delta(base, delta) == base


@given(st.binary(max_size=70))
def test_checksum_matches_the_sdks(data: bytes) -> None:
    assert checksum(data) == sdk_checksum(data)


@given(st.integers(0, 2**32 - 1))
def test_large_integers_round_trip_through_the_header(size: int) -> None:
    # a delta's header is its target's size: the integer encoding, checked through our reader
    delta = create_delta(b"", b"")
    forged = delta.replace(b"0\n", _int(size) + b"\n", 1)
    assert output_size(forged) == size


def _int(value: int) -> bytes:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
    out = ""
    while True:
        out = digits[value & 63] + out
        value >>= 6
        if not value:
            return out.encode()


# -- choosing delta or full ----------------------------------------------------------------------------


def test_delta_payload_sends_full_without_a_base_for_unrelated_or_oversized_data() -> None:
    data = b'{"temperature": 21.5, "humidity": 40.25, "device": "boiler-7"}'
    assert delta_payload(None, data) == (data, False)
    assert delta_payload(b"something else entirely", data) == (data, False)
    similar = data.replace(b"21.5", b"21.7")
    payload, is_delta = delta_payload(data, similar)
    assert is_delta and len(payload) < len(similar) and apply_delta(data, payload) == similar
    big = b"x" * (MAX_DELTA_INPUT + 1)
    assert delta_payload(big, big) == (big, False)


def test_delta_memo_encodes_each_pair_once_and_stays_bounded() -> None:
    memo = DeltaMemo(max_entries=3)
    rng = random.Random(3)
    fields = sensor_fields(rng)
    readings = [orjson.dumps(fields)] + [sensor_reading(rng, fields, 2) for _ in range(6)]
    # 100 subscribers that all hold reading 0 get reading 1: one encode, the same bytes for all
    first = memo.payload(0, readings[0], 1, readings[1])
    assert all(memo.payload(0, readings[0], 1, readings[1]) is first for _ in range(100))
    assert memo.encodes == 1 and first[1] and apply_delta(readings[0], first[0]) == readings[1]
    # a conflated subscriber that skipped readings 2..4 has its own pair, against what it holds
    skipped = memo.payload(1, readings[1], 5, readings[5])
    assert memo.encodes == 2 and apply_delta(readings[1], skipped[0]) == readings[5]
    for n in range(2, 7):
        memo.payload(n - 1, readings[n - 1], n, readings[n])
    assert len(memo._entries) == 3
    assert memo.payload("x", None, 6, readings[6]) == (readings[6], False)  # no base: full


# -- hostile deltas ------------------------------------------------------------------------------------


@given(base=st.binary(max_size=64), delta=st.binary(max_size=64))
def test_garbage_deltas_raise_only_bad_delta(base: bytes, delta: bytes) -> None:
    try:
        apply_delta(base, delta)
    except BadDelta:
        pass


@given(pair=edited(), data=st.data())
def test_mutated_deltas_raise_only_bad_delta_or_still_apply(
    pair: tuple[bytes, bytes], data: st.DataObject
) -> None:
    base, target = pair
    delta = bytearray(create_delta(base, target))
    at = data.draw(st.integers(0, len(delta) - 1))
    delta[at] = data.draw(st.integers(0, 255))
    try:
        apply_delta(base, bytes(delta))
    except BadDelta:
        pass


@pytest.mark.parametrize(
    ("delta", "reason"),
    [
        (b"", "expected an integer"),
        (b"3", "not terminated"),
        (b"3\n3:ab", "insert extends past"),
        (b"3\n3@0,", "copy extends past"),
        (b"3\n3:abc", "without a checksum"),
        (b"3\n3:abc1XObC1;", "bad checksum"),
        (b"3\n3:abc1XObC0;x", "after the checksum"),
        (b"4\n3:abc1XObC0;", "declared 4"),
        (b"2\n3:abc1XObC0;", "exceeds the declared size"),
        (b"3\n3!abc", "unknown command"),
        (b"3\n3@0;", "not terminated by ','"),
        (b"~~~~~~\n", "is larger than 2"),
    ],
)
def test_each_broken_delta_says_why(delta: bytes, reason: str) -> None:
    with pytest.raises(BadDelta, match=reason):
        apply_delta(b"abcdef"[:2], delta)


def test_declared_size_is_bounded_before_anything_is_built() -> None:
    base = b"a" * 64
    delta = create_delta(base, base * 2)
    with pytest.raises(BadDelta, match="larger than"):
        apply_delta(base, delta, max_size=100)
    assert apply_delta(base, delta, max_size=128) == base * 2
