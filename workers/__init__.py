"""Background processes that act on the hub from outside a request: webhook and email deliveries from the
outbox (``outbox``: the claim loop; ``webhook``, ``email``: the senders; ``process``: in a node or as
``switchboard worker``). They may import ``hub``, ``channels``, ``sync`` and ``inbox``; only the
composition root (``hub/app.py``) and the CLI import them, lazily.
"""
