"""Email as a delivery channel: a ``notification.created`` task becomes one message over SMTP.

Rendering is sans-I/O (``render``): the category's template (``[email.templates.<category>]``, else
``default``, else a built-in one) is a ``string.Template`` filled with the notification's fields (title,
body, url, category, user, tenant, notification_id, item_id, count) and ``data_<key>`` for the top-level
scalar fields of its ``data``; a name with no value stays as written. Values are HTML-escaped in the html
part; line breaks in values become spaces in the subject and the address. The recipient's address is the
``to`` template (``$user`` by default); one that is not a single valid address is refused. The
``Message-ID`` is derived from the webhook-id, the same for every attempt of one event, so a duplicate
after a crash can be recognised.

Verdicts: delivered once the server accepted the message for the recipient; an SMTP 4xx answer, a
timeout or a broken connection is retried; a 5xx answer (a refused recipient, sender or message, failed
authentication) or a message that cannot be built is not (a dead letter; replay it once fixed).

aiosmtplib speaks SMTP on asyncio (STARTTLS, implicit TLS, AUTH, timeouts); the standard library's
smtplib would block the loop or need a thread per message.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Mapping
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import aiosmtplib

from hub.outbound.routes import webhook_id
from hub.outbound.settings import EmailSettings
from inbox.outbox import AttemptResult, Task

SMTP_STEPS = 3
MAX_DATA_FIELDS = 64
"""Of a notification's ``data``, at most this many top-level fields become ``data_<key>`` values."""


class Undeliverable(ValueError):
    """The task cannot become a message (no user, a bad address, a header that would not encode)."""


def template_values(task: Task) -> dict[str, str]:
    """The names a template may use, from a ``notification.created`` payload."""
    p = task.payload
    values = {
        name: "" if p.get(name) is None else str(p.get(name))
        for name in ("title", "body", "url", "category", "user", "notification_id", "item_id")
    }
    values["tenant"] = task.tenant
    data = p.get("data")
    values["count"] = str(p.get("count", 1))
    if isinstance(data, Mapping):
        for key, value in list(data.items())[:MAX_DATA_FIELDS]:
            if isinstance(value, str | int | float | bool) and str(key).isidentifier():
                values[f"data_{key}"] = str(value)
    return values


def _one_line(values: Mapping[str, str]) -> dict[str, str]:
    return {k: " ".join(v.splitlines()) for k, v in values.items()}


def render(settings: EmailSettings, task: Task, origin: str = "") -> EmailMessage:
    """The message of ``task``; ``Undeliverable`` if there can be none."""
    values = template_values(task)
    if not values["user"]:
        raise Undeliverable("the event names no user")
    flat = _one_line(values)
    to = settings.to.safe_substitute(flat).strip()
    try:
        address = Address(addr_spec=to)
    except (ValueError, IndexError, MessageError) as exc:
        raise Undeliverable(f"no valid address for user {values['user'][:64]!r}: {exc}") from None
    if not address.username or not address.domain:
        raise Undeliverable(f"no valid address for user {values['user'][:64]!r}")
    template = settings.template_for(values["category"])
    message = EmailMessage(policy=SMTP)
    try:
        message["From"] = settings.sender
        message["To"] = address
        message["Subject"] = template.subject.safe_substitute(flat)
        message["Message-ID"] = f"<{webhook_id(origin, task.event_id)}.{task.id}@switchboard>"
        message.set_content(template.text.safe_substitute(values))
        if template.html is not None:
            escaped = {k: html.escape(v) for k, v in values.items()}
            message.add_alternative(template.html.safe_substitute(escaped), subtype="html")
    except (ValueError, TypeError, MessageError) as exc:
        raise Undeliverable(f"the message cannot be built: {exc}") from None
    return message


def smtp_failure(exc: BaseException) -> AttemptResult:
    """An SMTP exchange that failed: by its answer's code (4xx retried, 5xx not), else retried."""
    code = getattr(exc, "code", None)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        code = max(r.code for r in exc.recipients)
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(code, int) and 500 <= code < 600:
        return AttemptResult(ok=False, error=text, retryable=False, status=code)
    return AttemptResult(ok=False, error=text, retryable=True, status=code if isinstance(code, int) else None)


class EmailSender:
    """Delivers ``notification.created`` tasks of the ``email`` destination over SMTP."""

    destination = "email"

    def __init__(self, settings: EmailSettings, origin: str = "") -> None:
        self.settings = settings
        self.origin = origin
        self.concurrency = settings.max_concurrency
        self.timeout = settings.timeout * SMTP_STEPS
        """``settings.timeout`` bounds each step of the exchange; a whole message, this."""

    def _connection(self) -> dict[str, Any]:
        s = self.settings
        return {
            "hostname": s.host,
            "port": s.port,
            "username": s.username or None,
            "password": s.password or None,
            "use_tls": s.security == "tls",
            "start_tls": True if s.security == "starttls" else False if s.security == "none" else None,
            "timeout": s.timeout,
        }

    async def deliver(self, task: Task) -> AttemptResult:
        try:
            message = render(self.settings, task, self.origin)
        except Undeliverable as exc:
            return AttemptResult(ok=False, error=str(exc), retryable=False)
        try:
            async with asyncio.timeout(self.timeout):
                await aiosmtplib.send(message, **self._connection())
        except aiosmtplib.SMTPException as exc:
            return smtp_failure(exc)
        except (OSError, TimeoutError) as exc:
            return AttemptResult(ok=False, error=f"{type(exc).__name__}: {exc}", retryable=True)
        return AttemptResult(ok=True, status=250)

    async def close(self) -> None:
        """Nothing held between messages (one connection per message)."""
