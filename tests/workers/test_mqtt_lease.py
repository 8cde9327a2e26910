"""One MQTT bridge per deployment: candidates (nodes, ``switchboard worker``) share a lease in Redis; one
bridges, another takes over when it dies or stops; a worker process runs the bridge for nodes that do not.
Against a real Mosquitto and a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hub.codes import ConfigError
from hub.config import load_config
from tests.conftest import TIMEOUT, RunningHub, http_client
from tests.mqtt_broker import Mosquitto
from tests.nodes import ROOT, STARTUP_TIMEOUT, eventually
from tests.redis_servers import RedisServer
from tests.workers.test_mqtt import KEY, bridge_config, history, mqtt_client
from workers.lease import Leader

TTL = 0.6


def candidate(broker: Mosquitto, redis: RedisServer, name: str, **overrides: Any) -> Any:
    overrides.setdefault("mqtt_lease_ttl", TTL)
    return dataclasses.replace(bridge_config(broker), redis_urls=[redis.url], node_name=name, **overrides)


async def send(broker: Mosquitto, n: int) -> None:
    async with mqtt_client(broker) as device:
        await device.publish(f"plant/p{n}/temperature", f'{{"t": {n}}}'.encode(), qos=1)


async def test_two_candidates_one_bridges_and_the_other_takes_over_when_it_dies(
    make_hub: Any, mosquitto: Mosquitto, redis_server: RedisServer
) -> None:
    hubs: list[RunningHub] = [await make_hub(candidate(mosquitto, redis_server, n)) for n in ("a", "b")]
    active = [h for h in hubs if h.sb.mqtt_leader.active]
    assert len(active) == 1  # the first to claim; the other stands by
    first, other = active[0], next(h for h in hubs if h is not active[0])
    assert other.sb.node.feed_metrics.mqtt_bridge_active == 0
    async with asyncio.timeout(TIMEOUT):
        await first.sb.mqtt.connected.wait()
    await send(mosquitto, 1)

    async def one() -> bool:
        return await history(first, "sensors:plant.p1.temperature") == [{"t": 1}]

    await eventually(one)
    # the first dies: no shutdown, its lease left to run out (its bridge's link is cut as a crash cuts it)
    assert first.sb.mqtt_leader._task is not None
    other.sb.mqtt_leader.changed.clear()
    first.sb.mqtt_leader._task.cancel()
    died = time.monotonic()
    await first.sb.mqtt.close()
    async with asyncio.timeout(TIMEOUT):
        await other.sb.mqtt_leader.changed.wait()
    assert other.sb.mqtt_leader.active
    assert time.monotonic() - died >= TTL * 0.5  # not before the lease could have run out
    async with asyncio.timeout(TIMEOUT):
        await other.sb.mqtt.connected.wait()
    await send(mosquitto, 2)

    async def two() -> bool:
        return await history(other, "sensors:plant.p2.temperature") == [{"t": 2}]

    await eventually(two)
    await asyncio.sleep(TTL)  # a second bridge would have published it twice by now
    assert await history(other, "sensors:plant.p2.temperature") == [{"t": 2}]
    async with http_client(timeout=TIMEOUT) as http:
        text = (await http.get(f"{other.http}/metrics")).text
    assert "switchboard_mqtt_bridge_active 1.0" in text


async def test_a_stopped_candidate_hands_over_at_once(
    make_hub: Any, mosquitto: Mosquitto, redis_server: RedisServer
) -> None:
    hubs: list[RunningHub] = [
        await make_hub(candidate(mosquitto, redis_server, n, mqtt_lease_ttl=30.0)) for n in ("a", "b")
    ]
    first = next(h for h in hubs if h.sb.mqtt_leader.active)
    other = next(h for h in hubs if h is not first)
    assert not other.sb.mqtt_leader.active
    await first.sb.mqtt_leader.stop()  # released: the other takes it at its next claim, not after 30 s
    assert first.sb.node.feed_metrics.mqtt_bridge_active == 0
    assert await other.sb.mqtt_leader.step()


class Unreachable:
    holder = "me"

    def __init__(self) -> None:
        self.down = False

    async def claim(self) -> bool:
        if self.down:
            raise ConnectionError("redis down")
        return True

    async def release(self) -> None:
        raise ConnectionError("redis down")


async def test_a_holder_that_cannot_renew_stops_before_its_lease_could_pass_to_another() -> None:
    lease = Unreachable()
    runs: list[str] = []

    async def start() -> None:
        runs.append("start")

    async def stop() -> None:
        runs.append("stop")

    leader = Leader("test", lease, start, stop, ttl=TTL)
    assert await leader.step() and runs == ["start"]
    claimed = time.monotonic()
    lease.down = True
    # unknown: still ours until 2/3 of the TTL after the last claim began (its own clock is what is tested)
    while await leader.step():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    assert TTL * 2 / 3 <= time.monotonic() - claimed < TTL
    assert runs == ["start", "stop"]
    await leader.stop()  # the release fails: logged, nothing raised
    with pytest.raises(ValueError, match="positive"):
        Leader("test", lease, start, stop, ttl=0)


@pytest.mark.parametrize("ttl", ["0.1", "7200", '"soon"', "-1"])
def test_a_lease_ttl_out_of_bounds_is_refused(tmp_path: Path, ttl: str) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(f'token_hmac_secret_key = "x"\nmqtt_lease_ttl = {ttl}\n')
    with pytest.raises(ConfigError, match="mqtt_lease_ttl"):
        load_config(path, env={})


def worker_config(path: Path, broker: Mosquitto, redis: RedisServer) -> Path:
    path.write_text(
        f"""\
token_hmac_secret_key = "x"
api_key = "{KEY}"
redis_urls = ["{redis.url}"]
mqtt_lease_ttl = {TTL}

[[namespaces]]
name = "sensors"
history_size = 100
history_ttl = 300

[mqtt]
url = "{broker.url}"
reconnect_min = "50ms"
reconnect_max = "500ms"

[[mqtt.subscribe]]
topic = "plant/+/temperature"
channel = "sensors:plant.{{1}}.temperature"
"""
    )
    return path


async def test_switchboard_worker_runs_the_bridge_for_nodes_that_do_not(
    make_hub: Any, mosquitto: Mosquitto, redis_server: RedisServer, tmp_path: Path
) -> None:
    node = await make_hub(candidate(mosquitto, redis_server, "web", mqtt_enabled=False))
    assert node.sb.mqtt_leader is None
    config = worker_config(tmp_path / "worker.toml", mosquitto, redis_server)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    log = (tmp_path / "worker.log").open("ab")
    command = [sys.executable, "-m", "hub", "worker", "--config", str(config), "--data-dir", str(tmp_path)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)  # noqa: ASYNC220 - returns at once
    try:

        async def bridged() -> bool:
            await send(mosquitto, 5)  # QoS 1 to the broker; the bridge takes what arrives once it runs
            return await history(node, "sensors:plant.p5.temperature") != []

        try:  # the worker imports the hub and connects first: as long as a node takes to start
            await eventually(bridged, within=STARTUP_TIMEOUT, every=0.3)
        except TimeoutError:
            raise AssertionError((tmp_path / "worker.log").read_text()[-3000:]) from None
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    text = (tmp_path / "worker.log").read_text()
    assert "mqtt bridge runs here" in text, text
