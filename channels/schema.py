"""JSON Schema for publication data (per namespace): compile once, then ``check(data)`` gives None or one
message for the sender. A thin adapter over jsonschema-rs (a Rust validator).

Why that library (``bench/schema.py``, a 35-member sensor reading against a schema with ranges, an enum, a
pattern and an array of objects): ~18 µs per valid reading against ~68 µs for fastjsonschema and ~1.8 ms
for jsonschema, on the same run; ~0.7 ms to compile. fastjsonschema generates Python source from the
schema and ``exec``s it: acceptable for a schema from the operator's config (trusted, as config is), but
one more thing to trust, and 85 ms to compile; its patterns, like jsonschema's, run on Python's
backtracking ``re``. All of the JSON Schema drafts (4 to 2020-12) and their meta-schema checks are more
than we should write ourselves.

Policies:

- The schema comes from the operator's config and is trusted; the data is not. So:
  - no reference is fetched: a ``$ref`` to a URL or a file is refused when the schema compiles (the library
    would otherwise fetch it, over the network or from disk); a schema is self-contained (``$defs``);
  - ``pattern`` and ``patternProperties`` use the linear-time regex engine (the data cannot make a
    pattern backtrack); a pattern that needs backtracking (lookaround, backreferences) is refused when the
    schema compiles;
  - ``format`` follows the schema's draft (an annotation only in 2019-09 and 2020-12).
- The draft is the schema's ``$schema``, 2020-12 without one. A schema invalid against its meta-schema is
  refused with the library's first reason (InvalidFeedConfig).
- ``check`` reports the first error as ``data<JSON pointer>: <reason>`` (``data/temperature: 900.5 is
  greater than the maximum of 500``), cut to ``MAX_MESSAGE`` characters: it goes back to a client and
  may quote what the client sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema_rs
import orjson

from channels.errors import InvalidFeedConfig

__all__ = ["MAX_MESSAGE", "DataSchema"]

MAX_MESSAGE = 200


def _pointer(path: list[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _shorten(text: str) -> str:
    text = " ".join(text.split())  # the library's messages may hold newlines; ours are one line
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


class DataSchema:
    """One compiled schema; checking fetches and executes nothing."""

    __slots__ = ("source", "_validator")

    def __init__(self, schema: Mapping[str, Any] | bool) -> None:
        """Compile ``schema`` (a JSON object or a boolean schema); InvalidFeedConfig if it is not one."""
        if not isinstance(schema, (Mapping, bool)):
            raise InvalidFeedConfig(
                f"a data schema must be a JSON object (or true/false), got {schema!r:.80}"
            )
        self.source = schema
        try:
            self._validator = jsonschema_rs.validator_for(
                dict(schema) if isinstance(schema, Mapping) else schema,
                offline=True,
                pattern_options=jsonschema_rs.RegexOptions(),
            )
        except jsonschema_rs.ValidationError as exc:
            raise InvalidFeedConfig(f"invalid data schema: {_shorten(exc.message)}") from None
        except (ValueError, TypeError) as exc:  # e.g. a value that is not JSON (a set, a date)
            raise InvalidFeedConfig(f"invalid data schema: {_shorten(str(exc))}") from None

    def check(self, data: Any) -> str | None:
        """None when ``data`` (parsed JSON: dict, list, str, int, float, bool, None) is valid, else why not
        (the first error, one line). Other Python types are a caller's bug: ValueError."""
        if self._validator.is_valid(data):
            return None
        error = next(iter(self._validator.iter_errors(data)))
        return _shorten(f"data{_pointer(error.instance_path)}: {error.message}")

    def check_json(self, raw: bytes) -> str | None:
        """As ``check``, for data as JSON bytes (what a publication carries)."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _shorten(f"data is not JSON: {exc}")
        return self.check(data)
