"""Fuzzing ``hub.auth``'s token checks: whatever a JWT holds, ``verify_connect``, ``verify_subscription``
and ``verify_document`` return claims or raise ``TokenError`` (``TokenInvalid``: 3500, ``TokenExpired``:
109), never another exception, in bounded time.

Tokens are built by hand (PyJWT's encoder writes only what its decoder likes): a header and a payload of
any JSON text, or JSON-looking text (NaN, Infinity, 2**200, nesting past any limit, duplicate keys), in
URL-safe base64, correctly signed with the hub's secret so the claims are read, or signed wrongly."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from hypothesis import example, given, settings
from hypothesis import strategies as st

from hub.auth import TokenError, TokenVerifier
from tests.conftest import SECRET
from tests.fuzz.strategies import bounded_time, examples, json_object_text, json_texts, json_values, mutated

VERIFIER = TokenVerifier(hmac_secret=SECRET)
HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed(header: str, payload: str, alg: str = "HS256") -> str:
    head = b64(header.encode()) + "." + b64(payload.encode())
    mac = hmac.new(SECRET.encode(), head.encode(), HASHES[alg]).digest()
    return head + "." + b64(mac)


def _text(value: object) -> str:
    return json.dumps(value)


numbers = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "1e300", "-1e300", str(2**70), "0", "-1"])
claim_texts = {
    "sub": st.sampled_from(['"alice"', '""']) | json_texts,
    "exp": numbers | json_texts,
    "iat": numbers | json_texts,
    "nbf": numbers | json_texts,
    "info": json_texts,
    "channels": st.lists(st.sampled_from(["news", "$x", "", "a" * 300])).map(_text) | json_texts,
    "channel": st.sampled_from(['"news"', '""']) | json_texts,
    "tenant": st.sampled_from(['"acme"', '""']) | json_texts,
    "docs": st.fixed_dictionaries({}, optional={"read": json_values, "write": json_values}).map(_text)
    | json_texts,
    "aud": json_texts,
    "iss": json_texts,
}
payloads = st.lists(st.sampled_from(list(claim_texts)), unique=True).flatmap(
    lambda names: st.fixed_dictionaries({n: claim_texts[n] for n in names}).map(json_object_text)
)
headers = st.sampled_from(list(HASHES)).map(lambda alg: json_object_text({"alg": _text(alg), "typ": '"JWT"'}))
headers |= st.fixed_dictionaries({}, optional={"alg": json_texts, "typ": json_texts, "kid": json_texts}).map(
    json_object_text
)


@st.composite
def tokens(draw: st.DrawFn) -> str:
    header, payload = draw(headers), draw(payloads)
    try:
        alg = json.loads(header).get("alg")
    except (ValueError, RecursionError, AttributeError):
        alg = None
    token = signed(header, payload, alg if isinstance(alg, str) and alg in HASHES else "HS256")
    if draw(st.integers(0, 3)) == 0:
        token = draw(mutated(token.encode())).decode(errors="replace")
    return token


def check(token: str) -> None:
    for verify in (VERIFIER.verify_connect, VERIFIER.verify_subscription, VERIFIER.verify_document):
        try:
            with bounded_time():
                verify(token)
        except TokenError:
            pass


@settings(max_examples=examples(250))
@given(tokens())
@example(signed('{"alg":["HS256"]}', '{"sub":"a"}'))  # found: TypeError (unhashable alg)
@example(signed('{"alg":"HS256"}', '{"sub":"a","exp":Infinity}'))  # found: OverflowError
@example(signed('{"alg":"HS256"}', '{"sub":"a","exp":NaN}'))  # found: ValueError
@example(signed('{"alg":"HS256"}', '{"sub":"a","info":' + "[" * 300 + "]" * 300 + "}"))  # found: TypeError
@example(signed('{"alg":"HS256"}', '{"sub":"a","info":' + str(2**70) + "}"))  # found: TypeError
@example(signed('{"alg":"HS256"}', '{"sub":"a","info":' + "[" * 5000 + "]" * 5000 + "}"))
@example(signed('{"alg":"HS256","x":' + "[" * 5000 + "]" * 5000 + "}", '{"sub":"a"}'))
def test_any_token_gives_claims_or_token_error(token: str) -> None:
    check(token)


@settings(max_examples=examples(100))
@given(st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.decode("latin-1")))
def test_any_text_gives_claims_or_token_error(token: str) -> None:
    check(token)
