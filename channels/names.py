"""Channel-name grammar (sans-I/O).

A channel name is ``[namespace:]rest[#user1,user2]``:

- the namespace is everything before the first ``:``; a name without ``:`` is in the unnamed namespace;
- ``#`` starts the user-limited part: only the users listed after it (comma separated) may subscribe;
- ``$`` at the start marks a private channel: subscribing to it takes a subscription token.

The channel's identity is ``(tenant, name)``: the same name in two tenants is two channels.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from channels.errors import InvalidChannel, InvalidFeedConfig

ChannelKey: TypeAlias = tuple[str, str]
"""(tenant, channel name): the identity of a channel everywhere below the client session."""

NAMESPACE_BOUNDARY = ":"
USER_BOUNDARY = "#"
USER_SEPARATOR = ","
PRIVATE_PREFIX = "$"
MAX_LENGTH = 255


@dataclass(frozen=True, slots=True)
class ChannelName:
    raw: str
    namespace: str
    allowed_users: tuple[str, ...] | None
    """The users of a user-limited channel (``name#u1,u2``); None for an ordinary channel."""
    private: bool

    def user_allowed(self, user: str) -> bool:
        return self.allowed_users is None or user in self.allowed_users


def substitution_refused(value: str, *, starts_name: bool, before_namespace: bool) -> str | None:
    """Why ``value``, put into a channel name by a template (from a tag, a topic level, a channel part),
    cannot be: it would change what the template's literal text decides (None when it can be). It may not
    hold ``#`` (a user-limited channel) or whitespace; where it starts the name it may not start with ``$``
    (a private channel); before the template's first literal ``:`` it may not hold ``:`` (the namespace)."""
    # Every whitespace character but " " is not printable: two scans at C speed (the ingest hot path).
    if USER_BOUNDARY in value or " " in value or not value.isprintable():
        return "holds '#' or whitespace, which a channel name cannot take from it"
    if before_namespace and NAMESPACE_BOUNDARY in value:
        return "holds ':', which would choose the channel's namespace"
    if starts_name and value.startswith(PRIVATE_PREFIX):
        return "starts with '$', which would make the channel private"
    return None


TemplateParts: TypeAlias = tuple[str | tuple[str], ...]
"""A name template: literal text, or a 1-tuple holding a placeholder's name."""


def parse_template(text: str, placeholder: re.Pattern[str], usage: str) -> tuple[TemplateParts, int]:
    """The parts of a name template, and the index of the first part holding a literal ``:`` (placeholders
    before it may not hold one). ``placeholder`` matches ``{{``, ``}}``, a placeholder (its name in group
    1) or a stray brace; ``usage`` names the placeholders for the error. InvalidFeedConfig for a bad one."""
    parts: list[str | tuple[str]] = []
    literal, pos = "", 0
    for match in placeholder.finditer(text):
        literal += text[pos : match.start()]
        pos = match.end()
        token = match.group()
        if token in ("{{", "}}"):
            literal += token[0]
            continue
        if match.group(1) is None:
            raise InvalidFeedConfig(
                f"template {text!r}: unmatched {token!r} at {match.start() + 1} "
                f"({usage}; {{{{ and }}}} for braces)"
            )
        if literal:
            parts.append(literal)
            literal = ""
        parts.append((match.group(1),))
    literal += text[pos:]
    if literal:
        parts.append(literal)
    fixed = next(
        (j for j, p in enumerate(parts) if isinstance(p, str) and NAMESPACE_BOUNDARY in p), len(parts)
    )
    return tuple(parts), fixed


def render_template(
    parts: TemplateParts,
    namespace_fixed_at: int,
    value_of: Callable[[str], tuple[str, str]],
    *,
    channel: bool,
) -> str:
    """The name with each placeholder's value (``value_of(name)``: the value and how to call it in an
    error) put in; for a channel, ValueError when a value would change what the literal text decides
    (``substitution_refused``)."""
    out: list[str] = []
    for j, part in enumerate(parts):
        if isinstance(part, str):
            out.append(part)
            continue
        value, what = value_of(part[0])
        if channel:
            refused = substitution_refused(value, starts_name=j == 0, before_namespace=j < namespace_fixed_at)
            if refused is not None:
                raise ValueError(f"{what} {refused}")
        out.append(value)
    return "".join(out)


def parse_channel(name: str, max_length: int = MAX_LENGTH) -> ChannelName:
    """Parse a channel name; raise InvalidChannel when it breaks the grammar."""
    if not isinstance(name, str) or not name:
        raise InvalidChannel("empty channel name")
    if len(name) > max_length:
        raise InvalidChannel(f"channel name longer than {max_length}")
    # isprintable() is False for every whitespace character but the ASCII space (Unicode separators and
    # controls are not printable): one more scan for " " covers the rest, at C speed.
    if not name.isprintable() or " " in name:
        raise InvalidChannel("channel name has whitespace or control characters")
    bare = name[1:] if name.startswith(PRIVATE_PREFIX) else name
    namespace, sep, _ = bare.partition(NAMESPACE_BOUNDARY)
    if not sep:
        namespace = ""
    elif not namespace:
        raise InvalidChannel("empty namespace before ':'")
    allowed: tuple[str, ...] | None = None
    if USER_BOUNDARY in bare:
        users = bare.rpartition(USER_BOUNDARY)[2]
        allowed = tuple(u for u in users.split(USER_SEPARATOR) if u)
    return ChannelName(name, namespace, allowed, name.startswith(PRIVATE_PREFIX))
