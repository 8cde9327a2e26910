"""Channel-name grammar (sans-I/O: no event loop)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.errors import ChannelError, InvalidChannel
from channels.names import MAX_LENGTH, ChannelName, parse_channel


@pytest.mark.parametrize(
    ("name", "namespace", "users", "private"),
    [
        ("news", "", None, False),
        ("chat:room1", "chat", None, False),
        ("chat:room:sub", "chat", None, False),
        ("chat:", "chat", None, False),
        ("$secret", "", None, True),
        ("$chat:vip", "chat", None, True),
        ("dialog#alice,bob", "", ("alice", "bob"), False),
        ("personal:inbox#alice", "personal", ("alice",), False),
        ("personal:inbox#", "personal", (), False),
        ("personal:inbox#alice,,bob,", "personal", ("alice", "bob"), False),
        ("$personal:x#carol", "personal", ("carol",), True),
        ("a#b:c", "a#b", ("b:c",), False),
        ("ünï:cödé", "ünï", None, False),
    ],
)
def test_parse_valid(name: str, namespace: str, users: tuple[str, ...] | None, private: bool) -> None:
    parsed = parse_channel(name)
    assert parsed == ChannelName(name, namespace, users, private)


@pytest.mark.parametrize(
    "name",
    ["", ":room", "$:room", "a b", "tab\there", "new\nline", "nul\x00", "bell\x07", "nbsp\u00a0x", "x" * 256],
)
def test_parse_invalid(name: str) -> None:
    with pytest.raises(InvalidChannel):
        parse_channel(name)


def test_not_a_string_is_invalid() -> None:
    with pytest.raises(InvalidChannel):
        parse_channel(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidChannel):
        parse_channel(b"chat:room")  # type: ignore[arg-type]


def test_length_limit_is_inclusive_and_configurable() -> None:
    assert parse_channel("x" * MAX_LENGTH).raw == "x" * MAX_LENGTH
    assert parse_channel("abcd", max_length=4).raw == "abcd"
    with pytest.raises(InvalidChannel):
        parse_channel("abcde", max_length=4)


def test_invalid_channel_is_a_channel_error() -> None:
    assert issubclass(InvalidChannel, ChannelError)


def test_user_allowed() -> None:
    assert parse_channel("news").user_allowed("anyone")
    assert parse_channel("news").user_allowed("")
    limited = parse_channel("dm#alice,bob")
    assert limited.user_allowed("alice")
    assert limited.user_allowed("bob")
    assert not limited.user_allowed("carol")
    assert not limited.user_allowed("")
    assert not parse_channel("dm#").user_allowed("alice")


_segment = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Cf", "Co", "Cn"), blacklist_characters=":#$,"
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(
    private=st.booleans(),
    namespace=st.one_of(st.none(), _segment),
    rest=_segment,
    users=st.one_of(st.none(), st.lists(_segment, max_size=4)),
)
def test_composed_names_parse_back(
    private: bool, namespace: str | None, rest: str, users: list[str] | None
) -> None:
    name = ("$" if private else "") + (f"{namespace}:" if namespace is not None else "") + rest
    if users is not None:
        name += "#" + ",".join(users)
    parsed = parse_channel(name)
    assert parsed.raw == name
    assert parsed.private is private
    assert parsed.namespace == (namespace or "")
    assert parsed.allowed_users == (None if users is None else tuple(users))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_or_raises_invalid_channel(name: str) -> None:
    try:
        parsed = parse_channel(name)
    except InvalidChannel:
        return
    assert parsed.raw == name
    assert 0 < len(name) <= MAX_LENGTH
    assert not any(ch.isspace() for ch in name)
    bare = name[1:] if parsed.private else name
    if ":" in bare:
        assert parsed.namespace == bare.split(":", 1)[0] != ""
    else:
        assert parsed.namespace == ""
