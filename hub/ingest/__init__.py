"""Readings in from collectors: ``POST /ingest/influx`` (and InfluxDB 2's ``/api/v2/write``) for the Influx
line protocol, ``POST /ingest/jsonl`` for JSON lines.

Layout: ``settings`` (the ``[ingest]`` config table: line-protocol routes), ``body`` (a bounded body,
inflated a step at a time), ``endpoint`` (admission, chunked parsing and pipelined publishing, the
answers Telegraf understands), ``metrics`` (the feed counters of a node: ingest, MQTT bridge, alerts,
refused data). The parsers themselves are sans-I/O in ``channels.ingest`` and ``channels.lineprotocol``.

Errors::

    Exception
     +-- BodyRefused    (body) the request cannot be taken whole: its HTTP status and why
     +-- Unavailable    (endpoint) the broker cannot take publications: 503, what was taken stays
    hub.codes.ConfigError  a bad [ingest] table (at start-up)

A line that cannot be taken is never an exception: it is listed in the answer with its reason.
"""
