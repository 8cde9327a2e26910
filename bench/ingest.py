"""Ingest benchmark (issue 12, "Ingest: points per second per core through POST /ingest (line protocol) and
through the MQTT bridge"), with a baseline from the same run.

One `python -m hub serve` (memory broker, a config written by this script) and one `mosquitto` of our own
(free loopback port, never the system's), then the same points, one phase after the other:

  api-batch     the server API: POST /api/batch, 5,000 publish commands a request (the baseline: what
                a collector does without the ingest endpoint);
  influx        POST /ingest/influx, Telegraf-sized batches of 5,000 line-protocol points;
  influx-gzip   the same, gzipped (Telegraf's content_encoding = "gzip");
  jsonl         POST /ingest/jsonl, 5,000 JSON lines a request;
  mqtt          one MQTT message a point (QoS 1, JSON), published to mosquitto, bridged by the hub.

Points: measurement "cpu", 100 hosts (a channel each: bench:cpu.h<i>), fields usage_user, usage_system
(floats), idle (integer), a nanosecond timestamp. Nobody subscribes: this is the cost of taking a point in
and publishing it, not of delivering it.

Per phase: points/s (wall clock, requests one after the other as one Telegraf output sends them), the hub's
CPU per point (sum of /proc/<pid>/task/*/schedstat over the server's process tree, bench/procstat.py) and
points per CPU-second (= per core), and the longest answer to GET /health from a prober asking every 10 ms
during the phase (how long the event loop was held at worst, as a client sees it). MQTT also gives
mosquitto's CPU per point.

The machine has 2 vCPUs shared with other work: run it nice and read the CPU figures (not the wall clock)
and the ratios against api-batch of the same run.

usage: nice .venv/bin/python bench/ingest.py [--points 50000] [--batch 5000] [--phases api-batch,influx,...]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import httpx
import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import procstat  # noqa: E402
from fanout import free_port, hub_argv, stop_server, wait_ready  # noqa: E402

KEY = "bench-ingest-key"
HOSTS = 100
PHASES = ("api-batch", "influx", "influx-gzip", "jsonl", "mqtt")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def hub_config(mqtt_port: int) -> str:
    return f"""
token_hmac_secret_key = "bench-secret-bench-secret-bench-secret"
api_key = "{KEY}"
log_level = "warning"
ingest_max_concurrent = 4

[[namespaces]]
name = "bench"

[[ingest.line_protocol]]
channel = "bench:{{measurement}}.{{tag:host}}"

[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
max_queue = 100000
[[mqtt.subscribe]]
topic = "bench/+/+"
channel = "bench:{{2}}.{{1}}"
"""


def points(n: int) -> list[tuple[str, dict, int]]:
    """(host, fields, time in ns) for n points."""
    base = 1_700_000_000_000_000_000
    return [
        (f"h{i % HOSTS}", {"usage_user": i % 97 + 0.25, "usage_system": 3.5, "idle": i}, base + i * 1000)
        for i in range(n)
    ]


def line(host: str, fields: dict, t: int) -> str:
    values = f"usage_user={fields['usage_user']},usage_system={fields['usage_system']},idle={fields['idle']}i"
    return f"cpu,host={host} {values} {t}"


def bodies(phase: str, pts: list, batch: int) -> list[tuple[str, bytes, dict[str, str]]]:
    """(path, body, headers) per request."""
    out = []
    for start in range(0, len(pts), batch):
        chunk = pts[start : start + batch]
        if phase == "api-batch":
            cmds = [
                {"publish": {"channel": f"bench:cpu.{h}", "data": {**f, "time": t // 1_000_000}}}
                for h, f, t in chunk
            ]
            out.append(("/api/batch", orjson.dumps({"commands": cmds}), {"Content-Type": "application/json"}))
        elif phase in ("influx", "influx-gzip"):
            text = "\n".join(line(*p) for p in chunk).encode()
            if phase == "influx-gzip":
                out.append(("/ingest/influx", gzip.compress(text), {"Content-Encoding": "gzip"}))
            else:
                out.append(("/ingest/influx", text, {}))
        elif phase == "jsonl":
            text = b"\n".join(
                orjson.dumps({"channel": f"bench:cpu.{h}", "data": {**f, "time": t // 1_000_000}})
                for h, f, t in chunk
            )
            out.append(("/ingest/jsonl", text, {}))
    return out


class Prober(threading.Thread):
    """GET /health every 10 ms; the longest answer is how long the loop was held at worst."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.worst = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.stop.wait(0.01):
                t = time.perf_counter()
                http.get(f"http://127.0.0.1:{self.port}/health")
                self.worst = max(self.worst, time.perf_counter() - t)


def published(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for raw in r.read().decode().splitlines():
            if raw.startswith('switchboard_mqtt_messages_total{direction="in",result="published"}'):
                return int(float(raw.split()[-1]))
    return 0


async def mqtt_publish(port: int, pts: list, window: int = 500) -> None:
    import aiomqtt

    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt counts its pending publishes at WARNING

    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="bench-device", max_inflight_messages=window
    ) as c:
        for start in range(0, len(pts), window):
            await asyncio.gather(
                *(
                    c.publish(f"bench/{h}/cpu", orjson.dumps({**f, "time": t // 1_000_000}), qos=1)
                    for h, f, t in pts[start : start + window]
                )
            )


def run_phase(phase: str, port: int, pid: int, mosq_pid: int, mqtt_port: int, pts: list, a) -> dict:
    requests = bodies(phase, pts, a.batch) if phase != "mqtt" else []
    prober = Prober(port)
    before, mosq_before = procstat.cpu(pid), procstat.cpu(mosq_pid)
    prober.start()
    t0 = time.perf_counter()
    statuses: dict[int, int] = {}
    if phase == "mqtt":
        start_count = published(port)
        asyncio.run(mqtt_publish(mqtt_port, pts))
        deadline = time.monotonic() + 120
        while published(port) - start_count < len(pts) and time.monotonic() < deadline:
            time.sleep(0.05)
        statuses[200] = published(port) - start_count
    else:
        with httpx.Client(timeout=120, headers={"X-API-Key": KEY}) as http:
            for path, body, headers in requests:
                r = http.post(f"http://127.0.0.1:{port}{path}", content=body, headers=headers)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    wall = time.perf_counter() - t0
    prober.stop.set()
    prober.join()
    after, mosq_after = procstat.cpu(pid), procstat.cpu(mosq_pid)
    cpu_s = (after["sched_ns"] - before["sched_ns"]) / 1e9
    mosq_s = (mosq_after["sched_ns"] - mosq_before["sched_ns"]) / 1e9
    n = len(pts)
    return {
        "phase": phase,
        "points": n,
        "statuses": statuses,
        "wall_s": wall,
        "points_per_s": n / wall,
        "cpu_s": cpu_s,
        "cpu_us_per_point": cpu_s / n * 1e6,
        "points_per_cpu_s": n / cpu_s if cpu_s else None,
        "worst_health_ms": prober.worst * 1000,
        "mosquitto_cpu_us_per_point": mosq_s / n * 1e6 if phase == "mqtt" else None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=5_000)
    p.add_argument("--phases", default=",".join(PHASES))
    a = p.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-ingest-")
    mqtt_port, port = free_port(), free_port()
    with open(os.path.join(workdir, "mosquitto.conf"), "w") as f:
        f.write(
            f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_inflight_messages 1000\n"
        )
    mosq = subprocess.Popen(
        [MOSQUITTO, "-c", os.path.join(workdir, "mosquitto.conf")], stderr=subprocess.DEVNULL
    )
    config = os.path.join(workdir, "hub.toml")
    with open(config, "w") as f:
        f.write(hub_config(mqtt_port))
    time.sleep(0.3)  # mosquitto starts listening (the hub's bridge reconnects anyway)
    hub = subprocess.Popen(
        hub_argv(port, config, data_dir=workdir),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(workdir, "hub.log"), "wb"),
    )
    results = []
    try:
        why = wait_ready(hub, port, 30)
        if why:
            print("hub not ready:", why, open(os.path.join(workdir, "hub.log")).read()[-2000:])
            return 1
        pts = points(a.points)
        run_phase("influx", port, hub.pid, mosq.pid, mqtt_port, pts[: a.batch], a)  # warm-up, not reported
        for phase in a.phases.split(","):
            results.append(run_phase(phase, port, hub.pid, mosq.pid, mqtt_port, pts, a))
    finally:
        stop_server(hub)
        mosq.terminate()
        mosq.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    base = next((r for r in results if r["phase"] == "api-batch"), None)
    print(f"{a.points} points, batches of {a.batch}, one request at a time; CPU = the hub's schedstat")
    print(
        f"{'phase':<12} {'points/s':>10} {'CPU us/pt':>10} {'pts/CPU-s':>10} {'vs api':>7} "
        f"{'worst /health':>14}  answers"
    )
    for r in results:
        vs = (
            f"{base['cpu_us_per_point'] / r['cpu_us_per_point']:.2f}x"
            if base and r["cpu_us_per_point"]
            else "-"
        )
        extra = (
            f"  mosquitto {r['mosquitto_cpu_us_per_point']:.1f} us/pt"
            if r["mosquitto_cpu_us_per_point"]
            else ""
        )
        print(
            f"{r['phase']:<12} {r['points_per_s']:>10,.0f} {r['cpu_us_per_point']:>10.1f} "
            f"{r['points_per_cpu_s'] or 0:>10,.0f} {vs:>7} {r['worst_health_ms']:>11.1f} ms"
            f"  {r['statuses']}{extra}"
        )
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", f"ingest-{int(time.time())}.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
