"""Events out, the hub's side: what happened on the hub (publications, channels occupied and vacated,
clients connected and disconnected, documents changed) goes into the inbox store's transactional outbox,
and the server API shows and replays the deliveries. The deliveries themselves (webhooks, email) are
``workers/``'s.

Layout: ``settings`` (the ``[[webhooks]]`` and ``[email]`` config), ``routes`` (which destination wants
which event: the store's router, and the cheap checks the hot path makes before building an event),
``tap`` (the hub's events, batched per loop tick into ``InboxStore.append``), ``debounce`` (document
changes, per document), ``api`` (the server API's ``webhook_*`` methods).

Policy: nothing is built, and nothing written to the database, for an event no configured destination
wants; without webhooks and email the hot path makes one attribute check per event. The events of the
inbox itself (``notification.created``, ``inbox.changed``) are appended by the inbox store in the same
transaction as the change (at least once from there on); the hub's own events are appended after the fact,
once per loop tick, and a node that dies before the append loses the events of that tick.

Error tree: ``hub.codes.ConfigError`` for bad settings (at start-up); the server API methods answer with
the API's error codes.
"""
