"""The webhook request, without a network: signed so the ``standardwebhooks`` verifier (what receivers
use) accepts it, with every secret of a rotation, and refuses anything altered; the answers' verdicts."""

from __future__ import annotations

import base64
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from hub.outbound.routes import webhook_id
from inbox.outbox import Task, Topic
from workers.webhook import attempt_result, envelope, parse_retry_after, request_headers, transport_failure

KEYS = [bytes(range(32)), b"\xff" * 24]
SECRETS = ["whsec_" + base64.b64encode(k).decode() for k in KEYS]


def task(payload: dict[str, object], event_id: int = 7) -> Task:
    return Task(1, event_id, "webhook:main", "acme", Topic.PUBLICATION, payload, 1, 0.0, 1_800_000_000.25)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(payload=st.dictionaries(st.text(max_size=10), json_values, max_size=6), event_id=st.integers(1, 2**62))
def test_every_secret_of_a_rotation_verifies_the_request(payload: dict[str, object], event_id: int) -> None:
    body = envelope(task(payload, event_id))
    headers = request_headers(KEYS, webhook_id("abc123", event_id), int(time.time()), body)
    for secret in SECRETS:
        assert Verifier(secret).verify(body, headers) == {
            "type": "publication",
            "timestamp": "2027-01-15T08:00:00.250Z",
            "tenant": "acme",
            "data": payload,
        }


def test_an_altered_request_or_another_secret_is_refused() -> None:
    body = envelope(task({"n": 1}))
    now = int(time.time())
    headers = request_headers(KEYS[:1], "msg_x_7", now, body)
    Verifier(SECRETS[0]).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Verifier(SECRETS[1]).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Verifier(SECRETS[0]).verify(body.replace(b'"n":1', b'"n":2'), headers)
    with pytest.raises(WebhookVerificationError):
        Verifier(SECRETS[0]).verify(body, {**headers, "webhook-id": "msg_x_8"})
    with pytest.raises(WebhookVerificationError):  # a replay long after: outside the verifier's tolerance
        Verifier(SECRETS[0]).verify(body, request_headers(KEYS[:1], "msg_x_7", now - 3600, body))


def test_the_webhook_id_is_stable_and_names_its_database() -> None:
    assert webhook_id("abc123", 7) == "msg_abc123_7"
    assert webhook_id("abc123", 7) != webhook_id("def456", 7)


@pytest.mark.parametrize(
    ("status", "ok", "retryable"),
    [
        (200, True, False),
        (204, True, False),
        (301, False, True),
        (400, False, False),
        (401, False, False),
        (404, False, False),
        (408, False, True),
        (410, False, False),
        (429, False, True),
        (500, False, True),
        (503, False, True),
    ],
)
def test_verdict_of_an_answer(status: int, ok: bool, retryable: bool) -> None:
    result = attempt_result(status, {"retry-after": "7"}, b"body " * 100, 0.0)
    assert result.ok is ok and result.status == status
    if not ok:
        assert result.retryable is retryable
        assert result.retry_after == (7.0 if retryable else None)
        assert len(result.error) < 220 and result.error.startswith(f"HTTP {status}: body")


def test_retry_after_as_seconds_or_a_date_and_garbage_is_ignored() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Fri, 15 Jan 2027 08:00:30 GMT", now) == 30.0
    assert parse_retry_after("Fri, 15 Jan 2027 07:00:00 GMT", now) == 0.0  # in the past: at once
    for garbage in (None, "", "soon", "-5", "1e9", "Fri, 99 Foo 2027", "9" * 400):
        value = parse_retry_after(garbage, now)
        assert value is None or (0 <= value <= 10**9)


def test_a_transport_failure_is_retried() -> None:
    result = transport_failure(TimeoutError())
    assert not result.ok and result.retryable and result.error == "timeout"
    assert (
        transport_failure(ConnectionResetError("reset by peer")).error
        == "ConnectionResetError: reset by peer"
    )
