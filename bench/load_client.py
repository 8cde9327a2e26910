"""Fan-out load client for bench/fanout.py. One process (uvloop + picows) holds N subscribers
and one publisher. The publisher always speaks Centrifuge protocol v2 JSON over a WebSocket; the
subscribers speak what --transport names:

  json      WebSocket, JSON text frames (replies/pushes separated by "\\n"; `{}` ping, `{}` pong);
  protobuf  WebSocket with subprotocol `centrifuge-protobuf`: binary frames, each a sequence of
            varint-length-delimited Reply messages (client.proto); an empty Reply is a ping,
            answered with an empty Command. Commands are built with centrifuge-python's
            generated client_pb2; pushes are walked by hand (see PbSub.handle);
  sse       GET /connection/uni_sse?cf_connect={"token": ...}: plain HTTP/1.1 over an asyncio
            socket, Server-Sent Events in a chunked body. The token's `channels` claim makes the
            server subscribe the connection (--token, minted by fanout.py).

Steps, each bounded in time:
  1. read the server's RSS (tree), connect N subscribers (connect, then subscribe to the channel);
  2. idle for --idle-s, read RSS again  -> idle KB per connection;
  3. connect the publisher; warm up (closed loop, --warmup-s, not recorded);
  4. "steady": open loop, --rate deliveries/s (i.e. rate/N publications/s) for --steady-s,
     then drain; server CPU, latency percentiles, per-subscriber delivery check;
  5. "saturate": closed loop with W = max(2, ceil(--window-deliveries/N)) publications in
     flight for --sat-s, then drain; max deliveries/s and server CPU per delivery.
Each publication carries {"ts": time.time_ns(), "seq": k, "d": "xxx..."}; latency = receive
time_ns - ts. A delivery = one publication received by one subscriber (a frame or chunk may
carry several). Prints one JSON object per line: phases idle, steady, saturate, then a "client"
summary. Exit status 0 only if every step completed.

A server that does not speak the transport asked for (a hub without its Protobuf codec answers
a `centrifuge-protobuf` client in JSON, or closes it when it cannot read the binary connect)
is a failure, reported in the "client" row's "error" before anything is measured.

Several nodes (bench/cluster.py; JSON subscribers only): --sub-urls spreads the subscribers round-robin
over several nodes (the publisher stays on --url), --server-pid takes a comma list of process trees whose
CPU and RSS are summed (the nodes), --redis-pid a comma list of Redis servers whose CPU is reported
beside it (redis_cpu_*), and --channels C spreads the subscribers over C channels (--channel + "0".."C-1",
subscriber i on channel (i // len(sub-urls)) % C, so every channel has subscribers on every node; N must be a
multiple of C) and the publisher over them round-robin. Then a publication reaches N/C subscribers, and
"N" in the steps above means N/C: --rate deliveries/s is rate/(N/C) publications/s, W counts
--window-deliveries/(N/C) publications. Without these options nothing changes.

usage: python bench/load_client.py --url ws://127.0.0.1:P/connection/websocket --n 1000 --server-pid PID
       [--transport json|protobuf|sse] [--token JWT]
       [--sub-urls URL,URL,...] [--server-pid PID,PID,...] [--redis-pid PID,...] [--channels C]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import re
import resource
import sys
import time
import urllib.parse

import orjson
from picows import WSCloseCode, WSListener, WSMsgType, ws_connect

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procstat  # noqa: E402

TEXT = WSMsgType.TEXT
BINARY = WSMsgType.BINARY
CONT = WSMsgType.CONTINUATION
CLOSE = WSMsgType.CLOSE
time_ns = time.time_ns
TS_RE = re.compile(rb'"ts":\s*(\d+)')
INF = 1 << 62

BUCKET_NS = 50_000  # latency histogram: 0.05 ms buckets up to 30 s
NB = 600_000
hist = [0] * NB

# ---- hot-path state (module globals) ----
N = 1
FANOUT = 1  # subscribers per channel (N // --channels): deliveries per publication
W = 2
RECORD = False
DELIVERED = 0  # deliveries in the current phase (all subscribers)
PUBLISHED = 0  # publications in the current phase
PUMP_AT = INF  # closed loop: pump() when DELIVERED reaches this
DONE_AT = INF  # drain: set done_fut when DELIVERED reaches this
STOPPED = True
done_fut: asyncio.Future | None = None
last_rx_ns = 0
PUB_T = None
CHANNEL = b"bench"
CHANNELS = [CHANNEL]  # --channels > 1: the publisher goes round-robin over these
PUB_COUNTS = [0]  # publications per channel in the current phase
PAD = b""
SEQ = 0
CMD_IDS = itertools.count(100)

SUBSCRIBED = 0
FAILED = 0
CLOSING = False
MISMATCH: str | None = None  # the server does not speak the subscribers' transport: why
ST = {
    "slow_path_deliveries": 0,
    "other_pushes": 0,
    "pings": 0,
    "fragmented": 0,
    "disconnects": 0,
    "close_codes": {},
    "errors": [],
    "bad_json": 0,
    "pub_ok": 0,
    "pub_err": 0,
    "unknown_replies": 0,
}


def note_error(what: str) -> None:
    if len(ST["errors"]) < 20:
        ST["errors"].append(what[:300])


def publish() -> None:
    global PUBLISHED, SEQ
    PUBLISHED += 1
    SEQ += 1
    i = SEQ % len(CHANNELS)
    PUB_COUNTS[i] += 1
    PUB_T.send(
        TEXT,
        b'{"id":%d,"publish":{"channel":"%s","data":{"ts":%d,"seq":%d,"d":"%s"}}}'
        % (next(CMD_IDS), CHANNELS[i], time_ns(), SEQ, PAD),
    )


def pump() -> None:
    """Closed loop: keep W publications in flight (published - delivered//FANOUT <= W)."""
    global PUMP_AT
    if STOPPED:
        PUMP_AT = INF
        return
    limit = DELIVERED // FANOUT + W
    while PUBLISHED < limit:
        publish()
    PUMP_AT = (PUBLISHED - W + 1) * FANOUT


def finish() -> None:
    global DONE_AT
    DONE_AT = INF
    if done_fut is not None and not done_fut.done():
        done_fut.set_result(None)


def count(sub, k: int, now: int, stamps) -> None:
    """Slow-path accounting (the fast path in Sub.handle inlines the same)."""
    global DELIVERED, last_rx_ns
    if RECORD:
        for ts in stamps:
            b = (now - int(ts)) // BUCKET_NS
            hist[b if 0 <= b < NB else (NB - 1 if b >= NB else 0)] += 1
    sub.count += k
    DELIVERED += k
    last_rx_ns = now
    if DELIVERED >= PUMP_AT:
        pump()
    if DELIVERED >= DONE_AT:
        finish()


def is_ping_in(p: bytes) -> bool:
    return p == b"{}" or (b"\n" in p and b"{}" in p.split(b"\n"))


class Sub(WSListener):
    def __init__(self, ch: int = 0):
        super().__init__()
        self.ch = ch  # index into CHANNELS
        self.t = None
        self.state = 0  # 0 connect sent, 1 subscribe sent, 2 subscribed, -1 failed
        self.count = 0
        self.frags = None

    def on_ws_connected(self, transport):
        self.t = transport
        transport.send(TEXT, b'{"id":1,"connect":{}}')

    def on_ws_frame(self, transport, frame):
        if frame.msg_type == TEXT and frame.fin:
            self.handle(transport, frame.get_payload_as_bytes())
        else:
            on_other_frame(self, transport, frame)

    def handle(self, t, p: bytes) -> None:
        global DELIVERED, last_rx_ns
        if self.state == 2:
            stamps = TS_RE.findall(p)
            if stamps:
                now = time_ns()
                if RECORD:
                    for ts in stamps:
                        b = (now - int(ts)) // BUCKET_NS
                        hist[b if b < NB else NB - 1] += 1
                k = len(stamps)
                self.count += k
                DELIVERED += k
                last_rx_ns = now
                if DELIVERED >= PUMP_AT:
                    pump()
                if DELIVERED >= DONE_AT:
                    finish()
                if b"\n{}" in p or p.startswith(b"{}\n"):
                    ST["pings"] += 1
                    t.send(TEXT, b"{}")
                return
        self.slow(t, p)

    def slow(self, t, p: bytes) -> None:
        global SUBSCRIBED, FAILED
        for line in p.split(b"\n"):
            line = line.strip()
            if not line:
                continue
            if line == b"{}":
                ST["pings"] += 1
                t.send(TEXT, b"{}")
                continue
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError:
                ST["bad_json"] += 1
                continue
            if msg.get("id"):
                if "error" in msg:
                    note_error(f"sub state {self.state}: {line[:200]!r}")
                    if self.state in (0, 1):
                        self.state = -1
                        FAILED += 1
                elif self.state == 0 and "connect" in msg:
                    self.state = 1
                    t.send(TEXT, b'{"id":2,"subscribe":{"channel":"%s"}}' % CHANNELS[self.ch])
                elif self.state == 1 and "subscribe" in msg:
                    self.state = 2
                    SUBSCRIBED += 1
                else:
                    ST["unknown_replies"] += 1
                continue
            push = msg.get("push")
            if not isinstance(push, dict):
                ST["other_pushes"] += 1
                continue
            pub = push.get("pub")
            data = pub.get("data") if isinstance(pub, dict) else None
            if self.state == 2 and isinstance(data, dict) and "ts" in data:
                ST["slow_path_deliveries"] += 1
                count(self, 1, time_ns(), (data["ts"],))
            elif "disconnect" in push:
                note_error(f"disconnect push: {line[:200]!r}")
            else:
                ST["other_pushes"] += 1

    def on_ws_disconnected(self, transport):
        sub_lost(self)

    def close(self) -> None:
        ws_close(self.t)


def sub_lost(sub) -> None:
    """A subscriber's connection ended. Before it was subscribed, that is a failure of the cell."""
    global FAILED
    if CLOSING:
        return
    ST["disconnects"] += 1
    if sub.state in (0, 1):
        if MISMATCH is None:
            note_error(
                f"subscriber closed by the server before it was subscribed "
                f"({'connect' if sub.state == 0 else 'subscribe'} sent)"
            )
        sub.state = -1
        FAILED += 1


def ws_close(t) -> None:
    if t is not None:
        try:
            t.send_close(WSCloseCode.OK)
            t.disconnect()
        except Exception:  # noqa: BLE001 - already closed
            pass


def on_other_frame(listener, t, frame) -> None:
    mt = frame.msg_type
    if mt == CLOSE:
        code = int(frame.get_close_code())
        if not CLOSING:
            key = f"{code} {frame.get_close_reason()}"
            ST["close_codes"][key] = ST["close_codes"].get(key, 0) + 1
        t.send_close(frame.get_close_code())
        t.disconnect()
    elif mt in (TEXT, BINARY, CONT):
        ST["fragmented"] += 1
        if listener.frags is None:
            listener.frags = []
        listener.frags.append(frame.get_payload_as_bytes())
        if frame.fin:
            p = b"".join(listener.frags)
            listener.frags = None
            listener.handle(t, p)
    # PING/PONG: picows answers pings itself.


# ---------------------------------------------------------------- Protobuf subscribers

PB_SUBPROTOCOL = "centrifuge-protobuf"
PB_PONG = b"\x00"  # an empty Command, length-delimited
PB_PUSH_TAG = 0x22  # Reply field 4 (push), wire type 2: the first byte of a push reply
PB_CONNECT = PB_SUBSCRIBE = b""
pb = None  # centrifuge.protocol.client_pb2, imported for --transport protobuf


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def delimited(message: bytes) -> bytes:
    return varint(len(message)) + message


def split_delimited(p: bytes) -> list[bytes]:
    """The messages of one frame (client.proto: each prefixed by its length as a varint)."""
    out, i, n = [], 0, len(p)
    while i < n:
        size = shift = 0
        while True:
            if i >= n:
                raise ValueError("truncated length prefix")
            b = p[i]
            i += 1
            size |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > 63:
                raise ValueError("length prefix over 10 bytes")
        if i + size > n:
            raise ValueError(f"message of {size} bytes runs past the frame ({n - i} left)")
        out.append(p[i : i + size])
        i += size
    return out


def pb_setup(channel: str) -> None:
    """Build the two commands a subscriber sends (connect, subscribe) with the generated classes."""
    global pb, PB_CONNECT, PB_SUBSCRIBE
    from centrifuge.protocol import client_pb2

    pb = client_pb2
    cmd = pb.Command(id=1)
    cmd.connect.SetInParent()  # an empty ConnectRequest: anonymous connect
    PB_CONNECT = delimited(cmd.SerializeToString())
    cmd = pb.Command(id=2)
    cmd.subscribe.channel = channel
    PB_SUBSCRIBE = delimited(cmd.SerializeToString())


def pb_mismatch(sub, why: str) -> None:
    """The server does not speak Protobuf to us: fail the subscriber (and so the cell), say why."""
    global MISMATCH, FAILED
    if MISMATCH is None:
        MISMATCH = why
        note_error(why)
    if sub.state in (0, 1):
        sub.state = -1
        FAILED += 1


class PbSub(WSListener):
    """A subscriber on the Protobuf variant of the protocol."""

    def __init__(self):
        super().__init__()
        self.t = None
        self.state = 0
        self.count = 0
        self.frags = None
        self.replies = 0

    def on_ws_connected(self, transport):
        self.t = transport
        proto = transport.response.headers.get("sec-websocket-protocol")
        if proto != PB_SUBPROTOCOL:
            pb_mismatch(
                self,
                f"protobuf: the server did not accept subprotocol {PB_SUBPROTOCOL!r} "
                f"(Sec-WebSocket-Protocol: {proto!r})",
            )
            return
        transport.send(BINARY, PB_CONNECT)

    def on_ws_frame(self, transport, frame):
        mt = frame.msg_type
        if mt == BINARY and frame.fin:
            self.handle(transport, frame.get_payload_as_bytes())
        elif mt == TEXT:
            pb_mismatch(
                self,
                "protobuf: the server sent a text frame to a centrifuge-protobuf client: "
                f"{frame.get_payload_as_bytes()[:120]!r}",
            )
        else:
            on_other_frame(self, transport, frame)

    def handle(self, t, p: bytes) -> None:
        """Fast path: walk the length prefixes of the frame's replies (no decoding); every non-empty
        one must start with the push tag, and the frame must hold as many embedded `"ts":` stamps
        as pushes. Empty replies are pings. Anything else goes to the slow path, which decodes."""
        if self.state == 2:
            i, n, pushes, pings = 0, len(p), 0, 0
            try:
                while i < n:
                    size = p[i]
                    i += 1
                    if size >= 0x80:
                        size &= 0x7F
                        shift = 7
                        while True:
                            b = p[i]
                            i += 1
                            size |= (b & 0x7F) << shift
                            if b < 0x80:
                                break
                            shift += 7
                    if size == 0:
                        pings += 1
                    elif p[i] == PB_PUSH_TAG:
                        pushes += 1
                    else:
                        break
                    i += size
            except IndexError:
                pass
            if i == n:
                stamps = TS_RE.findall(p) if pushes else ()
                k = len(stamps)
                if k == pushes:
                    if k:
                        count(self, k, time_ns(), stamps)
                    if pings:
                        ST["pings"] += pings
                        t.send(BINARY, PB_PONG * pings)
                    return
        self.slow(t, p)

    def slow(self, t, p: bytes) -> None:
        global SUBSCRIBED, FAILED
        if p[:1] in (b"{", b"["):
            pb_mismatch(
                self,
                "protobuf: the server answered a centrifuge-protobuf client in JSON "
                f"({p[:120]!r}): it has no Protobuf codec",
            )
            return
        try:
            messages = [pb.Reply.FromString(m) if m else None for m in split_delimited(p)]
        except Exception as e:  # noqa: BLE001 - DecodeError or bad framing: not our protocol
            pb_mismatch(self, f"protobuf: frame is not length-delimited Reply messages ({e}): {p[:120]!r}")
            return
        for r in messages:
            if r is None:
                ST["pings"] += 1
                t.send(BINARY, PB_PONG)
                continue
            self.replies += 1
            if r.id:
                if r.HasField("error"):
                    note_error(f"sub state {self.state}: error {r.error.code} {r.error.message}")
                    if self.state in (0, 1):
                        self.state = -1
                        FAILED += 1
                elif self.state == 0 and r.HasField("connect"):
                    self.state = 1
                    t.send(BINARY, PB_SUBSCRIBE)
                elif self.state == 1 and r.HasField("subscribe"):
                    self.state = 2
                    SUBSCRIBED += 1
                else:
                    ST["unknown_replies"] += 1
                continue
            if not r.HasField("push"):
                # a Reply with neither id nor push nor an empty body: the bytes were not a Reply
                pb_mismatch(self, f"protobuf: a reply without id or push: {p[:120]!r}")
                return
            push = r.push
            if push.HasField("pub") and self.state == 2:
                try:
                    ts = orjson.loads(push.pub.data)["ts"]
                except Exception:  # noqa: BLE001 - counted, not fatal
                    ST["bad_json"] += 1
                    continue
                ST["slow_path_deliveries"] += 1
                count(self, 1, time_ns(), (ts,))
            elif push.HasField("disconnect"):
                note_error(f"disconnect push: {push.disconnect.code} {push.disconnect.reason}")
            else:
                ST["other_pushes"] += 1

    def on_ws_disconnected(self, transport):
        if self.state in (0, 1) and not CLOSING and MISMATCH is None and self.replies == 0:
            # A hub that cannot read a binary command closes with 3501 before any reply.
            pb_mismatch(
                self,
                "protobuf: the server closed the connection before answering the "
                f"Protobuf connect command (close codes so far: {ST['close_codes']})",
            )
        sub_lost(self)

    def close(self) -> None:
        ws_close(self.t)


# ---------------------------------------------------------------- SSE subscribers

SSE_REQUEST = b""  # the GET request every SSE subscriber sends (built in main)


class SseSub(asyncio.Protocol):
    """A unidirectional Server-Sent Events subscriber on a raw socket: HTTP/1.1 response head, then
    a chunked (or, if the server chose so, plain) body of events `id: ...\\ndata: <push>\\n\\n`.
    The connection's server-side subscription comes from the token's `channels` claim; the first
    event is the connect push, whose `subs` must name the channel."""

    def __init__(self):
        self.t = None
        self.state = 0  # 0 head pending, 1 connect push pending, 2 subscribed, -1 failed
        self.count = 0
        self.replies = 0
        self.head = b""
        self.chunked = False
        self.raw = b""  # chunk-framed bytes not yet decoded (an incomplete size line)
        self.chunk_left = 0  # bytes of chunk data still to come
        self.crlf_left = 0  # bytes of the CRLF after a chunk's data still to skip
        self.body = b""  # decoded bytes after the last complete event

    def connection_made(self, transport):
        self.t = transport
        transport.write(SSE_REQUEST)

    def data_received(self, data: bytes) -> None:
        if self.head is not None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 16384:
                    self.fail(f"sse: no end of the response head in {len(self.head)} bytes")
                return
            head, data = self.head[:end].decode("latin-1"), self.head[end + 4 :]
            self.head = None
            status = head.split("\r\n", 1)[0]
            if status.split(" ")[1:2] != ["200"]:
                self.fail(f"sse: {status!r}")
                return
            lower = head.lower()
            if "text/event-stream" not in lower:
                self.fail(f"sse: not an event stream: {head[:200]!r}")
                return
            self.chunked = "transfer-encoding: chunked" in lower
            self.state = 1
        if self.chunked:
            data = self.dechunk(data)
        if not data:
            return
        body = self.body + data if self.body else data
        end = body.rfind(b"\n\n")
        if end < 0:
            self.body = body
            return
        self.body = body[end + 2 :]
        self.events(body[: end + 2])

    def dechunk(self, data: bytes) -> bytes:
        """RFC 9112 7.1: chunk = chunk-size [ext] CRLF chunk-data CRLF; last-chunk = "0" CRLF."""
        buf = self.raw + data if self.raw else data
        out = []
        i, n = 0, len(buf)
        while i < n:
            if self.chunk_left:
                take = min(self.chunk_left, n - i)
                out.append(buf[i : i + take])
                i += take
                self.chunk_left -= take
                continue
            if self.crlf_left:
                take = min(self.crlf_left, n - i)
                i += take
                self.crlf_left -= take
                continue
            eol = buf.find(b"\r\n", i)
            if eol < 0:
                break
            try:
                size = int(buf[i:eol].split(b";", 1)[0], 16)
            except ValueError:
                self.fail(f"sse: bad chunk size line {buf[i:eol][:40]!r}")
                return b""
            i = eol + 2
            if size == 0:
                self.gone("sse: the server ended the stream")
                return b"".join(out)
            self.chunk_left, self.crlf_left = size, 2
        self.raw = buf[i:]
        return b"".join(out) if len(out) != 1 else out[0]

    def events(self, p: bytes) -> None:
        if self.state == 2 and b'"disconnect"' not in p:
            stamps = TS_RE.findall(p)
            if stamps:
                count(self, len(stamps), time_ns(), stamps)
            return
        self.slow(p)

    def slow(self, p: bytes) -> None:
        global SUBSCRIBED
        for ev in p.split(b"\n\n"):
            data = [ln[5:].lstrip(b" ") for ln in ev.split(b"\n") if ln.startswith(b"data:")]
            if not data:
                continue  # a comment (heartbeat), retry: or id: only
            line = b"\n".join(data)
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError:
                ST["bad_json"] += 1
                continue
            if not isinstance(msg, dict) or not msg:
                ST["pings"] += not msg  # `{}`: a ping, no pong on a unidirectional stream
                continue
            self.replies += 1
            if "disconnect" in msg:
                d = msg["disconnect"]
                self.fail(f"sse: disconnect push {d}" if self.state != 2 else None, d)
                return
            if self.state == 1 and "connect" in msg:
                subs = (msg["connect"] or {}).get("subs") or {}
                if CHANNEL.decode() not in subs:
                    self.fail(
                        f"sse: the connect push has no subscription to {CHANNEL.decode()!r} "
                        f"(is the token's channels claim honoured?): {line[:200]!r}"
                    )
                    return
                self.state = 2
                SUBSCRIBED += 1
                continue
            pub = msg.get("pub")
            data_ = pub.get("data") if isinstance(pub, dict) else None
            if self.state == 2 and isinstance(data_, dict) and "ts" in data_:
                ST["slow_path_deliveries"] += 1
                count(self, 1, time_ns(), (data_["ts"],))
            else:
                ST["other_pushes"] += 1

    def fail(self, why: str | None, disconnect=None) -> None:
        global FAILED
        if why:
            note_error(why)
        if disconnect is not None:
            key = f"{disconnect.get('code')} {disconnect.get('reason')}"
            ST["close_codes"][key] = ST["close_codes"].get(key, 0) + 1
        if self.state in (0, 1):
            self.state = -1
            FAILED += 1
        if self.t is not None:
            self.t.close()

    def gone(self, why: str) -> None:
        if self.state in (0, 1):
            self.fail(why)
        elif self.t is not None:
            self.t.close()

    def connection_lost(self, exc):
        sub_lost(self)

    def close(self) -> None:
        if self.t is not None:
            self.t.close()


class Pub(WSListener):
    def __init__(self):
        super().__init__()
        self.ready = asyncio.get_running_loop().create_future()
        self.frags = None

    def on_ws_connected(self, transport):
        transport.send(TEXT, b'{"id":1,"connect":{}}')

    def on_ws_frame(self, transport, frame):
        if frame.msg_type == TEXT and frame.fin:
            self.handle(transport, frame.get_payload_as_bytes())
        else:
            on_other_frame(self, transport, frame)

    def handle(self, t, p: bytes) -> None:
        ok = p.count(b'"publish"')
        if ok and b'"error"' not in p:
            ST["pub_ok"] += ok
            if b"\n" in p and is_ping_in(p):
                ST["pings"] += 1
                t.send(TEXT, b"{}")
            return
        for line in p.split(b"\n"):
            line = line.strip()
            if not line:
                continue
            if line == b"{}":
                ST["pings"] += 1
                t.send(TEXT, b"{}")
                continue
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError:
                ST["bad_json"] += 1
                continue
            if "error" in msg:
                ST["pub_err"] += 1
                note_error(f"publisher: {line[:200]!r}")
                if not self.ready.done():
                    self.ready.set_exception(RuntimeError(f"publisher connect failed: {line[:200]!r}"))
            elif "publish" in msg:
                ST["pub_ok"] += 1
            elif "connect" in msg and not self.ready.done():
                self.ready.set_result(None)
            else:
                ST["unknown_replies"] += 1

    def on_ws_disconnected(self, transport):
        if not CLOSING:
            ST["disconnects"] += 1
            if not self.ready.done():
                self.ready.set_exception(RuntimeError("publisher disconnected"))


# ---------------------------------------------------------------------------------------------


def percentile(q: float):
    total = sum(hist)
    if total == 0:
        return None
    want = math.ceil(total * q)
    acc = 0
    for i, c in enumerate(hist):
        if c:
            acc += c
            if acc >= want:
                return round((i + 0.5) * BUCKET_NS / 1e6, 3)  # bucket midpoint, ms
    return None


async def wait_until(cond, timeout: float, what: str) -> None:  # noqa: ASYNC109 - a poll, bounded
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


def cpu_sum(pids: list[int]) -> dict:
    """procstat.cpu summed over several process trees (the nodes of a many-node hub)."""
    out = {"sched_ns": 0, "user_s": 0.0, "sys_s": 0.0}
    for pid in pids:
        for k, v in procstat.cpu(pid).items():
            out[k] += v
    return out


def rss_sum(pids: list[int]) -> int:
    return sum(procstat.rss_kb(pid) for pid in pids)


async def run_phase(a, subs, kind: str, seconds: float, record: bool, server_pids: list[int]) -> dict:
    """kind: "steady" (open loop at a.rate deliveries/s) or "saturate" (closed-loop window).
    Server CPU is summed over server_pids; each of a.redis_pids is reported beside it."""
    global DELIVERED, PUBLISHED, PUMP_AT, DONE_AT, STOPPED, RECORD, done_fut, last_rx_ns
    loop = asyncio.get_running_loop()
    for s in subs:
        s.count = 0
    if record:
        for i in range(NB):
            hist[i] = 0
    DELIVERED = PUBLISHED = 0
    for i in range(len(PUB_COUNTS)):
        PUB_COUNTS[i] = 0
    DONE_AT = PUMP_AT = INF
    RECORD = record
    last_rx_ns = 0
    skipped = 0
    pub_ok0, pub_err0 = ST["pub_ok"], ST["pub_err"]
    r0 = [procstat.cpu(pid) for pid in a.redis_pids]
    c0, b0, cc0, w0 = cpu_sum(server_pids), procstat.box(), time.process_time(), time.monotonic()
    t0 = time_ns()
    STOPPED = False
    if kind == "saturate":
        PUMP_AT = 0
        pump()
        await asyncio.sleep(seconds)
    else:
        rate = a.rate / FANOUT  # publications per second
        cap = max(8, math.ceil(rate))  # open loop, but at most ~1 s of backlog
        interval = 1.0 / rate
        t_next = loop.time()
        end = t_next + seconds
        while t_next < end:
            if PUBLISHED - DELIVERED // FANOUT < cap:
                publish()
            else:
                skipped += 1
            t_next += interval
            d = t_next - loop.time()
            await asyncio.sleep(d if d > 0 else 0)
    STOPPED = True
    PUMP_AT = INF
    t_pub_end = time_ns()
    target = PUBLISHED * FANOUT
    done_fut = loop.create_future()
    complete = True
    if DELIVERED < target:
        DONE_AT = target
        if DELIVERED >= DONE_AT:
            finish()
        try:
            await asyncio.wait_for(asyncio.shield(done_fut), a.drain_timeout)
        except TimeoutError:
            complete = False
    DONE_AT = INF
    c1, b1, cc1, w1 = cpu_sum(server_pids), procstat.box(), time.process_time(), time.monotonic()
    r1 = [procstat.cpu(pid) for pid in a.redis_pids]
    RECORD = False
    t_end = max(last_rx_ns, t_pub_end) if complete else time_ns()
    secs = (t_end - t0) / 1e9
    cpu = procstat.cpu_delta_s(c0, c1)
    busy, steal = procstat.box_cores(b0, b1)
    short = sum(1 for s in subs if s.count < PUB_COUNTS[getattr(s, "ch", 0)])
    extra = sum(1 for s in subs if s.count > PUB_COUNTS[getattr(s, "ch", 0)])
    redis_each = [procstat.cpu_delta_s(x0, x1)["cpu_s"] for x0, x1 in zip(r0, r1, strict=True)]
    redis_cpu = sum(redis_each)
    out = {
        "phase": kind,
        "n": N,
        "seconds": round(secs, 3),
        "published": PUBLISHED,
        "expected": target,
        "delivered": DELIVERED,
        "missing": target - DELIVERED,
        "complete": complete,
        "subs_short": short,
        "subs_extra": extra,
        "pub_replies_ok": ST["pub_ok"] - pub_ok0,
        "pub_replies_err": ST["pub_err"] - pub_err0,
        "deliveries_per_s": round(DELIVERED / secs) if secs > 0 else None,
        "publications_per_s": round(PUBLISHED / secs, 1) if secs > 0 else None,
        "server_cpu_s": round(cpu["cpu_s"], 4),
        "server_user_s": round(cpu["user_s"], 2),
        "server_sys_s": round(cpu["sys_s"], 2),
        "server_sched_s": round(cpu["sched_s"], 4),
        "server_cpu_us_per_delivery": round(cpu["cpu_s"] * 1e6 / DELIVERED, 3) if DELIVERED else None,
        "server_cpu_util": round(cpu["cpu_s"] / secs, 2) if secs > 0 else None,
        "client_cpu_us_per_delivery": round((cc1 - cc0) * 1e6 / DELIVERED, 3) if DELIVERED else None,
        "box_busy_cores": busy,
        "box_steal_cores": steal,
        # busy cores not used by the server or this client: other load on the box (noise)
        "other_cores": round(busy - (cpu["cpu_s"] + redis_cpu + cc1 - cc0) / max(1e-9, w1 - w0), 2),
    }
    if a.redis_pids:
        out.update(
            {
                "redis_cpu_s": round(redis_cpu, 4),
                "redis_cpu_s_each": [round(x, 4) for x in redis_each],
                "redis_wall_s": round(w1 - w0, 3),
                "redis_cpu_us_per_delivery": round(redis_cpu * 1e6 / DELIVERED, 3) if DELIVERED else None,
                "redis_cpu_us_per_publication": round(redis_cpu * 1e6 / PUBLISHED, 2) if PUBLISHED else None,
                "redis_cpu_util": round(redis_cpu / secs, 2) if secs > 0 else None,
            }
        )
    if len(CHANNELS) > 1:
        out["channels"] = len(CHANNELS)
        out["publications_per_channel"] = list(PUB_COUNTS)
    if kind == "saturate":
        out["window_publications"] = W
    else:
        out["target_deliveries_per_s"] = a.rate
        out["skipped_ticks"] = skipped
    if record:
        out.update(
            {
                "p50_ms": percentile(0.50),
                "p90_ms": percentile(0.90),
                "p99_ms": percentile(0.99),
                "max_ms": percentile(1.0),
            }
        )
    return out


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


async def main(a) -> int:
    global N, FANOUT, W, PAD, CHANNEL, CHANNELS, PUB_COUNTS, PUB_T, CLOSING, SSE_REQUEST
    N = a.n
    CHANNEL = a.channel.encode()
    sub_urls = [u for u in a.sub_urls.split(",") if u] or [a.url]
    if a.channels > 1:
        if a.transport != "json" or N % a.channels:
            emit(
                {
                    "phase": "client",
                    "n": N,
                    "error": "--channels > 1 needs --transport json and N a multiple of it",
                }
            )
            return 2
        CHANNELS = [CHANNEL + b"%d" % i for i in range(a.channels)]
        PUB_COUNTS = [0] * a.channels
    FANOUT = N // len(CHANNELS)
    W = max(2, math.ceil(a.window_deliveries / FANOUT))
    base = b'{"ts":%d,"seq":%d,"d":""}' % (time_ns(), 1_000_000)
    PAD = b"x" * max(0, a.data_bytes - len(base))
    pids = [int(x) for x in str(a.server_pid).split(",") if x.strip()]
    a.redis_pids = [int(x) for x in a.redis_pid.split(",") if x.strip()]
    rss_base = rss_sum(pids)

    # ---- 1. connect N subscribers ----
    loop = asyncio.get_running_loop()
    subs: list = []
    sem = asyncio.Semaphore(a.connect_concurrency)
    retries = 0
    url = urllib.parse.urlsplit(a.url)
    if a.transport == "protobuf":
        pb_setup(a.channel)
    elif a.transport == "sse":
        if not a.token:
            emit({"phase": "client", "n": N, "error": "--transport sse needs --token (channels claim)"})
            return 2
        query = urllib.parse.urlencode({"cf_connect": json.dumps({"token": a.token})})
        SSE_REQUEST = (
            f"GET {a.sse_path}?{query} HTTP/1.1\r\nHost: {url.netloc}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()

    async def connect_one(i: int):
        if a.transport == "sse":
            _, listener = await asyncio.wait_for(loop.create_connection(SseSub, url.hostname, url.port), 20)
        elif a.transport == "protobuf":
            _, listener = await ws_connect(
                PbSub,
                a.url,
                websocket_handshake_timeout=20,
                read_buffer_init_size=4096,
                extra_headers={"Sec-WebSocket-Protocol": PB_SUBPROTOCOL},
            )
        else:
            node, ch = i % len(sub_urls), (i // len(sub_urls)) % len(CHANNELS)
            _, listener = await ws_connect(
                lambda: Sub(ch), sub_urls[node], websocket_handshake_timeout=20, read_buffer_init_size=4096
            )
        return listener

    async def one(i: int):
        nonlocal retries
        err = None
        for attempt in range(3):
            async with sem:
                if MISMATCH is not None:
                    return  # the server does not speak this transport: stop here
                try:
                    subs.append(await connect_one(i))
                    return
                except Exception as e:  # noqa: BLE001 - reported
                    err = e
                    retries += 1
            await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"connect failed 3 times: {err!r}")

    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(N))), a.connect_timeout)
        await wait_until(
            lambda: MISMATCH is not None or SUBSCRIBED + FAILED >= N, a.connect_timeout, "subscribe replies"
        )
    except Exception as e:  # noqa: BLE001 - reported
        emit(
            {
                "phase": "client",
                "n": N,
                "error": f"connect/subscribe: {e!r}",
                "subscribed": SUBSCRIBED,
                "failed": FAILED,
                "connected": len(subs),
                **ST,
            }
        )
        return 2
    connect_s = time.perf_counter() - t0
    if MISMATCH is not None:
        emit(
            {
                "phase": "client",
                "n": N,
                "error": f"{MISMATCH} -- nothing measured",
                "subscribed": SUBSCRIBED,
                "failed": FAILED,
                **ST,
            }
        )
        for s in subs:
            s.close()
        return 2
    if FAILED:
        emit({"phase": "client", "n": N, "error": f"{FAILED} subscribers failed", **ST})
        return 2

    # ---- 2. idle memory ----
    c0, r0 = cpu_sum(pids), [procstat.cpu(p) for p in a.redis_pids]
    await asyncio.sleep(a.idle_s)
    c1, r1 = cpu_sum(pids), [procstat.cpu(p) for p in a.redis_pids]
    rss_idle = rss_sum(pids)
    redis_idle = (
        {
            "redis_idle_cpu_util": round(
                sum(procstat.cpu_delta_s(x0, x1)["cpu_s"] for x0, x1 in zip(r0, r1, strict=True)) / a.idle_s,
                5,
            )
        }
        if a.redis_pids
        else {}
    )
    emit(
        {
            "phase": "idle",
            "n": N,
            "connect_s": round(connect_s, 2),
            "connect_retries": retries,
            "rss_base_kb": rss_base,
            "rss_idle_kb": rss_idle,
            "idle_kb_per_conn": round((rss_idle - rss_base) / N, 2),
            "idle_server_cpu_util": round(procstat.cpu_delta_s(c0, c1)["cpu_s"] / a.idle_s, 3),
            **redis_idle,
        }
    )

    # ---- 3. publisher + warm-up ----
    PUB_T, pub = await ws_connect(Pub, a.url, websocket_handshake_timeout=20)
    await asyncio.wait_for(pub.ready, 20)
    rc = 0
    if a.warmup_s > 0:
        w = await run_phase(a, subs, "saturate", a.warmup_s, False, pids)
        if not w["complete"]:
            rc = 3
            note_error(f"warm-up incomplete: {w['missing']} deliveries missing")

    # ---- 4./5. measured phases ----
    for kind, secs in (("steady", a.steady_s), ("saturate", a.sat_s)):
        if secs <= 0:
            continue
        row = await run_phase(a, subs, kind, secs, True, pids)
        row["rss_after_kb"] = rss_sum(pids)
        emit(row)
        if not row["complete"] or row["missing"]:
            rc = 3

    # ---- close, bounded ----
    CLOSING = True
    emit(
        {
            "phase": "client",
            "n": N,
            "transport": a.transport,
            "subscribed": SUBSCRIBED,
            "window_publications": W,
            "data_bytes": len(base) + len(PAD),
            **ST,
        }
    )
    for s in subs:
        s.close()
    ws_close(PUB_T)
    await asyncio.sleep(0.3)
    return rc


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--n", type=int, required=True, help="subscribers")
    ap.add_argument(
        "--server-pid",
        required=True,
        help="the server's pid, or a comma list of them (several nodes: CPU and RSS summed)",
    )
    ap.add_argument(
        "--sub-urls",
        default="",
        help="comma list of URLs the subscribers are spread over round-robin (default: --url); "
        "the publisher always uses --url",
    )
    ap.add_argument("--redis-pid", default="", help="comma list of redis-server pids: their CPU per phase")
    ap.add_argument("--channel", default="bench")
    ap.add_argument(
        "--channels",
        type=int,
        default=1,
        help="spread the subscribers over this many channels (--channel + index; json only)",
    )
    ap.add_argument(
        "--transport",
        choices=["json", "protobuf", "sse"],
        default="json",
        help="what the subscribers speak (the publisher always speaks WebSocket JSON)",
    )
    ap.add_argument("--token", default="", help="sse: connection token whose channels claim names --channel")
    ap.add_argument("--sse-path", default="/connection/uni_sse")
    ap.add_argument("--data-bytes", type=int, default=100, help="size of the published JSON data")
    ap.add_argument("--rate", type=float, default=20000, help="steady phase: deliveries per second")
    ap.add_argument("--steady-s", type=float, default=5.0)
    ap.add_argument("--sat-s", type=float, default=5.0)
    ap.add_argument("--warmup-s", type=float, default=1.0)
    ap.add_argument("--idle-s", type=float, default=2.0)
    ap.add_argument("--window-deliveries", type=int, default=10000)
    ap.add_argument("--drain-timeout", type=float, default=15.0)
    ap.add_argument("--connect-timeout", type=float, default=60.0)
    ap.add_argument("--connect-concurrency", type=int, default=100)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.n + 1000)), hard))
    import uvloop

    sys.exit(uvloop.run(main(args)))
