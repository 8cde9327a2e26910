"""Background processes that act on the hub from outside a request: document compaction, webhook
deliveries, inbox maintenance. They may import ``hub``, ``channels`` and ``sync``; nothing imports them.
"""
