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


MAX_ALTERNATIVES = 256
"""Most whole-pattern alternatives ``{...}`` may expand to (BadPattern beyond)."""


def _alternatives(pattern: str, i: int, depth: int) -> tuple[list[list[str]], int]:
    """Expand braces from ``pattern[i]`` on: each alternative as a list of tokens (regex pieces of one
    character each, or ``"*"``). Returns at the end of the pattern, or at the ``,``/``}`` that ends the
    current brace level (``depth`` > 0), with the index of that character."""
    results: list[list[str]] = [[]]
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= len(pattern):
                raise BadPattern("trailing '\\'")
            token, i = re.escape(pattern[i + 1]), i + 2
        elif ch == "*":
            while i + 1 < len(pattern) and pattern[i + 1] == "*":
                i += 1
            token, i = "*", i + 1
        elif ch == "?":
            token, i = ".", i + 1
        elif ch == "[":
            token, i = _char_class(pattern, i)
        elif ch == "{":
            options: list[list[str]] = []
            i += 1
            while True:
                inner, i = _alternatives(pattern, i, depth + 1)
                options += inner
                if i >= len(pattern):
                    raise BadPattern("unclosed '{'")
                if pattern[i] == "}":
                    i += 1
                    break
                i += 1  # past ","
            results = [r + o for r in results for o in options]
            if len(results) > MAX_ALTERNATIVES:
                raise BadPattern(f"more than {MAX_ALTERNATIVES} alternatives")
            continue
        elif depth and ch in ",}":
            return results, i
        else:
            token, i = re.escape(ch), i + 1
        for r in results:
            r.append(token)
    return results, i


def _glob_matcher(tokens: list[str]) -> Callable[[str], bool]:
    """Match one brace-free glob in linear time: the pieces between stars are fixed-length regexes (no
    quantifier, so no backtracking); the first must match at the start, the last at the end, and each one
    between takes its leftmost place after the previous (leftmost is always as good as any later place)."""
    pieces: list[list[str]] = [[]]
    for token in tokens:
        if token == "*":
            pieces.append([])
        else:
            pieces[-1].append(token)
    compiled = [re.compile("".join(p), re.DOTALL) for p in pieces]
    lengths = [len(p) for p in pieces]
    if len(compiled) == 1:
        whole = compiled[0]
        return lambda name: len(name) == lengths[0] and whole.fullmatch(name) is not None
    head, middle, tail = compiled[0], compiled[1:-1], compiled[-1]
    head_len, tail_len = lengths[0], lengths[-1]

    def match(name: str) -> bool:
        if len(name) < head_len + tail_len or head.match(name) is None:
            return False
        end = len(name) - tail_len
        if tail.fullmatch(name, end) is None:
            return False
        pos = head_len
        for piece, size in zip(middle, lengths[1:-1], strict=True):
            found = piece.search(name, pos, end)
            if found is None:
                return False
            pos = found.start() + size
        return True

    return match


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """A predicate: does a channel name match ``pattern``? BadPattern when the syntax is broken.

    Matching takes time linear in the name for each alternative (a client-chosen pattern must not be able
    to stall the node, as a backtracking regex of many stars would)."""
    alternatives, _ = _alternatives(pattern, 0, 0)
    matchers = [_glob_matcher(tokens) for tokens in alternatives]
    if len(matchers) == 1:
        return matchers[0]
    return lambda name: any(m(name) for m in matchers)
