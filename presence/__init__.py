"""Presence: who is subscribed to a channel, across every node of the hub.

Imports ``channels`` only (never ``sync`` nor ``hub``).

Error tree::

    PresenceError
     +-- PresenceUnavailable   the backend cannot answer now
"""

from presence.presence import PresenceError, PresenceManager, PresenceStats, PresenceUnavailable

__all__ = ["PresenceError", "PresenceManager", "PresenceStats", "PresenceUnavailable"]
