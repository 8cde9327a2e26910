"""Channel-name patterns (sans-I/O), as Centrifugo's ``channels`` API takes them (gobwas/glob syntax, no
separators):

- ``*`` (and ``**``) any run of characters, ``?`` exactly one character;
- ``[abc]``, ``[a-z]`` one character of the class, ``[!abc]``, ``[!a-z]`` one character outside it;
- ``{news,chat:*}`` one of the comma-separated alternatives (which may hold patterns themselves, and nest);
- ``\\`` takes the next character literally.

A pattern matches a whole name, never a part of one.
"""

from __future__ import annotations

import re
from collections.abc import Callable


class BadPattern(ValueError):
    """The pattern breaks the syntax (unclosed ``[`` or ``{``, empty class, trailing ``\\``)."""


def _char_class(pattern: str, start: int) -> tuple[str, int]:
    """The regex of the class opening at ``pattern[start] == "["``, and the index after its ``]``."""
    i = start + 1
    negate = i < len(pattern) and pattern[i] == "!"
    if negate:
        i += 1
    items: list[str] = []
    while i < len(pattern) and pattern[i] != "]":
        lo = pattern[i]
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            hi = pattern[i + 2]
            if hi < lo:
                raise BadPattern(f"reversed range {lo}-{hi}")
            items.append(f"{re.escape(lo)}-{re.escape(hi)}")
            i += 3
        else:
            items.append(re.escape(lo))
            i += 1
    if i >= len(pattern):
        raise BadPattern("unclosed '['")
    if not items:
        raise BadPattern("empty character class")
    return ("[^" if negate else "[") + "".join(items) + "]", i + 1


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """A predicate: does a channel name match ``pattern``? BadPattern when the syntax is broken."""
    out: list[str] = []
    depth = 0
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= len(pattern):
                raise BadPattern("trailing '\\'")
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "*":
            while i + 1 < len(pattern) and pattern[i + 1] == "*":
                i += 1
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            regex, i = _char_class(pattern, i)
            out.append(regex)
            continue
        elif ch == "{":
            depth += 1
            out.append("(?:")
        elif ch == "," and depth:
            out.append("|")
        elif ch == "}" and depth:
            depth -= 1
            out.append(")")
        else:
            out.append(re.escape(ch))
        i += 1
    if depth:
        raise BadPattern("unclosed '{'")
    compiled = re.compile("".join(out), re.DOTALL)
    return lambda name: compiled.fullmatch(name) is not None
