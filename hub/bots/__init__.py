"""Bots: connections that the hub marks as bots, and RPC methods served by them.

- ``identity``: who is a bot (the token's ``bot`` claim, signed with ``bot_token_hmac_secret_key``; see
  ``hub.auth``), how others see it (``"bot": true`` first in its ``conn_info``) and its own limits.
- ``routes``: the prefixes bot connections serve and the calls waiting for their replies (sans-I/O).
- ``service``: ``Bots``, the ``bot.*`` RPC methods and the routing of calls to a bot connection on any
  node (through the control channel's surveys, ``hub.control``).

Errors are the protocol's (``hub.codes.ClientError``): this package adds no exception of its own, only
``routes.LimitReached`` (a ``ValueError``), which ``service`` answers with 106.
"""
