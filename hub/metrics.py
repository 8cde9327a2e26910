"""Counters of one node. Cheap enough for the hot path: plain ints and dicts, no locks."""

from __future__ import annotations

from collections import Counter


class Metrics:
    __slots__ = (
        "commands",
        "command_errors",
        "published",
        "slow_disconnects",
        "deliveries",
        "recoveries",
        "recovery_failures",
    )

    def __init__(self) -> None:
        self.commands: Counter[str] = Counter()
        self.command_errors: Counter[tuple[str, int]] = Counter()
        self.published: Counter[str] = Counter()
        self.slow_disconnects = 0
        self.deliveries = 0
        self.recoveries = 0
        self.recovery_failures = 0

    def command(self, method: str) -> None:
        self.commands[method] += 1

    def command_error(self, method: str, code: int) -> None:
        self.command_errors[(method, code)] += 1

    def slow_disconnect(self) -> None:
        self.slow_disconnects += 1

    def recovery(self, ok: bool) -> None:
        if ok:
            self.recoveries += 1
        else:
            self.recovery_failures += 1
