"""Console sign-in, sans-I/O: passwords, signed session cookies, CSRF tokens and login throttling.

Policies:

- **Passwords.** ``admin_password`` (full control) and ``admin_readonly_password`` (read-only) are compared
  in constant time; ``admin_password_hash`` / ``admin_readonly_password_hash`` hold a hash instead, in one
  of two standard formats made by ``hash_password`` (``switchboard admin-hash``), hashlib only:
  ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`` or ``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>``.
  Every configured password is tried on every sign-in (no early exit).
- **Sessions are signed cookies, not server state**, so any node behind a load balancer accepts them: the
  cookie is ``<payload b64>.<HMAC-SHA256 b64>`` with ``{"sid", "role", "iat", "exp"}``. The key is derived
  from the configured passwords (or their hashes) and the token secret, so every node with the same
  configuration derives the same key, and changing a password ends every session. Sessions end at
  ``exp`` (``admin_session_ttl``).
- **Logout** revokes the session id until its ``exp`` in the console's store (``hub.admin.store``): Redis
  when configured, so the revocation holds on every node; in memory (bounded) for a node alone.
- **CSRF.** The cookie is ``SameSite=Strict`` and ``HttpOnly``; every state-changing call must also carry
  ``X-CSRF-Token`` (an HMAC of the session id: the page gets it from ``/admin/api/session``, another site
  cannot read it) and, when the browser sends one, an ``Origin`` equal to the request's own.
- **Throttling.** Sign-ins are counted before their password is checked and given back when it was
  right, so failed ones are limited per remote address (a token bucket of ``PER_ADDRESS_BURST``
  refilled at ``PER_ADDRESS_RATE``/s) and over the whole node (``GLOBAL_BURST``, ``GLOBAL_RATE``); the
  address table holds at most ``MAX_ADDRESSES`` entries (the least recently used go first, full buckets
  are dropped), so no client can make it grow without limit. A throttled attempt is refused before its
  password is checked (HTTP 429 with ``Retry-After``).

Error tree::

    ValueError (builtin)
     +-- BadHash              a configured hash that is not in one of the two formats
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from hub.limits import TokenBucket

ADMIN = "admin"
READONLY = "readonly"
ROLES = (ADMIN, READONLY)

COOKIE = "sb_admin"
CSRF_HEADER = "x-csrf-token"
MAX_PASSWORD = 1024
"""Longest password a sign-in may present (bytes); longer ones are refused before any hashing."""
MAX_COOKIE = 1024
"""Longest session cookie read (bytes); ours are about 150."""

PER_ADDRESS_BURST = 5
PER_ADDRESS_RATE = 1 / 12
"""Failed sign-ins per second refilled for one address: 5 at once, then one every 12 s."""
GLOBAL_BURST = 30
GLOBAL_RATE = 0.5
MAX_ADDRESSES = 10_000

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
PBKDF2_ITERATIONS = 600_000
_SCRYPT_MAXMEM = 256 * 1024 * 1024


class BadHash(ValueError):
    """A configured password hash in neither supported format."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """URL-safe base64 without padding; anything outside its alphabet is an error (binascii.Error)."""
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


# ---------------------------------------------------------------- passwords


def hash_password(password: str, scheme: str = "scrypt") -> str:
    """A hash of ``password`` for ``admin_password_hash`` (``scrypt`` or ``pbkdf2_sha256``)."""
    salt = secrets.token_bytes(16)
    raw = password.encode()
    if scheme == "scrypt":
        digest = hashlib.scrypt(
            raw, salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=_SCRYPT_MAXMEM, dklen=32
        )
        return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"
    if scheme == "pbkdf2_sha256":
        digest = hashlib.pbkdf2_hmac("sha256", raw, salt, PBKDF2_ITERATIONS)
        return f"pbkdf2_sha256${PBKDF2_ITERATIONS}${_b64(salt)}${_b64(digest)}"
    raise ValueError(f"unknown hash scheme {scheme!r}")


def _salt_and_digest(salt: str, digest: str) -> tuple[bytes, bytes]:
    raw_salt, raw_digest = _unb64(salt), _unb64(digest)
    if len(raw_salt) < 8 or len(raw_digest) < 16:
        raise BadHash("a password hash needs a salt of 8 bytes or more and a digest of 16 or more")
    return raw_salt, raw_digest


@dataclass(frozen=True, slots=True)
class PasswordHash:
    scheme: str
    params: tuple[int, ...]
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        parts = text.strip().split("$")
        try:
            if parts[0] == "scrypt" and len(parts) == 6:
                n, r, p = (int(x) for x in parts[1:4])
                if (
                    n < 2
                    or n & (n - 1)
                    or not (1 <= r <= 64 and 1 <= p <= 16)
                    or 128 * r * n > _SCRYPT_MAXMEM
                ):
                    raise BadHash("scrypt parameters out of range")
                return cls("scrypt", (n, r, p), *_salt_and_digest(parts[4], parts[5]))
            if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
                iterations = int(parts[1])
                if not 1000 <= iterations <= 10_000_000:
                    raise BadHash("pbkdf2 iterations out of range")
                return cls("pbkdf2_sha256", (iterations,), *_salt_and_digest(parts[2], parts[3]))
        except (ValueError, binascii.Error) as exc:
            if isinstance(exc, BadHash):
                raise
            raise BadHash(f"malformed password hash: {exc}") from None
        raise BadHash("a password hash must be scrypt$n$r$p$salt$hash or pbkdf2_sha256$iterations$salt$hash")

    def matches(self, password: bytes) -> bool:
        if self.scheme == "scrypt":
            n, r, p = self.params
            got = hashlib.scrypt(
                password, salt=self.salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=len(self.digest)
            )
        else:
            got = hashlib.pbkdf2_hmac("sha256", password, self.salt, self.params[0], len(self.digest))
        return hmac.compare_digest(got, self.digest)


@dataclass(frozen=True, slots=True)
class Credential:
    """One way in: a plain password or a hash, and the role it grants."""

    role: str
    plain: str = ""
    hashed: PasswordHash | None = None

    def matches(self, password: bytes) -> bool:
        if self.hashed is not None:
            return self.hashed.matches(password)
        return hmac.compare_digest(password, self.plain.encode())

    def material(self) -> bytes:
        """What the session key is derived from (a hash's text, or the plain password)."""
        if self.hashed is not None:
            h = self.hashed
            return f"{h.scheme}${h.params}${_b64(h.salt)}${_b64(h.digest)}".encode()
        return self.plain.encode()


def credentials(
    password: str = "", password_hash: str = "", readonly: str = "", readonly_hash: str = ""
) -> list[Credential]:
    """The configured ways in (raises BadHash for a malformed hash)."""
    out: list[Credential] = []
    for role, plain, hashed in ((ADMIN, password, password_hash), (READONLY, readonly, readonly_hash)):
        if plain:
            out.append(Credential(role, plain=plain))
        if hashed:
            out.append(Credential(role, hashed=PasswordHash.parse(hashed)))
    return out


def check_password(creds: list[Credential], password: str) -> str | None:
    """The role ``password`` grants (admin wins over read-only), or None. Tries every credential."""
    raw = password.encode()
    if not raw or len(raw) > MAX_PASSWORD:
        return None
    granted: set[str] = set()
    for cred in creds:
        if cred.matches(raw):
            granted.add(cred.role)
    if ADMIN in granted:
        return ADMIN
    return READONLY if READONLY in granted else None


# ---------------------------------------------------------------- sessions


def session_key(creds: list[Credential], extra: str = "") -> bytes:
    """The HMAC key of session cookies: the same on every node with the same configuration."""
    h = hashlib.sha256(b"switchboard admin session v1\x00")
    for cred in creds:
        h.update(cred.role.encode() + b"\x00" + cred.material() + b"\x00")
    h.update(extra.encode())
    return h.digest()


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    role: str
    issued: int
    expires: int


class Sessions:
    """Signs and reads session cookies and derives their CSRF tokens."""

    def __init__(self, key: bytes, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self.ttl = ttl
        self.clock = clock

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, role: str) -> tuple[Session, str]:
        now = int(self.clock())
        session = Session(secrets.token_hex(16), role, now, now + max(1, int(self.ttl)))
        payload = orjson.dumps(
            {"sid": session.sid, "role": role, "iat": session.issued, "exp": session.expires}
        )
        return session, f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie holds, or None (missing, forged, malformed or expired)."""
        if not cookie or len(cookie) > MAX_COOKIE or cookie.count(".") != 1:
            return None
        body, mac = cookie.split(".")
        try:
            payload, got = _unb64(body), _unb64(mac)
        except (ValueError, binascii.Error):
            return None
        if not hmac.compare_digest(got, self._mac(payload)):
            return None
        try:
            claims = orjson.loads(payload)
            session = Session(str(claims["sid"]), str(claims["role"]), int(claims["iat"]), int(claims["exp"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        if session.role not in ROLES or self.clock() >= session.expires:
            return None
        return session

    def csrf(self, session: Session) -> str:
        return _b64(self._mac(b"csrf\x00" + session.sid.encode()))

    def csrf_ok(self, session: Session, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf(session).encode())


def same_origin(origin: str | None, scheme: str, host: str | None) -> bool:
    """Whether a request's ``Origin`` (when the browser sent one) is the request's own."""
    if origin is None:
        return True
    return host is not None and origin.lower() == f"{scheme}://{host}".lower()


# ---------------------------------------------------------------- throttling


class LoginThrottle:
    """Failed sign-ins per remote address and over the node (see the module docstring). Clock injected."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        per_address: tuple[int, float] = (PER_ADDRESS_BURST, PER_ADDRESS_RATE),
        overall: tuple[int, float] = (GLOBAL_BURST, GLOBAL_RATE),
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self.clock = clock
        self.per_address = per_address
        self.max_addresses = max_addresses
        self._global = TokenBucket(overall[1], overall[0], clock())
        self._addresses: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._addresses)

    def retry_after(self, address: str) -> float:
        """0 when a sign-in from ``address`` may be tried now; else seconds until it may."""
        now = self.clock()
        bucket = self._addresses.get(address)
        waits = [_wait(self._global, now)]
        if bucket is not None:
            waits.append(_wait(bucket, now))
        return max(waits)

    def attempt(self, address: str) -> None:
        """Count a sign-in from ``address`` before its password is checked (so a burst of parallel attempts
        cannot all pass the check before the first one fails); ``forgive`` gives it back on success."""
        self.failed(address)

    def forgive(self, address: str) -> None:
        """A counted attempt succeeded: give its tokens back."""
        now = self.clock()
        for bucket in (self._global, self._addresses.get(address)):
            if bucket is not None:
                bucket.tokens = min(bucket.burst, _refilled(bucket, now) + 1.0)
                bucket.stamp = now

    def failed(self, address: str) -> None:
        """Count a failed sign-in from ``address``."""
        now = self.clock()
        self._global.take(now)
        bucket = self._addresses.pop(address, None)
        if bucket is None:
            burst, rate = self.per_address
            bucket = TokenBucket(rate, burst, now)
            self._prune(now)
        bucket.take(now)
        self._addresses[address] = bucket  # most recent last

    def _prune(self, now: float) -> None:
        """Make room for one more address: drop full buckets, then the least recently used."""
        if len(self._addresses) < self.max_addresses:
            return
        for address in [a for a, b in self._addresses.items() if _wait(b, now) == 0 and _full(b, now)]:
            del self._addresses[address]
        while len(self._addresses) >= self.max_addresses:
            self._addresses.popitem(last=False)


def _refilled(bucket: TokenBucket, now: float) -> float:
    return min(bucket.burst, bucket.tokens + max(0.0, now - bucket.stamp) * bucket.rate)


def _full(bucket: TokenBucket, now: float) -> bool:
    return _refilled(bucket, now) >= bucket.burst


def _wait(bucket: TokenBucket, now: float) -> float:
    tokens = _refilled(bucket, now)
    return 0.0 if tokens >= 1.0 - 1e-9 else (1.0 - tokens) / bucket.rate
