"""Log set-up: one line per event, as text or as one JSON object, with the session's fields on every line.

Session fields (``client``, ``user``, ``tenant``, ``transport``) reach a record in two ways:

- explicitly, ``extra=client._log_extra()`` (the session's own log calls);
- implicitly: the connection's task binds its session (``bind_session``), and ``SessionFilter`` adds the
  fields to any record logged from that task without them (other modules, user hooks, the transports).
  Only the task that bound the session gets them: a task spawned from it (and anything scheduled with
  ``call_soon`` from it) would otherwise carry that one client's fields for lines about others.

``setup_logging`` installs the handler with the filter on the ``switchboard`` and ``uvicorn`` loggers.
An embedding program with its own logging can add ``SessionFilter()`` and ``JsonFormatter()`` to its handlers.

Policies:

- No raw control character from input reaches a log line: both formatters escape every character that is
  not printable (C0 and C1 controls, DEL, line and paragraph separators, bidi and other format characters)
  in the message, the session fields and an exception's message (``clean``), as Python's ``repr`` writes
  them (``\x1b``, ``\n``, ``\u2028``). A line is one line; a traceback keeps its own line structure, but
  the messages in it are one line each. Checked once per line with ``str.isprintable`` (C speed).
- What a client can make the node log over and over (a malformed frame, a refused request, a stream that
  does not read) goes through ``log_limited``: at most ``LIMITED_BURST`` lines of one kind at once and
  ``LIMITED_RATE`` a second after that, shared by every client (a flood from many connections is one
  flood), and the next line written says how many of its kind were left out.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import logging
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

import orjson

FIELDS = ("client", "user", "tenant", "transport")

SessionFields = Callable[[], dict[str, Any]]
"""Returns the session's current fields (the user and tenant change at connect)."""

_Bound = tuple["weakref.WeakMethod[SessionFields]", "weakref.ref[asyncio.Task[Any]] | None"]
"""The bound session's fields and the task that bound them, both held weakly: whatever is created in the
task's context (a ``call_later`` handle, even cancelled, a task spawned from it) keeps a copy of the binding
until it runs, and a session that has gone must not live on in it (nor its task in its own context)."""
_session: contextvars.ContextVar[_Bound | None] = contextvars.ContextVar("switchboard_session", default=None)


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


def bind_session(fields: SessionFields) -> contextvars.Token[Any]:
    """From now on, records logged by the current task carry ``fields()`` (a bound method of the session,
    held weakly: once the session is gone, nothing is added); ``unbind_session`` undoes it."""
    task = _current_task()
    return _session.set((weakref.WeakMethod(fields), None if task is None else weakref.ref(task)))


def unbind_session(token: contextvars.Token[Any]) -> None:
    _session.reset(token)


class SessionFilter(logging.Filter):
    """Adds the bound session's fields to records that do not carry them already. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "client"):
            bound = _session.get()
            fields = None
            if bound is not None and bound[1] is not None and bound[1]() is _current_task():
                fields = bound[0]()  # None once the session is gone
            if fields is not None:
                for name, value in fields().items():
                    if not hasattr(record, name):
                        setattr(record, name, value)
        return True


def clean(text: str) -> str:
    """``text`` with every character that is not printable written as ``repr`` writes it (``\x1b``,
    ``\r``, ``\u2028``): one line, no terminal escape, no forged line."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _clean_lines(text: str) -> str:
    """A multi-line text (a stack) with every line cleaned and its line breaks kept."""
    return "\n".join(map(clean, text.split("\n")))


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def format_exception(ei: ExcInfo) -> str:
    """A traceback as ``logging`` writes one, with each exception's message (and notes) cleaned: the
    message of an exception raised over input data may carry that data."""
    if ei[0] is None:
        return "NoneType: None"
    top = traceback.TracebackException(*ei)
    seen: set[int] = set()
    todo = [top]
    while todo:
        te = todo.pop()
        if id(te) in seen:
            continue
        seen.add(id(te))
        lines = te.format_exception_only
        te.format_exception_only = (  # type: ignore[method-assign]
            lambda lines=lines, **kw: (clean(line.rstrip("\n")) + "\n" for line in lines(**kw))
        )
        todo += [t for t in (te.__cause__, te.__context__, *(getattr(te, "exceptions", None) or ())) if t]
    return "".join(top.format()).rstrip("\n")


class SessionFormatter(logging.Formatter):
    """Text: the usual line, then ``name='value'`` for each session field present (on the line itself, a
    traceback after it); cleaned (``clean``)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = clean(super().formatMessage(record))
        extras = [f"{name}={getattr(record, name)!r}" for name in FIELDS if hasattr(record, name)]
        return f"{line} {' '.join(extras)}" if extras else line

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return format_exception(ei)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return _clean_lines(stack_info)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the session
    fields present, and ``exception`` (the formatted traceback) when the record has one."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        out: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": clean(record.getMessage()),
        }
        for name in FIELDS:
            if hasattr(record, name):
                value = getattr(record, name)
                out[name] = clean(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exception"] = _clean_lines(format_exception(record.exc_info))
        elif record.exc_text:
            out["exception"] = _clean_lines(record.exc_text)
        if record.stack_info:
            out["stack"] = _clean_lines(self.formatStack(record.stack_info))
        return orjson.dumps(out, default=str).decode()


LIMITED_RATE = 5.0
"""Lines a second of one kind ``log_limited`` lets through, once its burst is spent."""
LIMITED_BURST = 20
"""Lines of one kind ``log_limited`` lets through at once."""


class LineLimiter:
    """A token bucket per kind of line (its logger and format string: a constant of the code, so the kinds
    are few), shared by every client. Thread-safe: uvicorn may log from another thread."""

    def __init__(
        self,
        rate: float = LIMITED_RATE,
        burst: int = LIMITED_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._kinds: dict[tuple[str, str], list[float]] = {}
        """Per kind: [tokens, time of the last refill, lines left out since the last one written]."""
        self._lock = threading.Lock()

    def admit(self, kind: tuple[str, str]) -> int | None:
        """None if a line of ``kind`` is to be left out now; else how many of its kind were left out before
        it (to be said in it)."""
        now = self._clock()
        with self._lock:
            state = self._kinds.get(kind)
            if state is None:
                state = self._kinds[kind] = [float(self.burst), now, 0.0]
            tokens = min(float(self.burst), state[0] + (now - state[1]) * self.rate)
            state[1] = now
            if tokens < 1.0:
                state[0] = tokens
                state[2] += 1
                return None
            state[0] = tokens - 1.0
            dropped, state[2] = int(state[2]), 0.0
            return dropped

    def reset(self) -> None:
        with self._lock:
            self._kinds.clear()


LIMITER = LineLimiter()
"""The node's limiter of the lines clients can make it write (``log_limited``)."""


def log_limited(logger: logging.Logger, level: int, msg: str, *args: Any, **kwargs: Any) -> bool:
    """Log a line a client can make the node repeat (one per malformed frame, refused request, cut stream),
    through ``LIMITER``: ``msg``, a constant format string, names the kind. Returns whether it was written."""
    if not logger.isEnabledFor(level):
        return False
    dropped = LIMITER.admit((logger.name, msg))
    if dropped is None:
        return False
    if dropped:
        msg += " (%d more like it left out)"
        args += (dropped,)
    logger.log(level, msg, *args, stacklevel=2, **kwargs)
    return True


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
