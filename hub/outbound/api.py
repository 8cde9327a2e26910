"""Server API methods of events out: the deliveries (``webhook_tasks``), their attempts
(``webhook_attempts``), and the replay of dead letters (``webhook_replay``). Each acts on the caller's
tenant only (the key's, or the ``tenant`` an unbound key names, as every method of the API).

- ``webhook_tasks`` ``{state?: pending|done|dead, destination?, after_id?, limit? (1-100, 20), payload?}``
  -> ``{tasks: [{id, event_id, webhook_id, destination, topic, state, attempts, next_attempt_at,
  last_error, created_at, updated_at, payload?}], next_after_id}`` in id order (``next_after_id``: pass it
  back for the next page; null on the last); with ``before_id`` the tasks below that id, newest first, and
  ``next_before_id`` instead (the most recent deliveries: ``before_id`` 9223372036854775807);
- ``webhook_attempts`` ``{task_id}`` -> ``{attempts: [{attempt, worker, verdict, status, error, at}]}``;
- ``webhook_replay`` ``{ids: [...] (at most 1000) | destination | all: true}`` -> ``{replayed: n}``: those
  dead letters are pending again with a fresh attempt budget (the same webhook-id).

Errors: 107 for a bad or unknown field (the message names it), 102 for a task of another tenant or none,
108 when the hub has no outbox (no webhooks or email configured), 100 when the store fails (logged).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from hub import codes
from hub.codes import ClientError
from hub.outbound.routes import webhook_id
from hub.outbound.service import Outbound
from inbox.errors import InvalidInput, StoreError
from inbox.inbox import InboxStore
from inbox.outbox import Attempt, TaskInfo, TaskState

log = logging.getLogger("switchboard.api")

MAX_PAGE = 100
DEFAULT_PAGE = 20
MAX_REPLAY_IDS = 1000

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


def bad(message: str) -> ClientError:
    return ClientError(107, f"bad request: {message}"[:200])


def _fields(p: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(p) - allowed - {"tenant"}
    if unknown:
        raise bad(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}")


def _count(p: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = p.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad(f"{name} must be an integer from {low} to {high}")
    return value


def _name(p: Mapping[str, Any], name: str) -> str | None:
    value = p.get(name)
    if value is not None and (not isinstance(value, str) or not value or len(value) > 128):
        raise bad(f"{name} must be a non-empty string")
    return value


def task_dict(task: TaskInfo, origin: str, payload: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": task.id,
        "event_id": task.event_id,
        "webhook_id": webhook_id(origin, task.event_id),
        "destination": task.destination,
        "topic": str(task.topic),
        "state": str(task.state),
        "attempts": task.attempts,
        "next_attempt_at": task.next_attempt_at,
        "last_error": task.last_error,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
    }
    if payload:
        out["payload"] = dict(task.payload)
    return out


def attempt_dict(a: Attempt) -> dict[str, Any]:
    return {
        "attempt": a.attempt,
        "worker": a.worker,
        "verdict": str(a.verdict),
        "status": a.status,
        "error": a.error,
        "at": a.at,
    }


class WebhookAPI:
    def __init__(self, outbound: Outbound) -> None:
        self.outbound = outbound

    def handlers(self) -> dict[str, Handler]:
        return {
            "webhook_tasks": self.tasks,
            "webhook_attempts": self.attempts,
            "webhook_replay": self.replay,
        }

    def _store(self) -> InboxStore:
        store = self.outbound.store
        if store is None:
            raise codes.error_not_available()
        return store

    async def _guard(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except InvalidInput as exc:
            raise bad(str(exc)) from None
        except StoreError as exc:
            log.warning("server API: the outbox failed: %s", exc)
            raise codes.error_internal() from None

    async def _task(self, store: InboxStore, tenant: str, task_id: int) -> TaskInfo:
        found = await self._guard(store.tasks(tenant=tenant, after_id=task_id - 1, limit=1))
        if not found or found[0].id != task_id:
            raise codes.error_unknown_channel()  # 102: no such task in this tenant
        task: TaskInfo = found[0]
        return task

    async def tasks(self, tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        _fields(p, {"state", "destination", "after_id", "before_id", "limit", "payload"})
        raw_state = p.get("state")
        try:
            state = TaskState(raw_state) if raw_state is not None else None
        except ValueError:
            raise bad("state must be pending, done or dead") from None
        after = _count(p, "after_id", 0, 0, 2**63 - 1)
        before = _count(p, "before_id", 1, 1, 2**63 - 1) if "before_id" in p else None
        limit = _count(p, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        with_payload = p.get("payload", False)
        if not isinstance(with_payload, bool):
            raise bad("payload must be true or false")
        store = self._store()
        found: list[TaskInfo] = await self._guard(
            store.tasks(
                state=state,
                destination=_name(p, "destination"),
                tenant=tenant,
                after_id=after,
                limit=limit,
                before_id=before,
            )
        )
        more = found[-1].id if len(found) == limit else None
        return {
            "tasks": [task_dict(t, store.origin, with_payload) for t in found],
            "next_after_id" if before is None else "next_before_id": more,
        }

    async def attempts(self, tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        _fields(p, {"task_id"})
        if "task_id" not in p:
            raise bad("task_id is required")
        task_id = _count(p, "task_id", 0, 1, 2**63 - 1)
        store = self._store()
        await self._task(store, tenant, task_id)
        found: list[Attempt] = await self._guard(store.attempts(task_id))
        return {"attempts": [attempt_dict(a) for a in found]}

    async def replay(self, tenant: str, p: dict[str, Any]) -> dict[str, Any]:
        _fields(p, {"ids", "destination", "all"})
        ids = p.get("ids")
        everything = p.get("all", False)
        destination = _name(p, "destination")
        if not isinstance(everything, bool):
            raise bad("all must be true or false")
        if ids is not None:
            if not isinstance(ids, list) or not ids or len(ids) > MAX_REPLAY_IDS:
                raise bad(f"ids must be a list of 1 to {MAX_REPLAY_IDS} task ids")
            if not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**63 for i in ids):
                raise bad("ids must be positive integers")
        if ids is None and destination is None and not everything:
            raise bad("name the dead letters to replay: ids, destination, or all: true")
        store = self._store()
        n: int = await self._guard(store.replay(ids, destination=destination, tenant=tenant))
        if n:
            log.info("server API: %d dead letters replayed", n, extra={"tenant": tenant})
        return {"replayed": n}
