"""The hub's side of notifications (``inbox/`` is the store): personal channels, the ``inbox.*`` RPC
methods, the server API's inbox methods, and the pushes that keep every device's badge exact.

- ``personal``: personal channels and the one-connection-per-user rule (Centrifugo's options).
- ``service``: ``Notifications``, what the RPC and API methods and ``Switchboard.notify`` call: it runs
  the store's change, then pushes the new counts (and, for a notify, the new item) to the user's personal
  channel through the broker, so every node's connections of that user get them; and it tracks which
  pushes reached a connected device (in-app ``delivered``).
- ``rpc``: ``inbox.list``, ``inbox.counts``, ``inbox.mark``, ``inbox.preferences.get``/``set`` over the
  Centrifuge ``rpc`` command.
- ``api``: ``notify``, ``inbox_list``, ``inbox_counts``, ``inbox_mark``, ``preferences``,
  ``notification_status`` in the server API.
- ``expiry``: the periodic sweep of expired items, whose new counts are pushed like any change.

This module imports nothing: ``hub.node`` imports ``personal`` while the others import ``hub.node``.

Errors: the store's (``inbox.errors``) become protocol errors in one place (``service.client_error``):
``InvalidInput`` (and ``InvalidCursor``, ``NotFound``) 107 with the reason, ``StoreError`` 100 (temporary).
"""
