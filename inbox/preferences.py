"""Delivery preferences (sans-I/O): the tenant's defaults per category, each user's choices, the decision.

Policy (``PreferencePolicy``, from the hub's config): per category the delivery channels it uses unless a
user says otherwise, and whether it is ``critical``; categories not named use ``default``. A user's
``Preferences`` switch channels on or off globally, a category on or off, or one channel of a category.

``decide`` answers for one (category, channel): the most specific choice wins, in this order: the user's
setting for that channel of that category, the user's setting for the whole category, the user's setting
for the channel, the category's default. A ``critical`` category ignores the user's opt-outs (security
alerts, receipts): only the category's default counts. A notification skipped by a preference is recorded
as a ``skipped`` delivery with the reason ``decide`` gives, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inbox.errors import InvalidInput
from inbox.model import (
    ALL_CHANNELS,
    DeliveryChannel,
    _enum,
    _object,
    check_category,
)

MAX_PREFERENCE_CATEGORIES = 256


@dataclass(frozen=True, slots=True)
class CategoryPolicy:
    channels: frozenset[DeliveryChannel] = frozenset({DeliveryChannel.IN_APP, DeliveryChannel.WEBHOOK})
    """Channels on unless the user turns them off (email is opt-in unless a category says so)."""
    critical: bool = False
    """The user's opt-outs do not apply."""


@dataclass(frozen=True, slots=True)
class PreferencePolicy:
    categories: Mapping[str, CategoryPolicy] = field(default_factory=dict)
    default: CategoryPolicy = CategoryPolicy()

    def for_category(self, category: str) -> CategoryPolicy:
        return self.categories.get(category, self.default)


def _check_switches(name: str, value: object) -> dict[DeliveryChannel, bool]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{name} must be an object of channel: true/false")
    switches: dict[DeliveryChannel, bool] = {}
    for channel, on in value.items():
        key = _enum(DeliveryChannel, name, channel)
        if not isinstance(on, bool):
            raise InvalidInput(f"{name}.{key} must be true or false")
        switches[key] = on
    return switches


@dataclass(frozen=True, slots=True)
class CategoryPreference:
    enabled: bool | None = None
    """The whole category on or off (None: no choice made)."""
    channels: Mapping[DeliveryChannel, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.enabled is not None and not isinstance(self.enabled, bool):
            raise InvalidInput("enabled must be true, false or absent")
        _check_switches("channels", self.channels)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"channels": {str(c): on for c, on in sorted(self.channels.items())}}
        if self.enabled is not None:
            out["enabled"] = self.enabled
        return out


@dataclass(frozen=True, slots=True)
class Preferences:
    """One user's choices; the empty value means "the defaults"."""

    channels: Mapping[DeliveryChannel, bool] = field(default_factory=dict)
    categories: Mapping[str, CategoryPreference] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_switches("channels", self.channels)
        if not isinstance(self.categories, Mapping) or len(self.categories) > MAX_PREFERENCE_CATEGORIES:
            raise InvalidInput(f"categories must be an object of at most {MAX_PREFERENCE_CATEGORIES} entries")
        for name, pref in self.categories.items():
            check_category(name, "categories")
            if not isinstance(pref, CategoryPreference):
                raise InvalidInput("categories must map to category preferences")

    def as_dict(self) -> dict[str, Any]:
        return {
            "channels": {str(c): on for c, on in sorted(self.channels.items())},
            "categories": {name: pref.as_dict() for name, pref in sorted(self.categories.items())},
        }


NO_PREFERENCES = Preferences()


def parse_preferences(value: object) -> Preferences:
    """``Preferences`` from JSON (what ``as_dict`` writes); the stores keep that JSON."""
    p = _object(value, "preferences", {"channels", "categories"})
    raw_categories = p.get("categories", {})
    if not isinstance(raw_categories, dict) or len(raw_categories) > MAX_PREFERENCE_CATEGORIES:
        raise InvalidInput(f"categories must be an object of at most {MAX_PREFERENCE_CATEGORIES} entries")
    categories: dict[str, CategoryPreference] = {}
    for name, raw in raw_categories.items():
        c = _object(raw, f"categories.{str(name)[:64]}", {"enabled", "channels"})
        categories[check_category(name, "categories")] = CategoryPreference(
            enabled=c.get("enabled"), channels=_check_switches("channels", c.get("channels", {}))
        )
    return Preferences(channels=_check_switches("channels", p.get("channels", {})), categories=categories)


@dataclass(frozen=True, slots=True)
class Decision:
    send: bool
    reason: str
    """Why not, for the skipped delivery ("" when sent)."""


def decide(policy: PreferencePolicy, prefs: Preferences, category: str, channel: DeliveryChannel) -> Decision:
    """Whether a notification of ``category`` goes to this user on ``channel`` (module docstring)."""
    rule = policy.for_category(category)
    default = channel in rule.channels
    if rule.critical:
        return Decision(default, "" if default else "category default")
    pref = prefs.categories.get(category)
    if pref is not None and channel in pref.channels:
        on, where = pref.channels[channel], "category channel preference"
    elif pref is not None and pref.enabled is not None:
        on, where = pref.enabled, "category preference"
    elif channel in prefs.channels:
        on, where = prefs.channels[channel], "channel preference"
    else:
        on, where = default, "category default"
    return Decision(on, "" if on else where)


def decide_all(
    policy: PreferencePolicy, prefs: Preferences, category: str, channels: frozenset[DeliveryChannel]
) -> dict[DeliveryChannel, Decision]:
    """``decide`` for each of ``channels``; channels the notification does not use are left out."""
    return {c: decide(policy, prefs, category, c) for c in sorted(channels & ALL_CHANNELS)}
