"""What the console keeps: its audit log and the revoked sessions. The interface and the entry type.

Implementations: ``store_sqlite.SqliteConsoleStore`` (one node: the audit log in SQLite under
``data_dir``, revocations in memory) and ``store_redis.RedisConsoleStore`` (nodes sharing a Redis: both in
Redis, so every node shows the same log and honours every logout). The composition root picks one.

Policies: the audit log keeps the newest ``admin_audit_max_entries`` entries (older ones are dropped as
new ones arrive); an entry's fields are cut to ``MAX_FIELD`` characters, so no caller can make one large.
A revocation is kept until the session it revokes would have expired anyway, and at most
``MAX_REVOKED`` are held in memory (sign-ins are throttled; past it the earliest to expire go first).

Error tree::

    ConnectionError (builtin)
     +-- StoreUnavailable    the store cannot be read or written now
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

MAX_FIELD = 512
"""Characters kept of one field of an audit entry (the target's JSON included)."""
MAX_REVOKED = 100_000


class StoreUnavailable(ConnectionError):
    """The console's store cannot be reached or written now."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One console action: who (the password's role and the remote address), when, what, the result."""

    at: float
    role: str
    remote: str
    action: str
    tenant: str
    target: str
    """The action's arguments as compact JSON (cut to MAX_FIELD)."""
    result: str
    """``ok``, ``refused: <why>`` or ``error: <why>``."""
    id: int = 0

    @classmethod
    def make(
        cls, at: float, role: str, remote: str, action: str, tenant: str, target: Any, result: str
    ) -> AuditEntry:
        text = orjson.dumps(target, default=str).decode() if not isinstance(target, str) else target
        return cls(at, _cut(role), _cut(remote), _cut(action), _cut(tenant), _cut(text), _cut(result))

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "role": self.role,
            "remote": self.remote,
            "action": self.action,
            "tenant": self.tenant,
            "target": self.target,
            "result": self.result,
        }

    def pack(self) -> bytes:
        """The entry as a JSON object without its id (the store assigns it)."""
        body = self.as_json()
        del body["id"]
        return orjson.dumps(body)

    @classmethod
    def unpack(cls, raw: bytes) -> AuditEntry:
        d = orjson.loads(raw)
        return cls(
            float(d["at"]),
            d["role"],
            d["remote"],
            d["action"],
            d["tenant"],
            d["target"],
            d["result"],
            int(d["id"]),
        )


def _cut(text: str) -> str:
    return text if len(text) <= MAX_FIELD else text[: MAX_FIELD - 1] + "…"


class ConsoleStore(Protocol):
    async def append(self, entry: AuditEntry) -> None:
        """Keep ``entry`` (its ``id`` is assigned here); the oldest past the cap are dropped."""

    async def entries(self, limit: int, before: int = 0) -> list[AuditEntry]:
        """The newest ``limit`` entries (older than id ``before`` when given), newest first."""

    async def revoke(self, sid: str, until: float) -> None:
        """Refuse session ``sid`` from now until ``until`` (unix seconds)."""

    async def revoked(self, sid: str) -> bool: ...

    async def close(self) -> None: ...
