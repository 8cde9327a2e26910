"""Hypothesis strategies for hostile input: right shape, wrong content.

Each decoder's fuzz module builds its messages from these: JSON values with huge numbers, deep nesting and
every type where another was expected; raw JSON text that only looks like JSON; bytes that are not UTF-8;
and ``mutated``, which damages a well-formed message the ways a fuzzer does (flip a byte, cut it short,
insert, duplicate or splice a slice, set a length byte to its maximum).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st


def examples(n: int) -> int:
    """``n`` examples under the ``ci`` profile (100 by default), proportionally more under ``soak``."""
    return max(1, n * settings.default.max_examples // 100)


# ---------------------------------------------------------------- JSON values

huge_ints = st.sampled_from(
    [0, -1, 1, 2**31 - 1, 2**31, 2**32, 2**53, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**63) - 1]
)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
"""Any text JSON can carry (a lone surrogate cannot be written as UTF-8: see ``json_texts`` for those)."""
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    huge_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    st.sampled_from(["", " ", "\x00", "\u2028", "$", "#", ":", "a" * 300, "\x1b[31m", "ÿ", "😀"]),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
"""Any JSON value orjson can write (64-bit integers, finite floats)."""


def nested(depth: int, leaf: Any = 1) -> Any:
    """``leaf`` inside ``depth`` alternating arrays and objects."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


depths = st.one_of(st.integers(1, 3_000), st.integers(250, 260), st.integers(990, 1_030))
"""Nesting depths, with the edges drawn often: orjson writes 254 levels and reads 1024, Python's own
recursion limit is 1000."""

deep_values = depths.map(nested)
"""Values nested past what orjson writes (254) and up to what it reads (1024), and beyond."""


def nested_text(depth: int) -> str:
    """JSON text of ``nested(depth)`` (written by hand: every JSON writer stops short of the deepest)."""
    out = "1"
    for level in range(depth):
        out = f"[{out}]" if level % 2 else f'{{"k":{out}}}'
    return out


valid_json_texts = st.one_of(
    json_values.map(lambda v: json.dumps(v)),
    st.integers(2**64, 2**200).map(str),  # integers no 64-bit field holds
    depths.filter(lambda d: d <= 1_024).map(nested_text),
)
"""JSON text every JSON reader accepts, with what orjson's reader or writer may not."""

json_texts = st.one_of(
    valid_json_texts,
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-0", "1.0e-400", "[1,]", "{,}", "nul"]),
    depths.map(nested_text),
    st.sampled_from(['"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', '"\\x41"']),
)
"""JSON text as a hostile client writes it: valid, barely valid, or only JSON-looking."""


def json_object_text(members: dict[str, str]) -> str:
    """A JSON object from its members' names and their values' JSON text."""
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in members.items()) + "}"


BAD_UTF8 = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80", b"\xfe\xff"]
"""Byte sequences no UTF-8 decoder accepts (overlong, surrogate, past U+10FFFF, truncated, stray)."""
bad_utf8 = st.sampled_from(BAD_UTF8)


T = TypeVar("T")


def mostly(right: st.SearchStrategy[T], other: st.SearchStrategy[T], tenths: int = 8) -> st.SearchStrategy[T]:
    """``right`` ``tenths`` times in ten, else ``other``: most input must get past the first check to
    reach the code behind it."""
    return st.integers(0, 9).flatmap(lambda n: right if n < tenths else other)


def sometimes_mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` itself, or (one time in four) damaged."""
    return mostly(st.just(data), mutated(data), 7)


@st.composite
def mutated(draw: st.DrawFn, data: bytes, rounds: int = 3) -> bytes:
    """``data`` damaged up to ``rounds`` times, each time in one of a fuzzer's ways."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, rounds))):
        how = draw(st.sampled_from(["flip", "set", "cut", "insert", "dup", "splice", "maxlen", "utf8"]))
        at = draw(st.integers(0, len(out)))
        if how == "flip" and at < len(out):
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "set" and at < len(out):
            out[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x22, 0x5C]))
        elif how == "cut":
            del out[at:]
        elif how == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif how == "dup" and out:
            end = draw(st.integers(at, len(out)))
            out[at:at] = out[at:end] * draw(st.integers(1, 4))
        elif how == "splice":
            end = draw(st.integers(at, len(out)))
            del out[at:end]
        elif how == "maxlen":
            out[at:at] = b"\xff\xff\xff\xff\x0f"  # a varint of 2**32 - 1: a length far past the end
        elif how == "utf8":
            out[at:at] = draw(bad_utf8)
    return bytes(out)


# ---------------------------------------------------------------- the contract's bounds

DECODE_SECONDS = 2.0
"""Most time one decode of at most 64 KiB may take, generous for a busy machine (they take milliseconds)."""


@contextmanager
def bounded_time(seconds: float = DECODE_SECONDS) -> Iterator[None]:
    start = time.monotonic()
    yield
    elapsed = time.monotonic() - start
    assert elapsed < seconds, f"took {elapsed:.2f} s"


class ErrorLog(logging.Handler):
    """Keeps the ERROR (and worse) records of the ``switchboard`` loggers: client input must never cause
    one (a traceback in the log is a crash the node survived, not a protocol answer)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        out = [
            f"{r.name}: {r.getMessage()}" + (f" ({r.exc_info[1]!r})" if r.exc_info else "")
            for r in self.records
        ]
        self.records.clear()
        return out


@contextmanager
def error_log() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    logger = logging.getLogger("switchboard")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
