"""Switchboard's hub: the ASGI app, transports, client sessions, auth, config, the node and the CLI.

Embedding::

    from hub import Switchboard
    sb = Switchboard()

    @sb.rpc("echo")
    async def echo(ctx):
        return ctx.data

The error tree is drawn in ``hub.codes``.
"""

from hub.app import Switchboard, create_app
from hub.codes import ClientError, Disconnect
from hub.config import Config, load_config
from hub.hooks import (
    ConnectingContext,
    ConnectingResult,
    Hooks,
    MessageContext,
    PublishContext,
    PublishResult,
    RPCContext,
    SubscribeContext,
    SubscribeResult,
)

__all__ = [
    "ClientError",
    "Config",
    "ConnectingContext",
    "ConnectingResult",
    "Disconnect",
    "Hooks",
    "MessageContext",
    "PublishContext",
    "PublishResult",
    "RPCContext",
    "SubscribeContext",
    "SubscribeResult",
    "Switchboard",
    "create_app",
    "load_config",
]
