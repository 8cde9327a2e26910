"""Log set-up: one line per event, with the session's fields (client, user, tenant, transport) appended."""

from __future__ import annotations

import logging

_FIELDS = ("client", "user", "tenant", "transport")


class SessionFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{name}={getattr(record, name)!r}" for name in _FIELDS if hasattr(record, name)]
        return f"{line} {' '.join(extras)}" if extras else line


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(SessionFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("switchboard")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
