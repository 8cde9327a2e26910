"""Channel-name patterns: the linear-time matcher agrees with a regex translation of the same glob, and a
pattern built to make a backtracking matcher explode stays fast."""

from __future__ import annotations

import re
import time

from hypothesis import given
from hypothesis import strategies as st

from channels.pattern import compile_pattern

_TOKENS = {
    "a": "a",
    "b": "b",
    ":": ":",
    "*": ".*",
    "?": ".",
    "[ab]": "[ab]",
    "[!a]": "[^a]",
    "{a,b*}": "(?:a|b.*)",
    "{x,}": "(?:x|)",
}
"""Each glob piece and its (backtracking) regex: the obvious translation, for small inputs only."""


@given(
    pieces=st.lists(st.sampled_from(sorted(_TOKENS)), max_size=7), name=st.text(alphabet="ab:x", max_size=8)
)
def test_matches_as_the_regex_translation_does(pieces: list[str], name: str) -> None:
    reference = "".join(_TOKENS[p] for p in pieces)
    assert compile_pattern("".join(pieces))(name) == (re.fullmatch(reference, name, re.DOTALL) is not None)


def test_many_stars_against_a_long_name_stay_linear() -> None:
    name = "a" * 255
    match = compile_pattern("*a" * 40 + "*b")
    started = time.perf_counter()
    assert not match(name)
    assert time.perf_counter() - started < 0.5
