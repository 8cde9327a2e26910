"""What the console's Notifications and deliveries view shows of the configuration: every destination of
events out (the ``[[webhooks]]`` endpoints and ``[email]``), as plain JSON without a secret.

A webhook's URL is shown without its user info, query and fragment (where credentials of a receiver
usually hide); no signing secret, SMTP user or password is ever part of an answer.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from hub.config import Config
from hub.outbound.settings import EMAIL_DESTINATION


def public_url(url: str) -> str:
    """``url`` as an operator may see it: scheme, host, port and path only."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path}"


def destinations(config: Config) -> list[dict[str, Any]]:
    """Every destination of events out, in configuration order (email last)."""
    out: list[dict[str, Any]] = [
        {
            "destination": hook.destination,
            "kind": "webhook",
            "name": hook.name,
            "url": public_url(hook.url),
            "events": sorted(str(e) for e in hook.events),
            "namespaces": sorted(hook.namespaces) if hook.namespaces is not None else None,
            "tenants": sorted(hook.tenants) if hook.tenants is not None else None,
            "max_concurrency": hook.max_concurrency,
            "timeout": hook.timeout,
        }
        for hook in config.webhooks
    ]
    email = config.email
    if email is not None:
        out.append(
            {
                "destination": EMAIL_DESTINATION,
                "kind": "email",
                "name": EMAIL_DESTINATION,
                "url": f"smtp://{email.host}:{email.port} ({email.security})",
                "events": ["notification.created"],
                "namespaces": None,
                "tenants": None,
                "max_concurrency": email.max_concurrency,
                "timeout": email.timeout,
            }
        )
    return out


def serves(destination: dict[str, Any], tenant: str) -> bool:
    """Whether ``destination`` (one of ``destinations``) takes events of ``tenant``."""
    tenants = destination["tenants"]
    return tenants is None or tenant in tenants
