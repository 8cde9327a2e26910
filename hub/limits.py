"""Per-connection command rate limit (sans-I/O: the caller passes the clock).

Policy (``client_command_rate_limit`` commands per second, ``client_command_rate_burst`` at once):

- a token bucket holds up to ``burst`` tokens and refills at ``rate`` per second; every command a client
  sends (pongs excepted) takes one;
- a command that finds the bucket empty is refused: error 111 "too many requests" (temporary, so the SDKs
  retry it later) if it has an id, silently dropped if it has none (``send``);
- a connection that goes on sending while refused is flooding: when ``burst`` commands in a row have been
  refused (another whole burst sent into an empty bucket, e.g. one frame carrying far more than the burst),
  it is closed with 3013 "too many requests" (the client reconnects, with its SDK's back-off).

One admitted command resets the streak: a client that waits for its tokens never reaches 3013.
"""

from __future__ import annotations

import enum

_EPSILON = 1e-9
"""Refill is computed in floats: a client exactly at the rate must not lose a token to rounding."""


class Verdict(enum.Enum):
    ADMIT = "admit"
    REFUSE = "refuse"
    FLOOD = "flood"


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        """Take one token if there is one. A clock that goes backwards adds nothing."""
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1.0 - _EPSILON:
            self.tokens -= 1.0
            return True
        return False


class CommandLimiter:
    """A connection's command budget: the bucket, plus the streak of refusals that marks a flood."""

    __slots__ = ("bucket", "refused", "flood_after")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.bucket = TokenBucket(rate, burst, now)
        self.refused = 0
        """Commands refused since the last admitted one."""
        self.flood_after = burst

    def admit(self, now: float) -> Verdict:
        if self.bucket.take(now):
            self.refused = 0
            return Verdict.ADMIT
        self.refused += 1
        return Verdict.FLOOD if self.refused >= self.flood_after else Verdict.REFUSE
