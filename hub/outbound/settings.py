"""The settings of events out: webhook endpoints (``[[webhooks]]``) and the email channel (``[email]``).

Each is parsed whole at start-up and every mistake is a ``ConfigError`` naming the entry and the field, so a
hub never starts with an endpoint it would fail to sign for or a template it could not render. The same
shapes come from the environment as JSON (``SWITCHBOARD_WEBHOOKS``: a list of objects,
``SWITCHBOARD_EMAIL``: an object), which is where secrets usually live.

Webhook secrets are Standard Webhooks secrets: ``whsec_`` and the base64 of 24 to 64 random bytes. Several
(a list) sign every request with each of them, so a receiver can move to a new secret without missing a
request (the signature header carries one ``v1,<signature>`` per secret).

Email templates are ``string.Template`` text (``$name`` or ``${name}``, ``$$`` for a dollar sign): no
expressions, no attribute access, nothing a template could run. The names are ``TEMPLATE_NAMES`` and
``data_<key>`` for the top-level scalar fields of a notification's ``data``.
"""

from __future__ import annotations

import base64
import binascii
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from channels.options import parse_duration
from hub.codes import ConfigError
from inbox.outbox import Topic

MAX_WEBHOOKS = 64
MAX_URL_LENGTH = 2048
MAX_FILTER_ENTRIES = 256
MAX_SECRETS = 4
MAX_CONCURRENCY = 256
MAX_TIMEOUT = 300.0
MAX_TEMPLATES = 256
MAX_TEMPLATE_LENGTH = 65536
WEBHOOK_PREFIX = "webhook:"
EMAIL_DESTINATION = "email"
SECURITY = ("starttls", "tls", "none")
TEMPLATE_NAMES = frozenset(
    {"title", "body", "url", "category", "user", "tenant", "notification_id", "item_id", "count"}
)
"""What an email template may name (besides ``data_<key>``)."""
DEFAULT_TEMPLATE_NAME = "default"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SECRET_PREFIX = "whsec_"


@dataclass(frozen=True, slots=True)
class Webhook:
    """One endpoint: where, signed with what, for which events (and which tenants and namespaces)."""

    name: str
    url: str
    secrets: tuple[bytes, ...] = field(repr=False)
    """The signing keys (the base64 part of each ``whsec_`` secret, decoded)."""
    events: frozenset[Topic]
    namespaces: frozenset[str] | None = None
    """Channel namespaces (``""``: the unnamed one) whose channel events it wants (publications,
    occupied/vacated), and the namespaces of document names (the part before the first ``:``); None: all.
    Events with no channel or document (clients, notifications, inbox changes) are not filtered by it."""
    tenants: frozenset[str] | None = None
    """None: every tenant."""
    max_concurrency: int = 8
    """Requests in flight to this endpoint at most, per worker process."""
    timeout: float = 10.0
    """Seconds for a whole request: connect, send, and the response's status and (bounded) body."""

    @property
    def destination(self) -> str:
        return WEBHOOK_PREFIX + self.name


@dataclass(frozen=True, slots=True)
class EmailTemplate:
    subject: string.Template
    text: string.Template
    html: string.Template | None = None


DEFAULT_TEMPLATE = EmailTemplate(string.Template("$title"), string.Template("$body\n\n$url\n"), None)


@dataclass(frozen=True, slots=True)
class EmailSettings:
    """The SMTP server and how a notification becomes a message."""

    host: str
    sender: str
    """The From header (``Name <address>`` or an address)."""
    port: int = 587
    security: str = "starttls"
    """``starttls`` (upgrade after connecting), ``tls`` (TLS from the start, port 465), ``none`` (a local
    relay)."""
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = 10.0
    max_concurrency: int = 4
    to: string.Template = field(default_factory=lambda: string.Template("$user"))
    """The recipient's address from the user id (``$user`` when user ids are addresses, or e.g.
    ``${user}@users.example.com``)."""
    templates: Mapping[str, EmailTemplate] = field(default_factory=dict)
    """Per category; ``default`` (or the built-in one) for the others."""

    def template_for(self, category: str) -> EmailTemplate:
        return self.templates.get(category) or self.templates.get(DEFAULT_TEMPLATE_NAME) or DEFAULT_TEMPLATE


# ---------------------------------------------------------------- parsing


def _table(raw: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    return raw


def _text(
    table: Mapping[str, Any], key: str, where: str, *, default: str | None = None, limit: int = 1024
) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    if len(value) > limit or not value.isprintable():
        raise ConfigError(f"{where}: {key} is too long or has control characters")
    return value


def _int(table: Mapping[str, Any], key: str, where: str, default: int, low: int, high: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where}: {key} must be an integer from {low} to {high}")
    return value


def _duration(table: Mapping[str, Any], key: str, where: str, default: float, high: float) -> float:
    try:
        value = parse_duration(table.get(key, default))
    except ValueError:
        raise ConfigError(f"{where}: {key} must be a duration") from None
    if not 0 < value <= high:
        raise ConfigError(f"{where}: {key} must be more than 0 and at most {high:g} seconds")
    return value


def _names(table: Mapping[str, Any], key: str, where: str) -> frozenset[str] | None:
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, list) or not value or len(value) > MAX_FILTER_ENTRIES:
        raise ConfigError(f"{where}: {key} must be a non-empty list of at most {MAX_FILTER_ENTRIES} names")
    if not all(isinstance(v, str) and len(v) <= 255 and v.isprintable() for v in value):
        raise ConfigError(f"{where}: {key} must hold strings")
    return frozenset(value)


def parse_secret(raw: object, where: str) -> bytes:
    """The signing key of a Standard Webhooks secret (``whsec_`` + base64 of 24 to 64 bytes)."""
    if not isinstance(raw, str) or not raw.startswith(_SECRET_PREFIX):
        raise ConfigError(f"{where}: a secret must be a string starting with {_SECRET_PREFIX}")
    try:
        key = base64.b64decode(raw[len(_SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: a secret must be {_SECRET_PREFIX} and base64") from None
    if not 24 <= len(key) <= 64:
        raise ConfigError(f"{where}: a secret must hold 24 to 64 bytes (it holds {len(key)})")
    return key


def _url(table: Mapping[str, Any], where: str) -> str:
    url = _text(table, "url", where, limit=MAX_URL_LENGTH)
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        raise ConfigError(f"{where}: url is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or parts.fragment:
        raise ConfigError(f"{where}: url must be an http:// or https:// URL with a host and no fragment")
    return url


def _topics(table: Mapping[str, Any], where: str) -> frozenset[Topic]:
    raw = table.get("events")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: events must be a non-empty list")
    topics: set[Topic] = set()
    for name in raw:
        try:
            topics.add(Topic(name))
        except ValueError:
            choices = ", ".join(t.value for t in Topic)
            raise ConfigError(f"{where}: unknown event {str(name)[:64]!r} (one of {choices})") from None
    return frozenset(topics)


_WEBHOOK_FIELDS = {"name", "url", "secret", "events", "namespaces", "tenants", "max_concurrency", "timeout"}


def parse_webhook(raw: Any, index: int) -> Webhook:
    where = f"webhooks[{index}]"
    table = _table(raw, where, _WEBHOOK_FIELDS)
    name = _text(table, "name", where, limit=64)
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: name must be letters, digits and _.- (at most 64)")
    where = f"webhook {name}"
    secrets = table.get("secret")
    listed = secrets if isinstance(secrets, list) else [secrets]
    if not listed or len(listed) > MAX_SECRETS:
        raise ConfigError(f"{where}: secret must be a secret or a list of 1 to {MAX_SECRETS}")
    return Webhook(
        name=name,
        url=_url(table, where),
        secrets=tuple(parse_secret(s, where) for s in listed),
        events=_topics(table, where),
        namespaces=_names(table, "namespaces", where),
        tenants=_names(table, "tenants", where),
        max_concurrency=_int(table, "max_concurrency", where, 8, 1, MAX_CONCURRENCY),
        timeout=_duration(table, "timeout", where, 10.0, MAX_TIMEOUT),
    )


def parse_webhooks(raw: Any) -> list[Webhook]:
    if not isinstance(raw, list) or len(raw) > MAX_WEBHOOKS:
        raise ConfigError(f"webhooks must be a list of at most {MAX_WEBHOOKS} tables")
    hooks = [parse_webhook(entry, i) for i, entry in enumerate(raw)]
    names = [h.name for h in hooks]
    if len(set(names)) != len(names):
        raise ConfigError("webhooks: a name is used twice")
    return hooks


def parse_template(raw: str, where: str, *, one_line: bool = False) -> string.Template:
    if not isinstance(raw, str) or len(raw) > MAX_TEMPLATE_LENGTH:
        raise ConfigError(f"{where} must be a string of at most {MAX_TEMPLATE_LENGTH} characters")
    if one_line and ("\n" in raw or "\r" in raw):
        raise ConfigError(f"{where} must be one line")
    template = string.Template(raw)
    if not template.is_valid():
        raise ConfigError(f"{where} is not a valid template (a lone $? write $$ for a dollar sign)")
    unknown = [n for n in template.get_identifiers() if n not in TEMPLATE_NAMES and not n.startswith("data_")]
    if unknown:
        raise ConfigError(f"{where} names unknown field(s): {', '.join(sorted(unknown))[:200]}")
    return template


def _templates(raw: Any) -> dict[str, EmailTemplate]:
    if not isinstance(raw, dict) or len(raw) > MAX_TEMPLATES:
        raise ConfigError(f"email.templates must be a table of at most {MAX_TEMPLATES} templates")
    out: dict[str, EmailTemplate] = {}
    for category, body in raw.items():
        where = f"email.templates.{category}"
        if not isinstance(category, str) or not _NAME.fullmatch(category):
            raise ConfigError(f"{where}: a template is named after its category (letters, digits, _.-)")
        table = _table(body, where, {"subject", "text", "html"})
        if "subject" not in table or "text" not in table:
            raise ConfigError(f"{where} needs subject and text")
        out[category] = EmailTemplate(
            parse_template(table["subject"], f"{where}.subject", one_line=True),
            parse_template(table["text"], f"{where}.text"),
            parse_template(table["html"], f"{where}.html") if "html" in table else None,
        )
    return out


_EMAIL_FIELDS = {
    "host",
    "port",
    "security",
    "username",
    "password",
    "from",
    "to",
    "timeout",
    "max_concurrency",
    "templates",
}


def parse_email(raw: Any) -> EmailSettings:
    table = _table(raw, "email", _EMAIL_FIELDS)
    security = table.get("security", "starttls")
    if security not in SECURITY:
        raise ConfigError(f"email: security must be one of {', '.join(SECURITY)}")
    password = table.get("password", "")
    if not isinstance(password, str) or len(password) > 1024:
        raise ConfigError("email: password must be a string")
    return EmailSettings(
        host=_text(table, "host", "email", limit=255),
        sender=_text(table, "from", "email", limit=512),
        port=_int(table, "port", "email", 465 if security == "tls" else 587, 1, 65535),
        security=security,
        username=_text(table, "username", "email", default="", limit=512),
        password=password,
        timeout=_duration(table, "timeout", "email", 10.0, MAX_TIMEOUT),
        max_concurrency=_int(table, "max_concurrency", "email", 4, 1, MAX_CONCURRENCY),
        to=parse_template(table.get("to", "$user"), "email.to", one_line=True),
        templates=_templates(table.get("templates", {})),
    )
