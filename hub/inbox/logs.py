"""The inbox's log lines that can repeat (a failing store, a push the broker refuses, a user id that cannot
name a personal channel): each kind, named by its constant format string, at most one line per 10 s, the
next one saying how many were left out (``hub.logs.ThrottledLog``, one per kind)."""

from __future__ import annotations

import logging
from typing import Any

from hub.logs import ThrottledLog

_kinds: dict[tuple[str, int, str], ThrottledLog] = {}
"""Bounded: one entry per call site (a constant format string)."""


def log_limited(logger: logging.Logger, level: int, msg: str, *args: Any) -> bool:
    """Log ``msg % args`` unless a line of this kind went out less than 10 s ago; whether it was logged."""
    key = (logger.name, level, msg)
    limiter = _kinds.get(key)
    if limiter is None:
        limiter = _kinds[key] = ThrottledLog(logger, level)
    return limiter(msg, *args)
