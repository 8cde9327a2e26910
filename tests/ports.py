"""Free loopback ports for the servers the tests start (redis-server, PostgreSQL, Mosquitto, hub nodes).

A port is chosen below Linux's ephemeral range (32768-60999 by default), from which the kernel hands a port
to every outgoing connection and to every ``bind(("127.0.0.1", 0))``: a port found free there and closed
again can be taken by some client's socket before the server binds it, a race that grows with the number
of connections the suite makes at once. Here the ports come from ``PORTS``, split among pytest-xdist
workers (``PYTEST_XDIST_WORKER``), so two workers of one run never choose the same port, chosen at random
(other test runs on the machine) and checked by binding it.
"""

from __future__ import annotations

import os
import random
import socket

PORTS = range(10_000, 32_768)
_random = random.Random()  # not the global one: Hypothesis seeds that for its examples


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def worker_ports() -> range:
    """This worker's share of ``PORTS`` (all of it outside pytest-xdist)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    share = len(PORTS) // max(count, 1)
    return PORTS[index * share : (index + 1) * share]


def free_port(*, cluster_bus: bool = False) -> int:
    """A loopback port nobody listens on; with ``cluster_bus`` also port + 10000 (Redis Cluster's bus)."""
    ports = worker_ports()
    for _ in range(200):
        port = _random.choice(ports)
        if _bindable(port) and (not cluster_bus or _bindable(port + 10_000)):
            return port
    raise RuntimeError("no free port found")
