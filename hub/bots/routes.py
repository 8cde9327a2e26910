"""Which bot connections serve which RPC methods, and the calls waiting for them (sans-I/O: no loop, no
clock; ``service`` does the I/O).

- ``Routes``: per tenant, method prefixes (``agent.``, ``agent.summarize``) and the local bot connections
  serving each. A method goes to the bots of the longest registered prefix it starts with. Bounds: at most
  ``per_connection`` prefixes per bot connection and ``per_node`` registrations in all (``LimitReached``).
- ``Pending``: the calls a node has handed to its bot connections, by bot and request id, at most
  ``per_bot`` per bot (``LimitReached``); ``pick`` chooses, among a prefix's bots, the one with the fewest
  calls waiting that still has room (the earliest registered on a tie), so calls spread over the bots of
  a prefix and one busy bot does not refuse a call another could take.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class LimitReached(ValueError):
    """A bound of this module (its message says which)."""


class Routes:
    __slots__ = ("per_connection", "per_node", "_tables", "_lengths", "_of_bot", "size")

    def __init__(self, per_connection: int, per_node: int) -> None:
        self.per_connection = per_connection
        self.per_node = per_node
        self._tables: dict[str, dict[str, list[str]]] = {}
        """tenant -> prefix -> bot ids, in registration order."""
        self._lengths: dict[str, list[int]] = {}
        """tenant -> the lengths of its prefixes, longest first (a lookup tries each once)."""
        self._of_bot: dict[str, tuple[str, set[str]]] = {}
        """bot id -> (tenant, its prefixes)."""
        self.size = 0
        """Registrations of every bot together."""

    def add(self, tenant: str, prefix: str, bot: str) -> bool:
        """Serve ``prefix`` by ``bot``; False when it already did."""
        owner = self._of_bot.get(bot)
        if owner is not None and owner[0] != tenant:
            raise ValueError("a bot serves one tenant")
        if owner is not None and prefix in owner[1]:
            return False
        if owner is not None and len(owner[1]) >= self.per_connection:
            raise LimitReached(f"a bot connection serves at most {self.per_connection} prefixes")
        if self.size >= self.per_node:
            raise LimitReached(f"this node serves at most {self.per_node} bot prefixes")
        table = self._tables.setdefault(tenant, {})
        bots = table.setdefault(prefix, [])
        bots.append(bot)
        if len(bots) == 1:
            self._lengths[tenant] = sorted({len(p) for p in table}, reverse=True)
        self._of_bot.setdefault(bot, (tenant, set()))[1].add(prefix)
        self.size += 1
        return True

    def remove(self, prefix: str, bot: str) -> bool:
        """Stop serving ``prefix`` by ``bot``; False when it did not."""
        owner = self._of_bot.get(bot)
        if owner is None or prefix not in owner[1]:
            return False
        tenant, prefixes = owner
        prefixes.discard(prefix)
        if not prefixes:
            del self._of_bot[bot]
        table = self._tables[tenant]
        table[prefix].remove(bot)
        self.size -= 1
        if not table[prefix]:
            del table[prefix]
            if table:
                self._lengths[tenant] = sorted({len(p) for p in table}, reverse=True)
            else:
                del self._tables[tenant], self._lengths[tenant]
        return True

    def drop(self, bot: str) -> None:
        """Forget every prefix of ``bot`` (its connection is gone)."""
        owner = self._of_bot.get(bot)
        for prefix in list(owner[1]) if owner is not None else ():
            self.remove(prefix, bot)

    def prefixes(self, bot: str) -> list[str]:
        owner = self._of_bot.get(bot)
        return sorted(owner[1]) if owner is not None else []

    def bots_for(self, tenant: str, method: str) -> list[str]:
        """The bots of the longest prefix of ``method`` registered in ``tenant`` (none: [])."""
        table = self._tables.get(tenant)
        if table is None:
            return []
        for length in self._lengths[tenant]:
            bots = table.get(method[:length]) if length <= len(method) else None
            if bots:
                return bots
        return []


class Pending(Generic[T]):
    """Calls waiting for their bot's reply: request id -> value (the service's future), per bot."""

    __slots__ = ("per_bot", "_of_bot", "_next")

    def __init__(self, per_bot: int) -> None:
        self.per_bot = per_bot
        self._of_bot: dict[str, dict[str, T]] = {}
        self._next = 0

    def count(self, bot: str) -> int:
        return len(self._of_bot.get(bot, ()))

    def pick(self, bots: Iterable[str]) -> str | None:
        """The bot with the fewest calls waiting that can take one more (None: all are full)."""
        best: str | None = None
        best_count = self.per_bot
        for bot in bots:
            n = self.count(bot)
            if n < best_count:
                best, best_count = bot, n
        return best

    def open(self, bot: str, value: T) -> str:
        """A new call for ``bot``: its request id (unique on this node)."""
        calls = self._of_bot.setdefault(bot, {})
        if len(calls) >= self.per_bot:
            if not calls:
                del self._of_bot[bot]
            raise LimitReached(f"a bot has at most {self.per_bot} calls waiting")
        self._next += 1
        request = str(self._next)
        calls[request] = value
        return request

    def close(self, bot: str, request: str) -> T | None:
        """The value of ``bot``'s call ``request``, no longer waiting (None: it was not)."""
        calls = self._of_bot.get(bot)
        if calls is None:
            return None
        value = calls.pop(request, None)
        if not calls:
            del self._of_bot[bot]
        return value

    def drop(self, bot: str) -> list[T]:
        """Every call ``bot`` still had (its connection is gone)."""
        return list(self._of_bot.pop(bot, {}).values())
