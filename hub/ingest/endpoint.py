"""The ingest endpoints: batches of readings from collectors, over HTTP.

::

    POST /ingest/influx?precision=ns|us|ms|s   Influx line protocol (Telegraf's outputs.http, data_format
    POST /api/v2/write?precision=...           "influx"; the second path is InfluxDB 2's, where Telegraf's
                                               outputs.influxdb_v2 writes; its org and bucket are ignored)
    POST /ingest/jsonl                         JSON lines (channels.ingest)

Admission is the server API's (``ServerAPI.admit``): the same keys, in ``X-API-Key``, ``Authorization:
apikey <key>`` or InfluxDB's ``Authorization: Token <key>``. A key bound to a tenant writes into that
tenant only (naming another in ``?tenant=``: 403); an unbound key writes into ``?tenant=`` (default "").
Ingest is publishing by a server: the namespace must exist, no client permission applies (as the server
API's ``publish``), and every reading passes ``Node.publish_to`` (its namespace's ``data_schema``) with
its key (JSON lines' ``key``, a line protocol route's ``key``), keyed as a client publish is
(``channels.feeds.publication_key``), so conflation and the latest value per key hold for ingested feeds.

Policies:

- Bounds: the body as sent (``ingest_max_body_size``, 413), inflated (``ingest_max_decompressed_size``,
  413, checked while inflating: ``hub.ingest.body``), lines per request (``ingest_max_lines``: the rest is
  refused), the channels.ingest bounds per line, and ``ingest_max_concurrent`` requests per node being
  worked on (past it: 429 with Retry-After). Nothing a request holds outlives it.
- The event loop is never held long: the body is inflated a step at a time and parsed a chunk at a time
  (``CHUNK`` bytes, cut at a line end); each chunk's readings are published before the next is parsed, and
  the loop serves others in between. Memory holds one chunk's readings, not the batch's.
- Publishes are pipelined: a chunk's readings are grouped by channel, up to ``PIPELINE`` channels publish
  at once, and the readings of one channel go one after the other, in line order (a feed's order is its
  meaning: the newest value must win).
- Answers, shaped for Telegraf (whose influxdb_v2 output drops a batch answered 400 and retries one
  answered 429 or 5xx; its http output retries everything that is not 2xx unless told otherwise, see the
  README): 204 when every line was taken; 400 when some (or all) were refused, with the good ones
  published and a JSON body ``{"code": "invalid", "message", "line", "accepted", "refused", "errors":
  [{"line", "reason"}, ...]}`` (``code``, ``message`` and ``line`` as InfluxDB words a partial write, so
  Telegraf logs the first refusal); 503 (Retry-After) when the broker cannot take publications (what was
  accepted before stays: ``accepted`` says how much); 400/413/415 for a body that cannot be read, with
  ``{"code", "message"}``.
- One log line per request with refusals, rate-limited (``log_limited``): the count and the first reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from channels.errors import InvalidChannel, UnknownNamespace
from channels.ingest import (
    CUT_OFF,
    DEFAULT_MAX_ERRORS,
    IngestLimits,
    LineError,
    Parsed,
    Reading,
    parse_json_lines,
)
from channels.lineprotocol import Point, map_point, parse_line_protocol, parse_precision
from channels.names import ChannelName, parse_channel
from channels.options import NamespaceOptions
from hub import codec_json
from hub.api import ServerAPI, read_body
from hub.codes import ClientError
from hub.ingest.body import BodyRefused, encoding_of, inflate
from hub.logs import log_limited
from hub.node import Node
from hub.wire import BadData, binary_data

log = logging.getLogger("switchboard.ingest")

CHUNK = 16 * 1024
"""Bytes of a batch parsed (and published) in one step: some 100-200 lines, a few milliseconds."""
CHANNELS = 10_000
"""Channel names whose parse and namespace a node keeps (``Ingest._channel``); then it starts over."""
PIPELINE = 64
"""Channels whose readings are being published at once, per request."""
KEY_SCHEMES = ("apikey", "token")
"""``Authorization`` schemes that carry the key (``token``: what InfluxDB clients and Telegraf send)."""

INFLUX, JSONL = "influx", "jsonl"


@dataclass(slots=True)
class Outcome:
    """What became of a request's lines so far."""

    accepted: int = 0
    refused: int = 0
    errors: list[LineError] = field(default_factory=list)
    max_errors: int = DEFAULT_MAX_ERRORS

    def refuse(self, line: int, reason: str) -> None:
        self.refused += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(LineError(line, reason))

    def take(self, parsed: Parsed[Any]) -> None:
        """A chunk's parse refusals: every one counted, listed while there is room (the note that the
        rest of the batch was cut off is listed always, as ``Parsed`` does)."""
        self.refused += parsed.refused
        room = max(0, self.max_errors - len(self.errors))
        self.errors += parsed.errors[:room] + [e for e in parsed.errors[room:] if e.reason.endswith(_REST)]

    def listed(self) -> list[LineError]:
        """The listed refusals in line order (chunks are parsed, mapped and published one after the other)."""
        return sorted(self.errors, key=lambda e: e.line)


class Unavailable(Exception):
    """The broker cannot take publications now (the request ends with 503)."""


def chunks(body: bytes, size: int) -> list[tuple[int, int, int]]:
    """``body`` as (first line number, start, end) pieces of about ``size`` bytes, cut after a line end."""
    out: list[tuple[int, int, int]] = []
    start, line, end = 0, 1, len(body)
    while start < end:
        stop = body.find(b"\n", min(start + size, end) - 1)
        stop = end if stop < 0 else stop + 1
        out.append((line, start, stop))
        line += body.count(b"\n", start, stop)
        start = stop
    return out


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class Ingest:
    """The ingest endpoints of one node."""

    def __init__(self, node: Node, api: ServerAPI) -> None:
        self.node = node
        self.api = api
        cfg = node.config
        self.settings = cfg.ingest
        self.limits = IngestLimits(max_lines=cfg.ingest_max_lines)
        self.busy = 0
        """Requests being worked on now (``ingest_max_concurrent`` at most)."""
        self._channels: dict[str, tuple[ChannelName, NamespaceOptions] | str] = {}

    # ------------------------------------------------------------ endpoints

    async def influx(self, request: Request) -> Response:
        """``POST /ingest/influx`` and ``POST /api/v2/write``: Influx line protocol."""
        return await self._serve(request, INFLUX)

    async def jsonl(self, request: Request) -> Response:
        """``POST /ingest/jsonl``: JSON lines."""
        return await self._serve(request, JSONL)

    async def _serve(self, request: Request, fmt: str) -> Response:
        response = await self._answer(request, fmt)
        self.node.feed_metrics.ingest_requests[(fmt, response.status_code)] += 1
        return response

    async def _answer(self, request: Request, fmt: str) -> Response:
        principal, refused = await self.api.admit(request, KEY_SCHEMES, what="ingest")
        if refused is not None or principal is None:
            return refused or Response(status_code=500)
        named = request.query_params.get("tenant")
        if principal.tenant is not None and named is not None and named != principal.tenant:
            return self._refuse(403, "this key writes into its own tenant only")
        tenant = principal.tenant if principal.tenant is not None else named or ""
        try:
            precision = parse_precision(request.query_params.get("precision", "ns"))
            encoding = encoding_of(request.headers.get("content-encoding", ""))
        except ValueError as exc:
            return self._refuse(400, str(exc))
        except BodyRefused as exc:
            return self._refuse(exc.status, exc.message)
        if fmt == INFLUX and not self.settings.line_protocol:
            return self._refuse(404, "line protocol ingest is off: configure [[ingest.line_protocol]]")
        if self.busy >= self.node.config.ingest_max_concurrent:
            log_limited(log, logging.WARNING, "ingest request refused: %d requests in progress", self.busy)
            return Response(status_code=429, headers={"Retry-After": "1"})
        self.busy += 1
        try:
            body = await self._body(request, encoding)
            outcome = Outcome(max_errors=self.limits.max_errors)
            try:
                await self._ingest(body, fmt, precision, tenant, outcome)
            except Unavailable:
                message = f"the broker cannot take publications now; {outcome.accepted} lines were accepted"
                answer = _json({"code": "unavailable", "message": message, "accepted": outcome.accepted}, 503)
                answer.headers["Retry-After"] = "1"
                return answer
        except BodyRefused as exc:
            return self._refuse(exc.status, exc.message)
        finally:
            self.busy -= 1
        return self._result(outcome, fmt, tenant, request)

    def _refuse(self, status: int, message: str) -> Response:
        log_limited(log, logging.INFO, "ingest request refused (%d): %s", status, message)
        return _json({"code": "invalid" if status < 500 else "unavailable", "message": message}, status)

    async def _body(self, request: Request, encoding: str) -> bytes:
        limit = self.node.config.ingest_max_body_size
        try:
            body = await read_body(request, limit)
        except ClientDisconnect:
            raise BodyRefused(400, "the client left before its body ended") from None
        if body is None:
            raise BodyRefused(413, f"the body is larger than {limit} bytes")
        if encoding == "gzip":
            body = await inflate(body, self.node.config.ingest_max_decompressed_size)
        elif len(body) > self.node.config.ingest_max_decompressed_size:
            limit = self.node.config.ingest_max_decompressed_size
            raise BodyRefused(413, f"the body is larger than {limit} bytes")
        return body

    def _result(self, outcome: Outcome, fmt: str, tenant: str, request: Request) -> Response:
        metrics = self.node.feed_metrics
        metrics.ingest_points[(fmt, "accepted")] += outcome.accepted
        metrics.ingest_points[(fmt, "refused")] += outcome.refused
        if not outcome.refused:
            return Response(status_code=204)
        listed = outcome.listed()
        first = listed[0] if listed else LineError(0, "")
        log_limited(
            log,
            logging.INFO,
            "ingest from %s: %d of %d lines refused, the first: line %d: %s",
            request.client.host if request.client else "",
            outcome.refused,
            outcome.refused + outcome.accepted,
            first.line,
            first.reason,
            extra={"tenant": tenant},
        )
        message = f"partial write: {outcome.refused} of {outcome.refused + outcome.accepted} lines refused"
        body = {
            "code": "invalid",
            "message": f"{message}; line {first.line}: {first.reason}",
            "line": first.line,
            "accepted": outcome.accepted,
            "refused": outcome.refused,
            "errors": [{"line": e.line, "reason": e.reason} for e in listed],
        }
        return _json(body, 400)

    # ------------------------------------------------------------ a batch, a chunk at a time

    async def _ingest(self, body: bytes, fmt: str, precision: int, tenant: str, outcome: Outcome) -> None:
        limits = self.limits
        received_ms = int(time.time() * 1000)
        for first, start, stop in chunks(body, CHUNK):
            if first > limits.max_lines:  # the chunk before ended at the last line taken
                outcome.refused += _lines(body, start)
                outcome.errors.append(LineError(first, CUT_OFF.format(limits.max_lines)))
                return
            piece = body[start:stop]
            if fmt == JSONL:
                parsed = parse_json_lines(piece, limits, first)
                outcome.take(parsed)
                readings = parsed.items
            else:
                readings = self._map(
                    parse_line_protocol(piece, precision, limits, first), received_ms, outcome
                )
            await self._publish(readings, fmt, tenant, outcome)
            if first + _lines(piece, 0) - 1 > limits.max_lines:  # split_lines refused this chunk's rest
                outcome.refused += _lines(body, stop)
                return
            await asyncio.sleep(0)  # the loop serves others between two chunks

    def _map(self, points: Parsed[Point], received_ms: int, outcome: Outcome) -> list[Reading]:
        """The readings a chunk's points become under their routes; refusals go to ``outcome``."""
        outcome.take(points)
        readings: list[Reading] = []
        for point in points.items:
            mapping = self.settings.route(point.measurement)
            if mapping is None:
                outcome.refuse(
                    point.line, f"no [[ingest.line_protocol]] route takes {point.measurement[:80]!r}"
                )
                continue
            reading = map_point(point, mapping, received_ms, self.limits)
            if isinstance(reading, str):
                outcome.refuse(point.line, reading)
            else:
                readings.append(reading)
        return readings

    async def _publish(self, readings: list[Reading], fmt: str, tenant: str, outcome: Outcome) -> None:
        """Publish one chunk's readings: channels in parallel (``PIPELINE``), each channel's in line order."""
        groups: dict[str, list[Reading]] = {}
        for reading in readings:
            groups.setdefault(reading.channel, []).append(reading)
        unavailable = False

        async def channel(batch: list[Reading]) -> None:
            nonlocal unavailable
            for reading in batch:
                if unavailable:
                    return
                reason = await self._publish_one(reading, fmt, tenant)
                if reason is None:
                    outcome.accepted += 1
                elif reason is _UNAVAILABLE:
                    unavailable = True
                else:
                    outcome.refuse(reading.line, reason)

        await _each(channel, list(groups.values()), PIPELINE)
        if unavailable:
            raise Unavailable

    def _channel(self, channel: str) -> tuple[ChannelName, NamespaceOptions] | str:
        """A reading's channel and its namespace's options, or why it has none; a batch names the same
        channels over and over, so the answers are kept (``CHANNELS`` of them, per node)."""
        known = self._channels.get(channel)
        if known is not None:
            return known
        found: tuple[ChannelName, NamespaceOptions] | str
        try:
            name = parse_channel(channel)
            found = (name, self.node.namespaces.options_for(name))
        except InvalidChannel as exc:
            found = f"channel {channel[:80]!r}: {exc}"
        except UnknownNamespace as exc:
            found = f"channel {channel[:80]!r}: unknown namespace {str(exc)[:80]!r}"
        if len(self._channels) >= CHANNELS:
            self._channels.clear()
        self._channels[channel] = found
        return found

    async def _publish_one(self, reading: Reading, fmt: str, tenant: str) -> str | None:
        """Publish one reading; None when done, else why not (``_UNAVAILABLE``: the broker is down)."""
        found = self._channel(reading.channel)
        if isinstance(found, str):
            return found
        name, opts = found
        try:
            if opts.binary:
                if fmt == INFLUX:
                    return f"namespace {name.namespace!r} carries binary data, which line protocol cannot"
                data = binary_data(reading.data)
            else:
                data = codec_json.data_bytes(reading.data)
        except (BadData, codec_json.DecodeError) as exc:
            return str(exc)
        try:
            await self.node.publish_to(tenant, name, opts, data, feed_key=reading.key)
        except ClientError as exc:
            return _UNAVAILABLE if exc.code == 100 else exc.message
        return None


def _lines(body: bytes, start: int) -> int:
    """Lines of ``body`` from ``start`` (a last line without its line end counts)."""
    if start >= len(body):
        return 0
    return body.count(b"\n", start) + (0 if body.endswith(b"\n") else 1)


_REST = CUT_OFF.format(0).partition(":")[2]
_UNAVAILABLE = "\x00unavailable"
"""What ``_publish_one`` says when the broker cannot take the reading (never a reason a line can have)."""


async def _each(run: Callable[[Any], Awaitable[None]], items: list[Any], limit: int) -> None:
    """``run`` over ``items`` with at most ``limit`` in flight (``limit`` workers take the next item)."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await run(item)

    await asyncio.gather(*(worker() for _ in range(min(limit, len(items)))))
