"""Embedding Switchboard in your own Starlette (or FastAPI) application.

Run it:  .venv/bin/uvicorn examples.embed_starlette:app --port 8000 --ws websockets-sansio
(or with the hub's fast WebSocket protocol: see ``main()`` below, ``python -m examples.embed_starlette``).

What it shows:
- authentication in Python: ``on_connecting`` accepts an ``X-User`` header set by your own auth layer
  (a real app would check its session cookie here), so clients connect without a JWT;
- authorization of subscriptions: only members may subscribe to ``team:<name>`` channels;
- moderation of client publications: ``on_publish`` refuses and rewrites;
- a named RPC method;
- your HTTP endpoint publishing into the hub;
- the hub mounted under ``/realtime``: clients connect to ``ws://host:8000/realtime/connection/websocket``.
"""

from __future__ import annotations

import dataclasses
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from channels.options import NamespaceOptions
from hub import (
    ConnectingContext,
    ConnectingResult,
    PublishContext,
    PublishResult,
    RPCContext,
    SubscribeContext,
    SubscribeResult,
    Switchboard,
)
from hub.codes import error_permission_denied
from hub.config import Config

TEAMS = {"red": {"alice", "bob"}, "blue": {"carol"}}

config = Config(
    token_hmac_secret_key="replace-me-with-a-long-random-secret",
    channel=NamespaceOptions(allow_subscribe_for_client=True, allow_publish_for_subscriber=True),
    namespaces={
        "team": NamespaceOptions(
            presence=True,
            join_leave=True,
            history_size=50,
            history_ttl=600,
            force_recovery=True,
            allow_publish_for_subscriber=True,
            allow_presence_for_subscriber=True,
            allow_history_for_subscriber=True,
        )
    },
)
sb = Switchboard(config)


@sb.on_connecting
async def authenticate(ctx: ConnectingContext) -> ConnectingResult | None:
    user = ctx.headers.get("x-user")
    if ctx.claims is None and not user:
        return None  # neither a token nor our header: the hub refuses (anonymous is off)
    if user:
        return ConnectingResult(user=user, info={"name": user.title()}, data={"welcome": user})
    return None


@sb.on_subscribe
async def authorize(ctx: SubscribeContext) -> SubscribeResult | None:
    namespace, _, team = ctx.channel.partition(":")
    if namespace == "team":
        if ctx.user not in TEAMS.get(team, set()):
            raise error_permission_denied()
        return SubscribeResult(info={"team": team})
    return None  # keep what the namespace options decided


@sb.on_publish
async def moderate(ctx: PublishContext) -> PublishResult | None:
    if isinstance(ctx.data, dict):
        text = str(ctx.data.get("text", ""))
        if "spam" in text.lower():
            raise error_permission_denied()
        return PublishResult(data={**ctx.data, "text": text.strip(), "by": ctx.user})
    return None


@sb.rpc("time")
async def server_time(ctx: RPCContext) -> dict[str, float]:
    return {"now": time.time(), "asked_by": ctx.user}  # type: ignore[dict-item]


async def announce(request: Request) -> JSONResponse:
    body = await request.json()
    result = await sb.publish(f"team:{body['team']}", {"text": body["text"], "by": "server"})
    return JSONResponse({"offset": result.position.offset, "epoch": result.position.epoch})


app = Starlette(
    routes=[Route("/announce", announce, methods=["POST"]), Mount("/realtime", app=sb)],
    lifespan=sb.lifespan,
)


def main() -> None:  # pragma: no cover - manual run
    import uvicorn

    from hub.cli import uvicorn_config

    cfg = dataclasses.replace(config, port=8000)
    uvicorn.Server(uvicorn_config(app, cfg)).run()


if __name__ == "__main__":  # pragma: no cover
    main()
