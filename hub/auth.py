"""JWT verification and minting for connection and subscription tokens.

Algorithms: HS256/384/512 with the configured secret, RS256/384/512 with an RSA public key, ES256/384/512
with an ECDSA public key. PyJWT does the cryptography; this module maps claims to the hub's vocabulary and
tells an expired token (the SDKs refresh it: error 109) from an invalid one (terminal: disconnect 3500).

Connection claims: sub (user id, "" for anonymous), exp, iat, info (any JSON), channels (server-side
subscriptions), tenant, bot (``true``: the connection is a bot, ``hub.bots``). Who may carry ``bot``: only a
token signed with ``bot_token_hmac_secret_key`` (HS256/384/512), a key of its own that the service minting
people's tokens never holds; a ``bot`` claim on any other token, a ``bot`` that is not a boolean, and a
bot's ``info`` that is not an object are invalid tokens (3500). A token signed with the bot key but without
``bot: true`` is a person's connection token like any other.

Subscription claims: sub, channel, exp, info, tenant (must match the connection's).
Document claims (``/doc/{name}``, a connection token): sub, exp, tenant, and ``docs``: ``{"read": [...],
"write": [...]}``, lists of document names or prefixes ending in ``*`` (see ``hub.docs``).

Time claims (``exp``, ``iat``, ``nbf``; RFC 7519 NumericDate) are JSON numbers of seconds: a token whose
time claim is anything else (a string, a boolean, an object, NaN, Infinity, a negative number or one past
``MAX_NUMERIC_DATE``) is invalid, never a crash. A ``null`` time claim counts as absent. With
``require_exp`` (``token_require_exp``) every token, of every kind, must carry ``exp``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson

from hub.codes import HubError


class TokenError(HubError):
    """The token cannot be used."""


class TokenInvalid(TokenError):
    """Malformed, badly signed, wrong algorithm, wrong audience/issuer, or claims of the wrong type."""


class TokenExpired(TokenError):
    """Well signed but past its exp."""


@dataclass(frozen=True, slots=True)
class ConnectClaims:
    user: str
    exp: int | None
    info: bytes | None
    channels: tuple[str, ...]
    tenant: str
    bot: bool = False
    """The token's ``bot: true``, signed with the bot key (``hub.bots``)."""


@dataclass(frozen=True, slots=True)
class SubscriptionClaims:
    user: str
    channel: str
    exp: int | None
    info: bytes | None
    tenant: str = ""


@dataclass(frozen=True, slots=True)
class DocumentClaims:
    user: str
    exp: int | None
    tenant: str
    read: tuple[str, ...] | None
    """Name patterns the token may read; None when the token has no ``docs`` claim."""
    write: tuple[str, ...] | None


MAX_NUMERIC_DATE = 253402300799
"""9999-12-31T23:59:59Z: the largest time claim accepted (larger ones are invalid, not "never")."""

_TIME_CLAIMS = ("exp", "iat", "nbf")

_HMAC = {"HS256", "HS384", "HS512"}
_RSA = {"RS256", "RS384", "RS512"}
_EC = {"ES256", "ES384", "ES512"}


def _load_key(value: str) -> str:
    """A PEM key given inline, or the path of a file holding one."""
    if not value or value.lstrip().startswith("-----"):
        return value
    return Path(value).read_text()


class TokenVerifier:
    def __init__(
        self,
        *,
        hmac_secret: str = "",
        rsa_public_key: str = "",
        ecdsa_public_key: str = "",
        audience: str = "",
        issuer: str = "",
        require_exp: bool = False,
        bot_hmac_secret: str = "",
    ) -> None:
        self._require_exp = require_exp
        self._hmac = hmac_secret
        self._bot_hmac = bot_hmac_secret
        self._rsa = _load_key(rsa_public_key)
        self._ec = _load_key(ecdsa_public_key)
        self._audience = audience or None
        self._issuer = issuer or None

    def _key_for(self, alg: object) -> str:
        if not isinstance(alg, str):
            raise TokenInvalid("alg must be a string")
        key = ""
        if alg in _HMAC:
            key = self._hmac
        elif alg in _RSA:
            key = self._rsa
        elif alg in _EC:
            key = self._ec
        if not key:
            raise TokenInvalid(f"no key configured for algorithm {alg!r}")
        return key

    def _decode(self, token: str, now: float | None, *, bot_key: bool = False) -> dict[str, Any]:
        if not isinstance(token, str) or not token:
            raise TokenInvalid("empty token")
        try:
            alg = jwt.get_unverified_header(token).get("alg", "")
        except jwt.PyJWTError as exc:
            raise TokenInvalid(str(exc)) from None
        if bot_key and alg not in _HMAC:
            raise TokenInvalid("a bot token is signed with HS256, HS384 or HS512")
        key = self._bot_hmac if bot_key else self._key_for(alg)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                # exp is checked below (expired and invalid need different codes); iat is not checked, as
                # Centrifugo does not: a token minted by a host whose clock runs a little fast is still good.
                options={"verify_exp": False, "verify_iat": False, "verify_aud": self._audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise TokenInvalid(str(exc)) from None
        for name in _TIME_CLAIMS:
            _check_numeric_date(claims, name)
        exp = claims.get("exp")
        if exp is None:
            if self._require_exp:
                raise TokenInvalid("token without exp (token_require_exp)")
        elif exp <= (time.time() if now is None else now):
            raise TokenExpired("token expired")
        return claims

    def _decode_connect(self, token: str, now: float | None) -> tuple[dict[str, Any], bool]:
        """The claims of a connection token and whether the bot key signed it (tried second, only when
        the token's signature does not verify with the ordinary keys)."""
        try:
            return self._decode(token, now), False
        except TokenInvalid as first:
            if not self._bot_hmac:
                raise
            try:
                return self._decode(token, now, bot_key=True), True
            except TokenInvalid:
                raise first from None

    def verify_connect(self, token: str, now: float | None = None) -> ConnectClaims:
        claims, bot_key = self._decode_connect(token, now)
        bot = claims.get("bot", False)
        if not isinstance(bot, bool):
            raise TokenInvalid("bot must be true or false")
        if bot and not bot_key:
            raise TokenInvalid("a bot claim on a token not signed with bot_token_hmac_secret_key")
        if bot and not isinstance(claims.get("info", {}), dict):
            raise TokenInvalid("a bot token's info must be an object")
        if "channel" in claims:
            # A subscription token must never open a connection (Centrifugo refuses it too): it would
            # log its user in, and into the default tenant when it carries none.
            raise TokenInvalid("a subscription token (channel claim) is not a connection token")
        channels = claims.get("channels", [])
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise TokenInvalid("channels must be a list of strings")
        return ConnectClaims(
            user=_str_claim(claims, "sub"),
            exp=_exp(claims),
            info=_info(claims),
            channels=tuple(channels),
            tenant=_str_claim(claims, "tenant"),
            bot=bot,
        )

    def verify_subscription(self, token: str, now: float | None = None) -> SubscriptionClaims:
        claims = self._decode(token, now)
        channel = _str_claim(claims, "channel")
        if not channel:
            raise TokenInvalid("subscription token without channel")
        return SubscriptionClaims(
            user=_str_claim(claims, "sub"),
            channel=channel,
            exp=_exp(claims),
            info=_info(claims),
            tenant=_str_claim(claims, "tenant"),
        )

    def verify_document(self, token: str, now: float | None = None) -> DocumentClaims:
        """A connection token used on a document endpoint, with its ``docs`` claim."""
        claims = self._decode(token, now)
        if "channel" in claims:
            raise TokenInvalid("a subscription token (channel claim) is not a connection token")
        read: tuple[str, ...] | None = None
        write: tuple[str, ...] | None = None
        if "docs" in claims:
            docs = claims["docs"]
            if not isinstance(docs, dict):
                raise TokenInvalid("docs must be an object")
            read, write = _patterns(docs, "read"), _patterns(docs, "write")
        return DocumentClaims(
            user=_str_claim(claims, "sub"),
            exp=_exp(claims),
            tenant=_str_claim(claims, "tenant"),
            read=read,
            write=write,
        )


def _check_numeric_date(claims: dict[str, Any], name: str) -> None:
    """A time claim is absent, null, or a finite number of seconds in [0, MAX_NUMERIC_DATE]."""
    value = claims.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenInvalid(f"{name} must be a number")
    # A float compares with the bounds as is; an int of any size too (no float conversion to overflow).
    if isinstance(value, float) and not math.isfinite(value):
        raise TokenInvalid(f"{name} must be a finite number")
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise TokenInvalid(f"{name} out of range")


def _patterns(docs: dict[str, Any], name: str) -> tuple[str, ...]:
    value = docs.get(name, [])
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise TokenInvalid(f"docs.{name} must be a list of strings")
    return tuple(value)


def _str_claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name, "")
    if not isinstance(value, str):
        raise TokenInvalid(f"{name} must be a string")
    return value


def _exp(claims: dict[str, Any]) -> int | None:
    exp = claims.get("exp")
    return None if exp is None else int(exp)


def _info(claims: dict[str, Any]) -> bytes | None:
    if "info" not in claims:
        return None
    try:
        return orjson.dumps(claims["info"])
    except orjson.JSONEncodeError:  # an integer past 64 bits, nesting deeper than orjson writes
        raise TokenInvalid("info cannot be carried as JSON") from None


def mint_token(
    secret: str,
    user: str,
    *,
    ttl: float | None = None,
    info: Any = None,
    channels: list[str] | None = None,
    tenant: str | None = None,
    channel: str | None = None,
    docs: dict[str, list[str]] | None = None,
    bot: bool | None = None,
    algorithm: str = "HS256",
    now: float | None = None,
) -> str:
    """A signed connection token (or, with ``channel``, a subscription token)."""
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {"sub": user, "iat": issued}
    if ttl is not None:
        payload["exp"] = issued + int(ttl)
    if info is not None:
        payload["info"] = info
    if channels:
        payload["channels"] = channels
    if tenant:
        payload["tenant"] = tenant
    if channel is not None:
        payload["channel"] = channel
    if docs is not None:
        payload["docs"] = docs
    if bot is not None:
        payload["bot"] = bot
    return jwt.encode(payload, secret, algorithm=algorithm)
