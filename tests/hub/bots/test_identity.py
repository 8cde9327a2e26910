"""Who is a bot, without a hub: the verifier's rule (only the bot key carries the claim) and how
``conn_info`` shows a bot (properties over any JSON info)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.auth import TokenExpired, TokenInvalid, TokenVerifier, mint_token
from hub.bots.identity import is_bot, shown_info
from tests.conftest import SECRET
from tests.hub.bots.conftest import BOT_SECRET
from tests.hub.bots.conftest import writable_json as _json

VERIFIER = TokenVerifier(hmac_secret=SECRET, bot_hmac_secret=BOT_SECRET)


def test_only_the_bot_key_carries_the_claim() -> None:
    assert VERIFIER.verify_connect(mint_token(BOT_SECRET, "b", bot=True)).bot is True
    assert VERIFIER.verify_connect(mint_token(BOT_SECRET, "p")).bot is False  # the key alone: a person
    assert VERIFIER.verify_connect(mint_token(SECRET, "p", bot=False)).bot is False
    with pytest.raises(TokenInvalid, match="not signed with bot_token_hmac_secret_key"):
        VERIFIER.verify_connect(mint_token(SECRET, "m", bot=True))
    with pytest.raises(TokenInvalid, match="true or false"):
        VERIFIER.verify_connect(mint_token(BOT_SECRET, "b", bot=1))  # type: ignore[arg-type]
    with pytest.raises(TokenInvalid, match="info must be an object"):
        VERIFIER.verify_connect(mint_token(BOT_SECRET, "b", bot=True, info=["x"]))
    with pytest.raises(TokenExpired):
        VERIFIER.verify_connect(mint_token(BOT_SECRET, "b", bot=True, ttl=10, now=1000))
    # a token signed with neither key keeps its own error, not the bot key's
    with pytest.raises(TokenInvalid, match="Signature verification failed"):
        VERIFIER.verify_connect(mint_token("x" * 40, "b", bot=True))
    with pytest.raises(TokenInvalid):
        TokenVerifier(hmac_secret=SECRET).verify_connect(mint_token(BOT_SECRET, "b", bot=True))
    # the bot key never opens a document or a subscription
    with pytest.raises(TokenInvalid):
        VERIFIER.verify_subscription(mint_token(BOT_SECRET, "b", channel="c"))


_info = st.one_of(_json, st.dictionaries(st.sampled_from(["bot", "name", "b", "bots"]), _json, max_size=3))


@given(_info)
def test_conn_info_says_bot_for_bots_only(info: Any) -> None:
    raw = orjson.dumps(info)
    person = shown_info(raw, False)
    assert not is_bot(person)
    value = orjson.loads(person)  # type: ignore[arg-type]
    if isinstance(info, dict):
        assert value == {k: v for k, v in info.items() if k != "bot"}
    else:
        assert value == info
    bot = shown_info(raw, True)
    assert is_bot(bot)
    shown = orjson.loads(bot)  # type: ignore[arg-type]
    if info is None:
        assert shown == {"bot": True}
    elif isinstance(info, dict):
        assert shown == {**info, "bot": True}
    else:
        assert shown == {"bot": True, "info": info}
    assert shown_info(None, False) is None and is_bot(shown_info(None, True))
