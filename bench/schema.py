"""JSON Schema validators compared on a sensor reading: jsonschema-rs (Rust), fastjsonschema (generates and
compiles Python code from the schema) and jsonschema (the reference, pure Python), in one run.

The schema: a device reading (required members, number ranges, an enum, a string pattern, an array of
alarm objects, no other members); the payload: ~30 numeric fields plus those members, valid, and the same
with one field out of range (the first error's message is formatted, as the hub will send it back).

Printed per validator: compile time of the schema, and per validation of the valid payload and of the
invalid one (median of ``--repeats`` runs of ``--n`` validations), in microseconds.

usage: python bench/schema.py [--n 5000] [--repeats 5]
    (needs: .venv/bin/pip install fastjsonschema jsonschema  -- bench-only, not dependencies of the hub)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

SENSORS = [f"s{i:02d}" for i in range(30)]

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["device", "ts", "status", *SENSORS],
    "additionalProperties": False,
    "properties": {
        "device": {"type": "string", "pattern": "^[a-z0-9-]{1,32}$"},
        "site": {"type": "string", "maxLength": 64},
        "ts": {"type": "integer", "minimum": 0},
        "status": {"enum": ["ok", "degraded", "fault"]},
        "alarms": {
            "type": "array",
            "maxItems": 16,
            "items": {
                "type": "object",
                "required": ["code", "level"],
                "properties": {"code": {"type": "integer"}, "level": {"enum": ["info", "warn", "crit"]}},
            },
        },
        **{s: {"type": "number", "minimum": -50, "maximum": 500} for s in SENSORS},
    },
}

VALID: dict[str, Any] = {
    "device": "boiler-7",
    "site": "plant-3/hall-B",
    "ts": 1_700_000_000_000,
    "status": "ok",
    "alarms": [{"code": 17, "level": "warn"}],
    **{s: 20.0 + i * 3.25 for i, s in enumerate(SENSORS)},
}
INVALID = {**VALID, "s17": 900.5}


def jsonschema_rs_case() -> tuple[float, Callable[[Any], str | None]]:
    import jsonschema_rs

    started = time.perf_counter()
    validator = jsonschema_rs.validator_for(
        SCHEMA, offline=True, pattern_options=jsonschema_rs.RegexOptions()
    )
    compiled = time.perf_counter() - started

    def check(instance: Any) -> str | None:
        if validator.is_valid(instance):
            return None
        error = next(validator.iter_errors(instance))
        return f"{'/'.join(map(str, error.instance_path))}: {error.message}"

    return compiled, check


def fastjsonschema_case() -> tuple[float, Callable[[Any], str | None]]:
    import fastjsonschema

    started = time.perf_counter()
    validate = fastjsonschema.compile(SCHEMA)
    compiled = time.perf_counter() - started

    def check(instance: Any) -> str | None:
        try:
            validate(instance)
        except fastjsonschema.JsonSchemaValueException as exc:
            return str(exc.message)
        return None

    return compiled, check


def jsonschema_case() -> tuple[float, Callable[[Any], str | None]]:
    import jsonschema

    started = time.perf_counter()
    validator = jsonschema.Draft202012Validator(SCHEMA)
    compiled = time.perf_counter() - started

    def check(instance: Any) -> str | None:
        error = next(validator.iter_errors(instance), None)
        return None if error is None else f"{error.json_path}: {error.message}"

    return compiled, check


def per_call(check: Callable[[Any], str | None], instance: Any, n: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(n):
            check(instance)
        runs.append((time.perf_counter() - started) / n)
    return statistics.median(runs) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; {len(VALID)} members; median of {args.repeats} x {args.n}")
    print(f"{'validator':<16} {'compile ms':>10} {'valid us':>9} {'invalid us':>10}  first error")
    for name, case in (
        ("jsonschema-rs", jsonschema_rs_case),
        ("fastjsonschema", fastjsonschema_case),
        ("jsonschema", jsonschema_case),
    ):
        try:
            compiled, check = case()
        except ImportError:
            print(f"{name:<16} not installed")
            continue
        assert check(VALID) is None and check(INVALID)
        n = args.n if name != "jsonschema" else max(args.n // 10, 100)
        valid = per_call(check, VALID, n, args.repeats)
        invalid = per_call(check, INVALID, n, args.repeats)
        print(f"{name:<16} {compiled * 1e3:>10.2f} {valid:>9.2f} {invalid:>10.2f}  {check(INVALID)}")


if __name__ == "__main__":
    main()
