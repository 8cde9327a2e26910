"""Development mode's guard rails: where it may run, and what it opens (one log line each).

Development mode (``hub.config.load_config``: no config file, no token key) is made for ``make run`` on a
laptop. On any other address it would be an open hub: tokens signed with a secret everybody knows, an
anonymous server API, documents anyone may write. Policy:

- on a loopback address (127.0.0.0/8, ::1, ``localhost``) it starts, and says what is open;
- on any other address (``0.0.0.0``, ``::``, a LAN address, a host name) it starts only when asked for
  explicitly (``--dev`` or ``SWITCHBOARD_DEV=1``); otherwise ``switchboard serve`` refuses to start with
  ``refusal``'s message, which names the keys to set.

``exposures`` reads what is open from the configuration itself, so every line it logs is true of the node
that logs it (an ``api_key`` set from the environment closes the API even in development mode).
"""

from __future__ import annotations

import ipaddress

from channels.options import NamespaceOptions
from hub.config import DEV_BOT_SECRET, DEV_ENV, DEV_SECRET, Config

_OPERATIONS = ("subscribe", "publish", "history", "presence")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listen address) is reachable from this machine only. Host names other than
    ``localhost`` may resolve to anything: they are not loopback."""
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def refusal(host: str) -> str:
    """Why ``switchboard serve`` does not start in development mode on ``host``, and what to set."""
    return (
        f"refusing to start in development mode on {host!r}, which is not a loopback address: anyone who "
        "reaches it could sign tokens for any user and tenant with the public development secret, call "
        "the server API without a key and write every document. For production set a token key "
        "(token_hmac_secret_key or SWITCHBOARD_TOKEN_HMAC_SECRET_KEY; or token_rsa_public_key / "
        "token_ecdsa_public_key) and a server API key (api_key or SWITCHBOARD_API_KEY), or give a config "
        "file (--config hub.toml or SWITCHBOARD_CONFIG). To run development mode there anyway, pass --dev "
        f"(or set {DEV_ENV}=1)."
    )


def _channel_exposure(where: str, opts: NamespaceOptions) -> str | None:
    """What ``opts`` let every client do, as one line; None when nothing is open to every client."""
    open_ops = [op for op in _OPERATIONS if getattr(opts, f"allow_{op}_for_client")]
    if not open_ops:
        return None
    anonymous = [op for op in open_ops if getattr(opts, f"allow_{op}_for_anonymous")]
    line = f"{where}: {', '.join(open_ops)} allowed to every client"
    if anonymous:
        line += f" ({', '.join(anonymous)} to anonymous clients too)"
    if opts.allow_user_limited_channels:
        line += "; user-limited channels (name#user) allowed"
    return line


def exposures(cfg: Config) -> list[str]:
    """What a development-mode node opens to anyone who reaches it, one sentence each."""
    lines: list[str] = []
    if cfg.allow_anonymous_connect_without_token:
        lines.append("anonymous clients may connect without a token (allow_anonymous_connect_without_token)")
    if cfg.token_hmac_secret_key == DEV_SECRET:
        lines.append(
            "tokens are signed with the public development secret: anyone can sign a token for any user "
            "in any tenant (and make `switchboard token` print one)"
        )
    if cfg.bot_token_hmac_secret_key == DEV_BOT_SECRET:
        lines.append(
            "bot tokens are signed with the public development bot secret: anyone can connect as a bot "
            "(conn_info bot: true) and serve RPC methods under bot_rpc_prefix"
        )
    if not cfg.server_api_keys():
        lines.append(
            "the server API is open without a key: anyone can publish, broadcast, read history and presence, "
            "subscribe, unsubscribe and disconnect users, in every tenant"
        )
    if cfg.doc_anonymous_access != "none":
        lines.append(f"documents: connections without a token may {cfg.doc_anonymous_access} every document")
    if cfg.doc_token_access != "none":
        lines.append(f"documents: any token without a docs claim may {cfg.doc_token_access} every document")
    channel = _channel_exposure("channels without a namespace", cfg.channel)
    if channel is not None:
        lines.append(channel)
    for name, opts in cfg.namespaces.items():
        line = _channel_exposure(f"namespace {name}", opts)
        if line is not None:
            lines.append(line)
    return lines
