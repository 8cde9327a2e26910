"""JWT verification and minting: HS256, RS256, ES256 (keys made with ``cryptography``), expiry, bad
tokens, claims mapping, subscription tokens. No event loop."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub.auth import (
    ConnectClaims,
    SubscriptionClaims,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenVerifier,
    mint_token,
)
from hub.codes import HubError

SECRET = "test-secret-of-at-least-32-bytes-length!"
NOW = 1_700_000_000


def pem_pair(private: Any) -> tuple[str, str]:
    priv = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    pub = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return priv, pub


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str]:
    return pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def other_rsa_keys() -> tuple[str, str]:
    return pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec_keys() -> tuple[str, str]:
    return pem_pair(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def ec384_keys() -> tuple[str, str]:
    return pem_pair(ec.generate_private_key(ec.SECP384R1()))


@pytest.fixture(scope="module")
def verifier(rsa_keys: tuple[str, str], ec_keys: tuple[str, str]) -> TokenVerifier:
    return TokenVerifier(hmac_secret=SECRET, rsa_public_key=rsa_keys[1], ecdsa_public_key=ec_keys[1])


def sign(payload: dict[str, Any], key: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=alg)


# ---------------------------------------------------------------- algorithms


def test_hs256(verifier: TokenVerifier) -> None:
    claims = verifier.verify_connect(mint_token(SECRET, "alice"))
    assert claims == ConnectClaims(user="alice", exp=None, info=None, channels=(), tenant="")


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_other_hmac_algorithms(alg: str) -> None:
    secret = "s" * 64  # RFC 7518 3.2: a key at least as long as the hash output
    v = TokenVerifier(hmac_secret=secret)
    assert v.verify_connect(mint_token(secret, "alice", algorithm=alg)).user == "alice"


def test_rs256(verifier: TokenVerifier, rsa_keys: tuple[str, str]) -> None:
    token = mint_token(rsa_keys[0], "bob", algorithm="RS256", ttl=60)
    claims = verifier.verify_connect(token)
    assert claims.user == "bob" and claims.exp is not None


def test_es256(verifier: TokenVerifier, ec_keys: tuple[str, str]) -> None:
    token = mint_token(ec_keys[0], "carol", algorithm="ES256", tenant="acme")
    claims = verifier.verify_connect(token)
    assert (claims.user, claims.tenant) == ("carol", "acme")


def test_es384(ec384_keys: tuple[str, str]) -> None:
    v = TokenVerifier(ecdsa_public_key=ec384_keys[1])
    assert v.verify_connect(mint_token(ec384_keys[0], "dave", algorithm="ES384")).user == "dave"


def test_public_key_from_a_file(tmp_path: Path, rsa_keys: tuple[str, str]) -> None:
    path = tmp_path / "rsa.pem"
    path.write_text(rsa_keys[1])
    v = TokenVerifier(rsa_public_key=str(path))
    assert v.verify_connect(mint_token(rsa_keys[0], "erin", algorithm="RS256")).user == "erin"


# ---------------------------------------------------------------- expiry


def test_expired_token(verifier: TokenVerifier) -> None:
    token = mint_token(SECRET, "alice", ttl=60, now=NOW)
    assert verifier.verify_connect(token, now=NOW + 59).exp == NOW + 60
    with pytest.raises(TokenExpired):
        verifier.verify_connect(token, now=NOW + 60)
    with pytest.raises(TokenExpired):
        verifier.verify_connect(token)  # real time: long past
    with pytest.raises(TokenExpired):
        verifier.verify_subscription(mint_token(SECRET, "alice", ttl=1, now=NOW, channel="ch"))


def test_expired_asymmetric_tokens(
    verifier: TokenVerifier, rsa_keys: tuple[str, str], ec_keys: tuple[str, str]
) -> None:
    with pytest.raises(TokenExpired):
        verifier.verify_connect(mint_token(rsa_keys[0], "a", ttl=1, now=NOW, algorithm="RS256"))
    with pytest.raises(TokenExpired):
        verifier.verify_connect(mint_token(ec_keys[0], "a", ttl=1, now=NOW, algorithm="ES256"))


def test_fresh_token_with_ttl_is_accepted_in_real_time(verifier: TokenVerifier) -> None:
    claims = verifier.verify_connect(mint_token(SECRET, "alice", ttl=3600))
    assert claims.exp is not None and claims.exp > time.time()


def test_badly_signed_expired_token_is_invalid_not_expired(verifier: TokenVerifier) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify_connect(mint_token("another-secret-of-at-least-32-bytes!!", "a", ttl=1, now=NOW))


@pytest.mark.parametrize("exp", ["soon", True, [1]])
def test_exp_of_the_wrong_type_is_invalid(verifier: TokenVerifier, exp: Any) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify_connect(sign({"sub": "a", "exp": exp}))


# ---------------------------------------------------------------- invalid tokens


def test_wrong_hmac_secret(verifier: TokenVerifier) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify_connect(mint_token("another-secret-of-at-least-32-bytes!!", "alice"))


def test_wrong_rsa_key(verifier: TokenVerifier, other_rsa_keys: tuple[str, str]) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify_connect(mint_token(other_rsa_keys[0], "alice", algorithm="RS256"))


def test_wrong_ec_key(verifier: TokenVerifier) -> None:
    other, _ = pem_pair(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(TokenInvalid):
        verifier.verify_connect(mint_token(other, "alice", algorithm="ES256"))


def test_algorithm_without_a_configured_key(rsa_keys: tuple[str, str], ec_keys: tuple[str, str]) -> None:
    hmac_only = TokenVerifier(hmac_secret=SECRET)
    with pytest.raises(TokenInvalid):
        hmac_only.verify_connect(mint_token(rsa_keys[0], "a", algorithm="RS256"))
    with pytest.raises(TokenInvalid):
        hmac_only.verify_connect(mint_token(ec_keys[0], "a", algorithm="ES256"))
    rsa_only = TokenVerifier(rsa_public_key=rsa_keys[1])
    with pytest.raises(TokenInvalid):
        rsa_only.verify_connect(mint_token(SECRET, "a"))


def test_rsa_public_key_used_as_hmac_secret_is_refused(rsa_keys: tuple[str, str]) -> None:
    """The classic algorithm-confusion attack: an HS256 token signed with the (public) RSA key."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(b'{"sub":"admin"}').rstrip(b"=")
    mac = hmac.new(rsa_keys[1].encode(), header + b"." + body, hashlib.sha256).digest()
    token = (header + b"." + body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
    for v in (
        TokenVerifier(rsa_public_key=rsa_keys[1]),
        TokenVerifier(hmac_secret=SECRET, rsa_public_key=rsa_keys[1]),
    ):
        with pytest.raises(TokenInvalid):
            v.verify_connect(token)


def test_unsigned_token_is_refused(verifier: TokenVerifier) -> None:
    unsigned = jwt.encode({"sub": "admin"}, None, algorithm="none")  # type: ignore[arg-type]
    assert unsigned.endswith(".")
    with pytest.raises(TokenInvalid):
        verifier.verify_connect(unsigned)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b.c",
        "a.b",
        "....",
        "eyJhbGciOiJIUzI1NiJ9.e30",
        "eyJhbGciOiJIUzI1NiJ9.!!!.sig",
        None,
        42,
    ],
)
def test_garbage_is_invalid(verifier: TokenVerifier, token: Any) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify_connect(token)
    with pytest.raises(TokenInvalid):
        verifier.verify_subscription(token)


def test_tampered_payload_is_invalid(verifier: TokenVerifier) -> None:
    header, _, sig = mint_token(SECRET, "alice").split(".")
    body = base64.urlsafe_b64encode(b'{"sub":"admin"}').rstrip(b"=").decode()
    with pytest.raises(TokenInvalid):
        verifier.verify_connect(f"{header}.{body}.{sig}")


def test_audience_and_issuer() -> None:
    v = TokenVerifier(hmac_secret=SECRET, audience="hub", issuer="auth.example")
    assert v.verify_connect(sign({"sub": "a", "aud": "hub", "iss": "auth.example"})).user == "a"
    for payload in (
        {"sub": "a", "aud": "other", "iss": "auth.example"},
        {"sub": "a", "aud": "hub", "iss": "evil"},
        {"sub": "a", "iss": "auth.example"},
        {"sub": "a", "aud": "hub"},
    ):
        with pytest.raises(TokenInvalid):
            v.verify_connect(sign(payload))
    # without a configured audience, the aud claim is not checked
    assert TokenVerifier(hmac_secret=SECRET).verify_connect(sign({"sub": "a", "aud": "whatever"})).user == "a"


def test_errors_belong_to_the_hub_tree() -> None:
    assert issubclass(TokenInvalid, TokenError) and issubclass(TokenExpired, TokenError)
    assert issubclass(TokenError, HubError)
    assert not issubclass(TokenExpired, TokenInvalid)


# ---------------------------------------------------------------- claims mapping


def test_connect_claims_mapping(verifier: TokenVerifier) -> None:
    info = {"name": "Alice", "tags": [1, 2], "ok": True}
    token = mint_token(
        SECRET, "alice", ttl=120, now=NOW, info=info, channels=["news", "chat:room"], tenant="acme"
    )
    claims = verifier.verify_connect(token, now=NOW)
    assert claims.user == "alice"
    assert claims.exp == NOW + 120
    assert claims.info is not None and orjson.loads(claims.info) == info
    assert claims.channels == ("news", "chat:room")
    assert claims.tenant == "acme"


def test_info_of_any_json_type_becomes_its_json_text(verifier: TokenVerifier) -> None:
    for info in ("text", 0, [1], None, False):
        claims = verifier.verify_connect(sign({"sub": "a", "info": info}))
        assert claims.info == orjson.dumps(info)


def test_missing_claims_default(verifier: TokenVerifier) -> None:
    claims = verifier.verify_connect(sign({}))
    assert claims == ConnectClaims(user="", exp=None, info=None, channels=(), tenant="")


@pytest.mark.parametrize(
    "payload",
    [
        {"sub": 42},
        {"sub": None},
        {"sub": "a", "channels": "news"},
        {"sub": "a", "channels": ["news", 1]},
        {"sub": "a", "tenant": 7},
    ],
)
def test_claims_of_the_wrong_type_are_invalid(verifier: TokenVerifier, payload: dict[str, Any]) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify_connect(sign(payload))


def test_mint_token_payload() -> None:
    token = mint_token(SECRET, "alice", ttl=30.7, now=NOW + 0.9, info={"a": 1}, channels=["x"], tenant="t")
    payload = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert payload == {
        "sub": "alice",
        "iat": NOW,
        "exp": NOW + 30,
        "info": {"a": 1},
        "channels": ["x"],
        "tenant": "t",
    }
    bare = jwt.decode(mint_token(SECRET, "", now=NOW), SECRET, algorithms=["HS256"])
    assert bare == {"sub": "", "iat": NOW}


# ---------------------------------------------------------------- subscription tokens


def test_subscription_token(verifier: TokenVerifier, ec_keys: tuple[str, str]) -> None:
    token = mint_token(SECRET, "alice", channel="$chat:vip", info={"role": "mod"}, ttl=60, now=NOW)
    claims = verifier.verify_subscription(token, now=NOW)
    assert claims == SubscriptionClaims(
        user="alice", channel="$chat:vip", exp=NOW + 60, info=b'{"role":"mod"}'
    )
    es = verifier.verify_subscription(mint_token(ec_keys[0], "bob", channel="$x", algorithm="ES256"))
    assert (es.user, es.channel, es.exp, es.info) == ("bob", "$x", None, None)


@pytest.mark.parametrize("payload", [{"sub": "a"}, {"sub": "a", "channel": ""}, {"sub": "a", "channel": 5}])
def test_subscription_token_needs_a_channel(verifier: TokenVerifier, payload: dict[str, Any]) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify_subscription(sign(payload))


def test_connection_token_is_not_a_subscription_token(verifier: TokenVerifier) -> None:
    with pytest.raises(TokenInvalid):
        verifier.verify_subscription(mint_token(SECRET, "alice", channels=["news"]))
