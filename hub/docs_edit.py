"""``POST /doc/{name}/edit``: agents edit documents with JSON, without speaking Yjs.

The request (JSON, at most ``doc_edit_max_body_size`` bytes)::

    {"ops": [...],                      sync.edit's operations, applied as ONE transaction
     "if_version": "<version>",         optional: only if the document is still at this version
     "agent": {"name": "...", "color": "#rrggbb"},    optional: who is shown editing
     "unit": "utf16" | "codepoint"}     optional: what text indexes count (default utf16, as JavaScript)

Who: the token (``?token=`` or ``Authorization: Bearer``) must give write access to the document
(``hub.docs.authorize``; without a token, ``doc_anonymous_access`` must be ``write``), or the server API
key (``X-API-Key``; a tenant-bound key edits its own tenant's documents, an unbound one the tenant named
by ``?tenant=``, default ""), as ``GET /doc/{name}/content`` reads them.

The edit runs on the document's live room on this node (``sync.agents``): stored and relayed like any
client's update, on every node. While it works the agent is shown in the document (its awareness state,
``bot: true``, the cursor at what it edited), until ``doc_edit_presence_linger`` seconds after its last
edit; ``agent`` names it, else the token's user, else ``agent``.

Answers (JSON):

- 200 ``{"version", "ranges": [{"op", "path", "start", "end"}]}``: the document's version after the edit
  (``sync.version``: send it as the next ``if_version``) and the text ranges the ops wrote;
- 409 ``{"error", "version", "content"}``: ``if_version`` is not the document's version; the content and
  version are read together, now (``GET /doc/{name}/content``'s JSON), so the agent can rebase and retry;
- 400 the body is not a JSON object, or a field of the request itself is wrong; 413 over the body bound
  or an ``EditLimits`` bound, or the document would pass ``doc_max_document_size``; 422 an op that is
  malformed or does not fit the document (``op`` says which, ``error`` what); in every case nothing of
  the edit is applied;
- 401 / 403 no valid token / no write access (or a key bound to another tenant); 405 not a POST;
  503 the document cannot be opened now.

Every refusal is one log line (rate-limited: a client can repeat it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from hub.api import read_body
from hub.ingest.body import BodyRefused
from hub.logs import log_limited
from sync.agents import Agent
from sync.edit import UNITS, EditRejected, EditResult, EditTooLarge, StaleVersion
from sync.protocol import SyncError

if TYPE_CHECKING:
    from hub.docs import Documents

log = logging.getLogger("switchboard.docs")

EDIT_SUFFIX = "/edit"
DEFAULT_AGENT = "agent"
FIELDS = frozenset({"ops", "if_version", "agent", "unit"})
AGENT_FIELDS = frozenset({"name", "color"})


@dataclass(frozen=True, slots=True)
class EditRequest:
    ops: Any
    if_version: str | None = None
    agent: Agent | None = None
    unit: str = "utf16"


def parse_request(body: bytes) -> EditRequest:
    """The request's fields, checked for type (the ops are ``sync.edit``'s to judge).

    Raises ``BodyRefused``."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyRefused(400, f"the body is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BodyRefused(400, 'the body is a JSON object: {"ops": [...]}')
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise BodyRefused(
            400, f"unknown field {unknown[0][:40]!r}; the fields are {', '.join(sorted(FIELDS))}"
        )
    if "ops" not in raw:
        raise BodyRefused(400, "missing field 'ops' (a list of operations)")
    if_version = raw.get("if_version")
    if if_version is not None and not isinstance(if_version, str):
        raise BodyRefused(400, "if_version must be a string (a version this endpoint answered)")
    unit = raw.get("unit", "utf16")
    if unit not in UNITS:
        raise BodyRefused(400, f"unit must be one of {', '.join(UNITS)}")
    agent = None
    if "agent" in raw:
        agent = parse_agent(raw["agent"])
    return EditRequest(raw["ops"], if_version, agent, unit)


def parse_agent(raw: Any) -> Agent:
    if not isinstance(raw, dict):
        raise BodyRefused(400, 'agent is an object: {"name": "...", "color": "#rrggbb"}')
    unknown = sorted(set(raw) - AGENT_FIELDS)
    if unknown:
        raise BodyRefused(400, f"agent: unknown field {unknown[0][:40]!r}")
    if "name" not in raw:
        raise BodyRefused(400, "agent: missing field 'name'")
    agent = Agent(raw["name"], raw.get("color"))
    try:
        agent.state()
    except ValueError as exc:
        raise BodyRefused(400, f"agent: {exc}") from None
    return agent


def default_agent(user: str) -> Agent:
    """The token's user, when it makes a valid agent name; else ``DEFAULT_AGENT``."""
    agent = Agent(user)
    try:
        agent.state()
    except ValueError:
        return Agent(DEFAULT_AGENT)
    return agent


def answer(result: EditResult) -> dict[str, Any]:
    ranges = [{"op": r.op, "path": list(r.path), "start": r.start, "end": r.end} for r in result.ranges]
    return {"version": result.version, "ranges": ranges}


async def serve(documents: Documents, request: Request, name: str) -> Response:
    """Answer one edit request (see the module docstring)."""
    if request.method != "POST":
        return JSONResponse({"error": "method not allowed: POST"}, status_code=405, headers={"Allow": "POST"})
    access = documents.http_access(request, name, write=True)
    if isinstance(access, Response):
        return access
    limit = documents.config.doc_edit_max_body_size
    try:
        body = await read_body(request, limit)
        if body is None:
            raise BodyRefused(413, f"the body is larger than {limit} bytes (doc_edit_max_body_size)")
        edit = parse_request(body)
    except ClientDisconnect:
        return refuse(name, 400, "the client left before its body ended")
    except BodyRefused as bad:
        return refuse(name, bad.status, bad.message)
    agent = edit.agent or default_agent(access.user)
    try:
        result = await documents.edit(
            name, edit.ops, tenant=access.tenant, if_version=edit.if_version, agent=agent, unit=edit.unit
        )
    except StaleVersion as stale:
        return await rebase(documents, name, access.tenant, stale)
    except EditRejected as rejected:
        status = 413 if isinstance(rejected, EditTooLarge) else 422
        return refuse(name, status, rejected.reason, op=rejected.op)
    except SyncError as exc:
        return refuse(name, 503, exc.reason)
    log.debug("document %r edited by agent %r: %d ops", name, agent.name, len(edit.ops))
    return JSONResponse(answer(result))


async def rebase(documents: Documents, name: str, tenant: str, stale: StaleVersion) -> Response:
    """The 409: the document's content and version now, read together (not ``stale.current``, which
    another change may have passed meanwhile)."""
    try:
        content, version, _ = await documents.read_encoded(name, tenant=tenant)
    except SyncError as exc:
        return refuse(name, 503, exc.reason)
    log_limited(log, logging.INFO, "edit of document %r refused (409): %s", name, stale.reason)
    body = orjson.dumps({"error": stale.reason, "version": version, "content": orjson.Fragment(content)})
    return Response(body, status_code=409, media_type="application/json")


def refuse(name: str, status: int, message: str, op: int | None = None) -> JSONResponse:
    log_limited(log, logging.INFO, "edit of document %r refused (%d): %s", name, status, message)
    body: dict[str, Any] = {"error": message}
    if op is not None:
        body["op"] = op
    return JSONResponse(body, status_code=status)
