"""Log set-up: one line per event, as text or as one JSON object, with the session's fields on every line.

Session fields (``client``, ``user``, ``tenant``, ``transport``) reach a record in two ways:

- explicitly, ``extra=client._log_extra()`` (the session's own log calls);
- implicitly: the connection's task binds its session (``bind_session``), and ``SessionFilter`` adds the
  fields to any record logged from that task without them (other modules, user hooks, the transports).
  Only the task that bound the session gets them: a task spawned from it (and anything scheduled with
  ``call_soon`` from it) would otherwise carry that one client's fields for lines about others.

``setup_logging`` installs the handler with the filter on the ``switchboard`` and ``uvicorn`` loggers.
An embedding program with its own logging can add ``SessionFilter()`` and ``JsonFormatter()`` to its handlers.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

FIELDS = ("client", "user", "tenant", "transport")

SessionFields = Callable[[], dict[str, Any]]
"""Returns the session's current fields (the user and tenant change at connect)."""

_Bound = tuple[SessionFields, "asyncio.Task[Any] | None"]
_session: contextvars.ContextVar[_Bound | None] = contextvars.ContextVar("switchboard_session", default=None)


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


def bind_session(fields: SessionFields) -> contextvars.Token[Any]:
    """From now on, records logged by the current task carry ``fields()``; ``unbind_session`` undoes it."""
    return _session.set((fields, _current_task()))


def unbind_session(token: contextvars.Token[Any]) -> None:
    _session.reset(token)


class SessionFilter(logging.Filter):
    """Adds the bound session's fields to records that do not carry them already. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "client"):
            bound = _session.get()
            if bound is not None and bound[1] is not None and bound[1] is _current_task():
                for name, value in bound[0]().items():
                    if not hasattr(record, name):
                        setattr(record, name, value)
        return True


class SessionFormatter(logging.Formatter):
    """Text: the usual line, then ``name='value'`` for each session field present."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{name}={getattr(record, name)!r}" for name in FIELDS if hasattr(record, name)]
        return f"{line} {' '.join(extras)}" if extras else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the session
    fields present, and ``exception`` (the formatted traceback) when the record has one."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        out: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            if hasattr(record, name):
                out[name] = getattr(record, name)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()


def make_handler(fmt: str = "text") -> logging.Handler:
    handler = logging.StreamHandler()
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    else:
        formatter = SessionFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    handler.addFilter(SessionFilter())
    return handler


def setup_logging(level: str, fmt: str = "text") -> None:
    """Log ``switchboard.*`` and uvicorn's own lines through one handler, as ``fmt`` (``text``/``json``)."""
    handler = make_handler(fmt)
    root = logging.getLogger("switchboard")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    server = logging.getLogger("uvicorn")
    server.handlers[:] = [handler]
    server.propagate = False
    for name in ("uvicorn.error", "uvicorn.access"):
        child = logging.getLogger(name)
        child.handlers[:] = []
        child.propagate = True


class ThrottledLog:
    """One kind of event a client can repeat at will (a timed-out request, a refused connection), logged as
    at most one line per ``interval`` seconds: the first occurrence at once, later ones within the interval
    counted and reported, with their number, by the next line written. Sans-I/O clock: ``clock()``."""

    __slots__ = ("logger", "level", "interval", "clock", "_next", "_suppressed")

    def __init__(
        self,
        logger: logging.Logger,
        level: int = logging.WARNING,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.level = level
        self.interval = interval
        self.clock = clock
        self._next = float("-inf")
        self._suppressed = 0

    def __call__(self, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` unless a line went out less than ``interval`` ago; True if it was logged."""
        now = self.clock()
        if now < self._next:
            self._suppressed += 1
            return False
        self._next = now + self.interval
        if self._suppressed:
            msg += " (%d more since the last such line)"
            args = (*args, self._suppressed)
            self._suppressed = 0
        self.logger.log(self.level, msg, *args)
        return True
