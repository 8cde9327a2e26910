"""Console sign-in without a server (hub/admin/auth.py): password hashes, signed session cookies, CSRF
tokens and the login throttle, with garbage thrown at every reader."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.admin import auth


def pbkdf2_hash(password: str, iterations: int = 1000) -> str:
    """A valid hash cheap enough for tests (hash_password uses 600,000 iterations)."""
    salt = b"0123456789abcdef"
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    return f"pbkdf2_sha256${iterations}${b64(salt)}${b64(digest)}"


def test_both_hash_formats_verify_their_password_only() -> None:
    for scheme in ("scrypt", "pbkdf2_sha256"):
        text = auth.hash_password("correct horse", scheme)
        assert text.startswith(scheme + "$")
        parsed = auth.PasswordHash.parse(text)
        assert parsed.matches(b"correct horse")
        assert not parsed.matches(b"correct horsE")


def test_roles_from_plain_and_hashed_passwords() -> None:
    creds = auth.credentials(password_hash=pbkdf2_hash("root"), readonly="look")
    assert auth.check_password(creds, "root") == auth.ADMIN
    assert auth.check_password(creds, "look") == auth.READONLY
    assert auth.check_password(creds, "nope") is None
    assert auth.check_password(creds, "") is None
    assert auth.check_password(creds, "x" * (auth.MAX_PASSWORD + 1)) is None
    # The same password for both roles grants the wider one.
    assert auth.check_password(auth.credentials(password="same", readonly="same"), "same") == auth.ADMIN


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain",
        "scrypt$1$8$1$c2FsdA$ZGln",
        "scrypt$16384$8$1$!!$!!",
        "pbkdf2_sha256$10$c2FsdA$ZGln",
        "md5$x$y",
    ],
)
def test_malformed_hashes_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(auth.BadHash):
        auth.PasswordHash.parse(text)


@given(st.text(max_size=200))
def test_any_text_as_a_hash_is_a_hash_or_bad_hash(text: str) -> None:
    try:
        auth.PasswordHash.parse(text)
    except auth.BadHash:
        pass


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_session_cookie_round_trips_until_it_expires() -> None:
    clock = Clock()
    sessions = auth.Sessions(b"k" * 32, ttl=60, clock=clock)
    session, cookie = sessions.issue(auth.READONLY)
    assert sessions.read(cookie) == session
    assert session.role == auth.READONLY and session.expires == clock.now + 60
    clock.now += 59
    assert sessions.read(cookie) == session
    clock.now += 1
    assert sessions.read(cookie) is None


def test_a_cookie_signed_with_another_key_or_altered_is_refused() -> None:
    sessions = auth.Sessions(b"k" * 32, ttl=60)
    _, cookie = sessions.issue(auth.READONLY)
    assert auth.Sessions(b"j" * 32, ttl=60).read(cookie) is None
    body, mac = cookie.split(".")
    forged = base64.urlsafe_b64encode(
        base64.urlsafe_b64decode(body + "==").replace(b"readonly", b"admin")
    ).rstrip(b"=")
    assert sessions.read(f"{forged.decode()}.{mac}") is None


def test_the_key_changes_with_any_password() -> None:
    a = auth.session_key(auth.credentials(password="one"))
    assert a == auth.session_key(auth.credentials(password="one"))
    assert a != auth.session_key(auth.credentials(password="two"))
    assert a != auth.session_key(auth.credentials(password="one", readonly="ro"))
    assert a != auth.session_key(auth.credentials(password="one"), "token secret")


@given(st.text(max_size=2000) | st.none())
def test_garbage_cookies_are_no_session(cookie: str | None) -> None:
    assert auth.Sessions(b"k" * 32, ttl=60).read(cookie) is None


def test_csrf_token_belongs_to_its_session() -> None:
    sessions = auth.Sessions(b"k" * 32, ttl=60)
    one, _ = sessions.issue(auth.ADMIN)
    two, _ = sessions.issue(auth.ADMIN)
    assert sessions.csrf_ok(one, sessions.csrf(one))
    assert not sessions.csrf_ok(one, sessions.csrf(two))
    assert not sessions.csrf_ok(one, None)
    assert not sessions.csrf_ok(one, "")


def test_origin_must_be_the_consoles_own_when_sent() -> None:
    assert auth.same_origin(None, "http", "hub:8000")
    assert auth.same_origin("http://hub:8000", "http", "hub:8000")
    assert not auth.same_origin("http://evil:8000", "http", "hub:8000")
    assert not auth.same_origin("http://hub:8000", "https", "hub:8000")
    assert not auth.same_origin("null", "http", "hub:8000")


def test_failed_sign_ins_are_throttled_per_address_and_refill() -> None:
    clock = Clock()
    throttle = auth.LoginThrottle(clock, per_address=(3, 0.5), overall=(100, 10.0))
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == pytest.approx(2.0)
    assert throttle.retry_after("10.0.0.2") == 0  # another address is not held back
    clock.now += 2
    assert throttle.retry_after("10.0.0.1") == 0


def test_the_global_limit_holds_across_addresses() -> None:
    clock = Clock()
    throttle = auth.LoginThrottle(clock, per_address=(5, 1.0), overall=(4, 1.0))
    for i in range(4):
        throttle.failed(f"10.0.0.{i}")
    assert throttle.retry_after("10.9.9.9") > 0


def test_the_address_table_is_bounded() -> None:
    clock = Clock()
    throttle = auth.LoginThrottle(clock, per_address=(5, 1.0), overall=(10**9, 10.0**9), max_addresses=50)
    for i in range(5000):
        throttle.failed(f"addr-{i}")
        assert len(throttle) <= 50
    assert throttle.retry_after("addr-4999") == 0  # one failure of five


def test_attempts_are_counted_before_the_check_and_forgiven_when_right() -> None:
    clock = Clock()
    throttle = auth.LoginThrottle(clock, per_address=(2, 0.01), overall=(100, 0.01))
    for _ in range(10):  # an operator signing in again and again is never held back
        throttle.attempt("10.0.0.1")
        throttle.forgive("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 0
    throttle.attempt("10.0.0.1")  # two attempts in flight, neither checked yet: a third must wait
    throttle.attempt("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") > 0
