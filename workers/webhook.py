"""Webhook deliveries, signed by the Standard Webhooks convention, so a receiver checks them with any of
its verifier libraries.

A request (sans-I/O parts: ``webhook_id``, ``envelope``, ``signature``, ``request_headers``,
``attempt_result``)::

    POST <url>
    content-type: application/json
    webhook-id: msg_<origin>_<event id>      the same for every attempt and duplicate of one event
    webhook-timestamp: <unix seconds>        when this attempt was signed
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")> [v1,<...> per more keys]

    {"type": "<topic>", "timestamp": "<ISO 8601 of the event>", "tenant": "...", "data": {...}}

Verdicts: a 2xx answer is delivered; 408, 429, 5xx, a redirect (never followed), a timeout or a broken
connection (refused, reset, closed mid-response) are retried; any other 4xx is not (the receiver refused
this request: it becomes a dead letter at once). A ``Retry-After`` (seconds or an HTTP date) on a failed
answer is honoured: the task is not tried before it (``inbox.outbox.retry_delay``), and the worker holds
back the whole endpoint for a while (``WebhookSender.deliver`` reports it in ``AttemptResult``).

Bounds: one ``timeout`` for the whole request (connect, send, the answer's status and body); at most
``MAX_RESPONSE_BYTES`` of an answer's body are read (the rest is not waited for); ``max_concurrency``
connections per endpoint. No proxy or ``.netrc`` from the environment (a credential would go to every
endpoint) and no redirects.

httpx, not aiohttp: it is pinned already (the tests use it), typed for mypy strict, has per-phase timeouts
and a streamed response we can stop reading, and a pool limit per client (one client per endpoint). Its
throughput on one core is measured in ``bench/webhooks.py`` against a plain httpx loop.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import httpx
import orjson

from hub.outbound.routes import webhook_id
from hub.outbound.settings import Webhook
from inbox.outbox import AttemptResult, Task

USER_AGENT = "switchboard-webhooks/0.1"
MAX_RESPONSE_BYTES = 4096
"""Of an answer's body, read at most this much (a failure's error shows its start)."""
MAX_ERROR_BODY = 200
RETRYABLE_4XX = frozenset({408, 429})


def envelope(task: Task) -> bytes:
    """The request body: the event as Standard Webhooks suggests (type, timestamp, data) and its tenant."""
    stamp = datetime.fromtimestamp(task.created_at, UTC).isoformat(timespec="milliseconds")
    return orjson.dumps(
        {
            "type": str(task.topic),
            "timestamp": stamp.replace("+00:00", "Z"),
            "tenant": task.tenant,
            "data": task.payload,
        }
    )


def signature(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` over ``<id>.<timestamp>.<body>`` per key, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode() for key in keys
    )


def request_headers(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(keys, msg_id, timestamp, body),
    }


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(min(int(text), 10**9))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = when.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


def attempt_result(status: int, headers: Mapping[str, str], body: bytes, now: float) -> AttemptResult:
    """What an answer means for the delivery (module docstring)."""
    if 200 <= status < 300:
        return AttemptResult(ok=True, status=status)
    shown = body[:MAX_ERROR_BODY].decode("utf-8", "replace")
    error = f"HTTP {status}" + (f": {shown}" if shown.strip() else "")
    retryable = not (400 <= status < 500) or status in RETRYABLE_4XX
    return AttemptResult(
        ok=False,
        error=error,
        retryable=retryable,
        retry_after=parse_retry_after(headers.get("retry-after"), now) if retryable else None,
        status=status,
    )


def transport_failure(exc: BaseException) -> AttemptResult:
    """A request that got no complete answer: retried."""
    what = "timeout" if isinstance(exc, TimeoutError | httpx.TimeoutException) else type(exc).__name__
    detail = str(exc)
    return AttemptResult(ok=False, error=f"{what}: {detail}" if detail else what, retryable=True)


class WebhookSender:
    """Delivers tasks to one endpoint. ``origin`` is the store's (``InboxStore.origin``)."""

    def __init__(
        self,
        hook: Webhook,
        origin: str,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.hook = hook
        self.origin = origin
        self.clock = clock
        self.destination = hook.destination
        self.concurrency = hook.max_concurrency
        self.timeout = hook.timeout
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(hook.timeout, connect=min(hook.timeout, 5.0)),
            limits=httpx.Limits(
                max_connections=hook.max_concurrency, max_keepalive_connections=hook.max_concurrency
            ),
            follow_redirects=False,
            trust_env=False,
            transport=transport,
        )

    async def deliver(self, task: Task) -> AttemptResult:
        body = envelope(task)
        now = self.clock()
        headers = request_headers(self.hook.secrets, webhook_id(self.origin, task.event_id), int(now), body)
        try:
            async with asyncio.timeout(self.hook.timeout):
                async with self._client.stream(
                    "POST", self.hook.url, content=body, headers=headers
                ) as answer:
                    read = bytearray()
                    async for chunk in answer.aiter_raw():
                        read += chunk
                        if len(read) >= MAX_RESPONSE_BYTES:
                            break
                    return attempt_result(answer.status_code, answer.headers, bytes(read), self.clock())
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            return transport_failure(exc)

    async def close(self) -> None:
        await self._client.aclose()
