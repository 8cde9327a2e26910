"""The sensor dashboard demo's feed: simulated readings of a few plant sensors, in development mode only.

What ``/demo/sensors`` subscribes to is ``SENSORS_CHANNEL`` (``sensors:plant``) in development mode's
``sensors`` namespace (``hub.config.DEV_SENSORS_OPTIONS``: one channel, a key per sensor, conflated, the
latest of every sensor on subscribe, fossil deltas). ``Simulator`` publishes into it through
``Node.publish_to`` (the way every reading comes in) so the page shows what a real feed shows.

Policies:

- Development mode only (the ``Demos`` that own it are enabled only there), and only when the namespace is
  there (a configuration that replaced it turns the simulator off, with one log line).
- A bounded rate: ``RATE`` readings a second in all (each a sensor's next value, in turn), whatever the
  number of pages open; one reading is about 150 bytes. Nothing it keeps grows: one value per sensor.
- ``readings`` is a pure function of the step number and the time, so the values are reproducible in
  tests: each sensor is a slow wave plus a small wobble around its base value.
- ``pause``/``resume`` stop and restart the feed (the browser test opens a page while it is paused, to
  see that the latest value of every sensor comes from the hub's cache, not from new readings).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from channels.errors import InvalidChannel, UnknownNamespace
from channels.names import parse_channel
from channels.publication import ClientInfo
from hub import codec_json
from hub.codes import ClientError
from hub.config import DEV_SENSORS_NAMESPACE
from hub.logs import log_limited

if TYPE_CHECKING:
    from hub.node import Node

log = logging.getLogger("switchboard.demos")

SENSORS_CHANNEL = DEV_SENSORS_NAMESPACE + ":plant"
RATE = 12.0
"""Readings a second the simulator publishes, in all."""
INFO = ClientInfo("", "simulator")


@dataclass(frozen=True, slots=True)
class Sensor:
    key: str
    name: str
    unit: str
    base: float
    swing: float
    period: float
    """Seconds of one slow wave."""


SENSORS = (
    Sensor("boiler-temp", "Boiler temperature", "°C", 72.0, 9.0, 40.0),
    Sensor("boiler-pressure", "Boiler pressure", "bar", 4.2, 0.6, 55.0),
    Sensor("pump-flow", "Pump flow", "m³/h", 18.0, 4.0, 30.0),
    Sensor("tank-level", "Tank level", "%", 61.0, 15.0, 90.0),
    Sensor("line-power", "Line 3 power", "kW", 140.0, 35.0, 25.0),
    Sensor("hall-humidity", "Hall humidity", "%RH", 46.0, 6.0, 70.0),
)


def reading(step: int, now: float) -> dict[str, Any]:
    """The ``step``-th reading (sensors in turn) at ``now`` (seconds since the epoch)."""
    sensor = SENSORS[step % len(SENSORS)]
    wave = math.sin(2 * math.pi * now / sensor.period)
    wobble = math.sin(step * 12.9898) * 0.08  # a deterministic jitter in [-0.08, 0.08]
    value = sensor.base + sensor.swing * (wave + wobble)
    return {
        "sensor": sensor.key,
        "name": sensor.name,
        "unit": sensor.unit,
        "value": round(value, 2),
        "time": int(now * 1000),
    }


class Simulator:
    """Publishes ``reading``s into ``SENSORS_CHANNEL`` at ``RATE`` a second while started and not paused."""

    def __init__(self, node: Node, rate: float = RATE) -> None:
        self.node = node
        self.interval = 1.0 / rate
        self.step = 0
        self.published = 0
        self.latest: dict[str, dict[str, Any]] = {}
        """The last reading published of each sensor (one per sensor in ``SENSORS``)."""
        self.running = asyncio.Event()
        self.running.set()
        self._parked = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        try:
            self.channel = parse_channel(SENSORS_CHANNEL)
            self.opts = self.node.namespaces.options_for(self.channel)
        except (InvalidChannel, UnknownNamespace):
            log.info("sensor demo: no %r namespace, so no simulated readings", DEV_SENSORS_NAMESPACE)
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def pause(self) -> None:
        """Stop publishing; returns once no reading is on its way (``latest`` holds still)."""
        self.running.clear()
        if self._task is not None:
            await self._parked.wait()

    async def until(self, published: int) -> None:
        """Return once ``published`` readings were published in all (what tests wait on)."""
        while self.published < published:
            self._progress.clear()
            await self._progress.wait()

    def resume(self) -> None:
        self.running.set()

    async def publish_one(self) -> None:
        value = reading(self.step, time.time())
        self.step += 1
        try:
            await self.node.publish_to("", self.channel, self.opts, codec_json.data_bytes(value), info=INFO)
            self.published += 1
            self.latest[value["sensor"]] = value
            self._progress.set()
        except ClientError as exc:  # the broker away: the next reading tries again
            log_limited(log, logging.WARNING, "sensor demo reading not published: %s", exc)

    async def _run(self) -> None:
        while True:
            if not self.running.is_set():
                self._parked.set()
                await self.running.wait()
                self._parked.clear()
            await self.publish_one()
            await asyncio.sleep(self.interval)
