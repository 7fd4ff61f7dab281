"""Console fan-out: 200 websocket consoles, 2,000 vehicles at 1 Hz plus alert bursts.

What is measured: the delay from "the hub knows" (the moment the engine's output is handed to
the console server: ``ConsoleServer.publish``) to "the console received the frame", for
``positions`` frames and for ``alert`` messages, at p50/p99/max over every console; the server
process's CPU and memory; and what one deliberately slow console (a socket that never reads)
costs the others.  The baseline, in the same run, is the naive broadcast: one ``send`` per
console per event, awaited in turn (every event is encoded once; a positions batch is one
event).

Cases (``--cases``): ``hub`` (prepared frames: each distinct message framed, and deflated,
once for every console; ws/wire.py), ``hub-plain`` (the same hub, one ``send_text`` per console
per message), ``hub-batch`` (``?batch=1``), ``naive``; ``+slow`` adds the slow console.  With
``--deflate`` (default) the consoles offer permessage-deflate as browsers do, and the naive
baseline then compresses per socket, as the library does.

Processes: the server (the real ``ws.server.ConsoleServer`` + hub on the real web shell, or
the naive endpoint on the same shell), two client processes of ``consoles/2`` lean framing
clients each, and this orchestrator (which also holds the slow console: a raw socket with a
4 KiB receive buffer that completes the handshake and never reads).  Timestamps: the driver
stamps each record with the wall clock (``t`` of positions, ``at`` of alerts, ms) when it
publishes; clients subtract it from their wall clock at receipt (one machine, one clock).

Run: python benchmarks/bench_ws_fanout.py [--consoles 200 --vehicles 2000 --seconds 20]
     [--no-deflate] [--profile PREFIX]   (docs/bench/ws_fanout.md)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import gc
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import WebSocket

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _args import non_negative_int, positive_float, positive_int  # noqa: E402

TOKEN = "bench-token"
WARMUP_S = 4.0


# -- server --------------------------------------------------------------------------------------


def _alert(n: int, version: int, now_us: int) -> Any:
    from alerts.records import AlertVersion

    return AlertVersion(
        id=f"stop/2026-11-23/S{n:04d}",
        version=version,
        subject="stop",
        kind="late",
        severity="major",
        status="open",
        summary=f"S{n:04d}: ETA after window end",
        facts=(("eta_us", now_us), ("minutes_late", 12.5)),
        assignee="D01",
        escalation_level=0,
        hops=(),
        acknowledged_by=None,
        acknowledged_at_us=None,
        comments=(),
        detected_late=False,
        opened_at_us=now_us,
        change="raised" if version == 1 else "updated",
        by="engine:tick",
        at_us=now_us,
    )


async def serve(args: argparse.Namespace) -> str | None:
    from starlette.websockets import WebSocketDisconnect

    from fleetwatch.web import WebOptions, WebShell, open_web_server
    from schedule.stop_events import VehiclePosition
    from ws.hub import Hub, HubLimits
    from ws.protocol import alert_json, dumps
    from ws.server import ConsoleServer, ServerOptions

    @dataclasses.dataclass
    class P:
        user: str = "D01"
        console_role: str | None = "dispatcher"

    def now_us() -> int:
        return time.time_ns() // 1000

    shell = WebShell()
    hub = Hub(limits=HubLimits(max_consoles=args.consoles + 10))
    server = ConsoleServer(
        hub,
        authenticate=lambda tok: P() if tok == TOKEN else None,
        submit=lambda cmd: asyncio.sleep(0, []),  # type: ignore[arg-type,return-value]
        clock_us=now_us,
        options=ServerOptions(prepared_frames=args.mode != "hub-plain"),
    )
    naive: list[WebSocket] = []

    async def naive_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        naive.append(websocket)
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            naive.remove(websocket)

    async def naive_broadcast(text: str) -> None:
        for ws in list(naive):  # one send per console per event, awaited in turn
            with contextlib.suppress(Exception):
                await ws.send_text(text)

    shell.add_websocket_route("/ws/console", server.endpoint)
    shell.add_websocket_route("/ws/naive", naive_endpoint)
    web = open_web_server(shell, host="127.0.0.1", port=0, options=WebOptions())
    print(json.dumps({"port": web.port}), flush=True)
    rng = np.random.default_rng(1)
    lon0 = 37.3 + rng.random(args.vehicles) * 0.6
    lat0 = 55.5 + rng.random(args.vehicles) * 0.4
    vids = [f"V{k:04d}" for k in range(args.vehicles)]
    naive_queue: asyncio.Queue[str] = asyncio.Queue()  # unbounded: the naive way

    async def naive_pump() -> None:
        while True:
            await naive_broadcast(await naive_queue.get())

    round_ms: list[float] = []
    gc_ms: list[float] = []  # full (generation 2) collections: a stop of the whole loop
    gc_t0 = 0.0

    def on_gc(phase: str, info: dict[str, int]) -> None:
        nonlocal gc_t0
        if info["generation"] == 2:
            if phase == "start":
                gc_t0 = time.perf_counter()
            else:
                gc_ms.append((time.perf_counter() - gc_t0) * 1000)

    gc.callbacks.append(on_gc)
    if args.gc_freeze:  # as the service does once its state is built (fleetwatch/service.py)
        gc.freeze()

    burst_at: list[float] = []  # epoch seconds of each burst sent (the orchestrator's count)

    async def drive() -> None:
        version = 0
        tick = 0
        start = time.monotonic()
        while True:
            tick += 1
            await asyncio.sleep(max(0.0, start + tick - time.monotonic()))
            t = now_us()
            positions = [
                VehiclePosition(
                    vehicle_id=vids[k],
                    t_us=t,
                    lon=float(lon0[k] + tick * 1e-4),
                    lat=float(lat0[k]),
                    speed_kmh=30.0,
                )
                for k in range(args.vehicles)
            ]
            alerts = []
            if tick % args.burst_every == 0:
                version += 1
                alerts = [_alert(n, version, t) for n in range(args.burst)]
                burst_at.append(t / 1e6)
            if args.mode != "naive":
                server.publish(positions + alerts)
            else:
                # the same records, as the naive server would send them: one positions event
                # per round (encoded once), one event per alert version
                frags = [
                    {
                        "vehicle_id": p.vehicle_id,
                        "t": _iso(p.t_us),
                        "lat": round(p.lat, 6),
                        "lon": round(p.lon, 6),
                        "speed_kmh": 30.0,
                        "state": "moving",
                        "site_id": None,
                        "route_id": None,
                    }
                    for p in positions
                ]
                naive_queue.put_nowait(dumps({"type": "positions", "vehicles": frags}))
                for a in alerts:
                    naive_queue.put_nowait(dumps({"type": "alert", "alert": alert_json(a)}))
            # stamp -> records folded in (hub) / encoded and queued (naive): the server's own
            # share before any console's writer runs
            round_ms.append(now_us() / 1000 - t / 1000)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(web.serve(), name="web"),
            tg.create_task(drive(), name="drive"),
            tg.create_task(naive_pump(), name="naive"),
        ]
        while not stop.is_set():  # report the counters now and then (the orchestrator reads them)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await stop.wait()
            st = hub.statistics()
            c = server.counts
            print(
                json.dumps(
                    {
                        "consoles": st.consoles if args.mode != "naive" else len(naive),
                        "resyncs": st.resyncs,
                        "shared": st.position_frames_shared,
                        "built": st.position_frames_built,
                        "naive_backlog": naive_queue.qsize(),
                        "frames_sent": c.frames_sent,
                        "frames_prepared": c.frames_prepared,
                        "prepared_bytes": c.prepared_bytes,
                        "frame_cache_built": server.frames.stats.built,
                        "round_ms_p50": round(float(np.median(round_ms)), 1) if round_ms else None,
                        "round_ms_max": round(max(round_ms), 1) if round_ms else None,
                        "gc2": len(gc_ms),
                        "gc2_ms_max": round(max(gc_ms), 1) if gc_ms else None,
                        "burst_at": burst_at,
                    }
                ),
                flush=True,
            )
        for t in tasks:
            t.cancel()
    if profiler is not None:
        profiler.stop()
        return profiler.output_text(unicode=False, color=False, show_all=True)
    return None


def _iso(t_us: int) -> str:
    from core.fixes import iso_utc

    return iso_utc(t_us)


# -- clients -------------------------------------------------------------------------------------


def _stamp(head: bytes, key: bytes) -> float | None:
    """The first ``"key":"...Z"`` timestamp in a frame's head, as epoch seconds."""
    i = head.find(b'"' + key + b'":"')
    if i < 0:
        return None
    i += len(key) + 4
    z = head.find(b"Z", i, i + 30)
    if z < 0:
        return None
    raw = head[i:z]
    t = _STAMPS.get(raw)
    if t is None:  # a round's frames share their stamp: parse it once per client process
        if len(_STAMPS) > 4096:
            _STAMPS.clear()
        t = _STAMPS[raw] = dt.datetime.fromisoformat(raw.decode() + "+00:00").timestamp()
    return t


_STAMPS: dict[bytes, float] = {}


class LeanConsole(asyncio.Protocol):
    """A websocket client that only frames: no UTF-8 decoding, no JSON parsing of 300 KB
    positions frames.  Real consoles are browsers on other machines; in this benchmark the
    clients share two cores with the server, and the ``websockets`` client's per-byte work
    made *them* the bottleneck (the server sat at 11 % CPU while frames queued in the
    clients).  It answers pings (uvicorn closes a console that does not) and reads the
    timestamp from each frame's head."""

    def __init__(self, path: str, port: int, sink: Any, *, deflate: bool) -> None:
        self.path, self.port, self.sink = path, port, sink
        self.deflate = deflate
        self.buf = bytearray()
        self.open = False
        #: a persistent decompressor when the server keeps its context (None: per message)
        self.inflater: Any = None
        self.negotiated = False
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET {self.path}{'&' if '?' in self.path else '?'}token={TOKEN} HTTP/1.1\r\n"
                "Host: 127.0.0.1\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n{_offer(self.deflate)}\r\n"
            ).encode()
        )

    def _inflate(self, data: bytes) -> bytes:
        """The message's head (its whole when it is a batch), inflated: like the plain
        frames, only what the timestamp needs.  Receipt is when the frame's last byte
        arrived; what a browser then does with it (inflate, parse) is not counted either way."""
        data += b"\x00\x00\xff\xff"
        if self.inflater is not None:  # the server keeps its context: every byte goes through
            return bytes(self.inflater.decompress(data))
        d = zlib.decompressobj(-15)
        head = d.decompress(data, 4096)
        if head[9:14] == b"batch":
            head += d.decompress(d.unconsumed_tail)
        return bytes(head)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = _READY.at if _READY.at else time.time()
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            assert b" 101 " in head[:20], bytes(buf[:200])
            self.negotiated = b"permessage-deflate" in head
            assert self.negotiated == self.deflate, head
            if self.negotiated and b"server_no_context_takeover" not in head:
                self.inflater = zlib.decompressobj(-15)
            del buf[: end + 4]
            self.open = True
        pos = 0
        while True:
            if len(buf) - pos < 2:
                break
            n = buf[pos + 1] & 0x7F
            off = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, off = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, off = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if len(buf) - pos < off + n:
                break
            opcode = buf[pos] & 0x0F
            start = pos + off
            if opcode == 0x9:  # ping -> pong (client frames are masked)
                payload = bytes(buf[start : start + n])
                mask = os.urandom(4)
                masked = bytes(b ^ mask[k % 4] for k, b in enumerate(payload))
                assert self.transport is not None
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
            elif opcode == 0x1:
                data = bytes(buf[start : start + n])
                if buf[pos] & 0x40:  # RSV1: compressed
                    data = self._inflate(data)
                whole = data[9:14] == b"batch"
                self.sink(data if whole else data[:4096], now)
            elif opcode == 0x8 and self.transport is not None:
                self.transport.close()
            pos = start + n
        if pos:
            del buf[:pos]


class _Ready:
    at = 0.0


#: when the client's event loop last learned that sockets are readable (0: not stamping)
_READY = _Ready()


class _StampingSelector(selectors.EpollSelector):
    """Receipt is when the client's loop learns the bytes are there (its ``select`` returns),
    not when this Python process gets round to the frame: 100 consoles share one client
    process, and the 99th console's frame would otherwise wait for the framing and inflating
    of the 98 before it, work a browser on its own machine does not wait for."""

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        ready = super().select(timeout)
        _READY.at = time.time()
        return ready


def _offer(deflate: bool) -> str:
    """The client's extension offer: what a browser sends when *deflate*."""
    if not deflate:
        return ""
    return "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


async def clients(args: argparse.Namespace) -> None:
    path = {
        "hub": "/ws/console",
        "hub-plain": "/ws/console",
        "hub-batch": "/ws/console?batch=1",
    }.get(args.mode, "/ws/naive")
    lat: dict[str, list[float]] = {"positions": [], "alert": []}
    counts = {"positions": 0, "alert": 0, "resync": 0, "snapshot": 0}
    measure_from = time.time() + WARMUP_S
    measure_to = measure_from + args.seconds

    def sink(head: bytes, now: float) -> None:
        if not measure_from <= now <= measure_to:
            return
        kind = head[9:20].split(b'"')[0].decode()
        if kind == "batch":  # each message inside, as if it had come alone
            for inner, key in (("positions", b"t"), ("alert", b"at")):
                pat = b'{"type":"' + inner.encode() + b'"'
                i = head.find(pat)
                while i >= 0:
                    counts[inner] += 1
                    t = _stamp(head[i : i + 4096], key)
                    if t is not None:
                        lat[inner].append(now - t)
                    i = head.find(pat, i + 1)
            return
        if kind in counts:
            counts[kind] += 1
        t = None
        if kind == "positions":
            t = _stamp(head, b"t")
        elif kind == "alert":
            t = _stamp(head, b"at")
        if t is not None:
            lat[kind].append(now - t)

    loop = asyncio.get_running_loop()
    consoles = []
    for _ in range(args.count):
        _, proto = await loop.create_connection(
            lambda: LeanConsole(path, args.port, sink, deflate=args.deflate),
            "127.0.0.1",
            args.port,
        )
        consoles.append(proto)
    await asyncio.sleep(max(0.0, measure_to - time.time()) + 0.5)
    for c in consoles:
        if c.transport is not None:
            c.transport.close()
    window = {"from": measure_from, "to": measure_to, "consoles": len(consoles)}
    print(json.dumps({"latencies": lat, "counts": counts, "window": window}), flush=True)


# -- the slow console ---------------------------------------------------------------------------


def slow_console(port: int, path: str, *, deflate: bool) -> socket.socket:
    """Handshake, then never read: a 4 KiB receive buffer fills at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path}?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{_offer(deflate)}\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    return sock


# -- orchestrator -------------------------------------------------------------------------------


def expected_alert_versions(
    windows: list[dict[str, float]], burst_at: list[float], burst: int
) -> int:
    """Alert versions the consoles should have received: *burst* for every burst the server
    sent inside each client process's measured window, times its consoles.

    Counted from the bursts actually sent, not --seconds / --burst-every: with --seconds 3 and
    --burst-every 5 that assumed 0.6 of a burst, while the window held one or none, and the
    delivered share read 166.7 %."""
    return sum(
        int(w["consoles"]) * burst * sum(1 for t in burst_at if w["from"] <= t <= w["to"])
        for w in windows
    )


def run_case(args: argparse.Namespace, mode: str, slow: bool) -> dict[str, Any]:
    import psutil

    py = sys.executable
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    common = ["--vehicles", str(args.vehicles), "--consoles", str(args.consoles)]
    common += ["--burst", str(args.burst), "--burst-every", str(args.burst_every)]
    prof = []
    if args.profile:
        prof = ["--profile", f"{args.profile}.{mode}{'+slow' if slow else ''}.txt"]
    gcf = ["--gc-freeze" if args.gc_freeze else "--no-gc-freeze"]
    server = subprocess.Popen(
        [py, __file__, "--role", "server", "--mode", mode, *common, *prof, *gcf],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # asyncio's "socket.send() raised" as clients leave
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        port = json.loads(server.stdout.readline())["port"]
        proc = psutil.Process(server.pid)
        holder = (
            slow_console(
                port, "/ws/naive" if mode == "naive" else "/ws/console", deflate=args.deflate
            )
            if slow
            else None
        )
        per = args.consoles // 2
        cl = [
            subprocess.Popen(
                [
                    py,
                    __file__,
                    "--role",
                    "clients",
                    "--mode",
                    mode,
                    "--port",
                    str(port),
                    "--count",
                    str(per),
                    "--seconds",
                    str(args.seconds),
                    "--deflate" if args.deflate else "--no-deflate",
                    "--stamp",
                    args.stamp,
                ],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(2)
        ]
        time.sleep(WARMUP_S)
        cprocs = [psutil.Process(c.pid) for c in cl]
        ccpu0 = sum(sum(p.cpu_times()[:2]) for p in cprocs)
        cpu0 = proc.cpu_times()
        t0 = time.monotonic()
        time.sleep(args.seconds)
        cpu1 = proc.cpu_times()
        ccpu1 = sum(sum(p.cpu_times()[:2]) for p in cprocs)
        wall = time.monotonic() - t0
        load = os.getloadavg()[0]
        rss = proc.memory_info().rss
        results = []
        for c in cl:
            out, _ = c.communicate(timeout=args.seconds + 120)
            results.append(json.loads(out.strip().splitlines()[-1]))
        if holder is not None:
            holder.close()
    finally:
        server.terminate()
        rest, _ = server.communicate(timeout=10)
    lines = [json.loads(x) for x in rest.strip().splitlines()]
    stats = lines[-1] if lines else {}
    for k in ("consoles", "naive_backlog"):  # at their worst (the clients left before the end)
        stats[k] = max((x[k] for x in lines), default=0)
    lat = {
        k: np.concatenate([np.asarray(r["latencies"][k]) for r in results])
        for k in ("positions", "alert")
    }
    counts = {k: sum(r["counts"][k] for r in results) for k in results[0]["counts"]}
    windows = [r["window"] for r in results]
    expected_alerts = expected_alert_versions(windows, stats.pop("burst_at", []), args.burst)
    expected_positions = sum(w["consoles"] for w in windows) * args.seconds

    def pct(a: np.ndarray, q: float) -> float | None:
        return None if a.size == 0 else round(float(np.percentile(a, q)) * 1000, 1)

    return {
        "mode": mode,
        "slow_console": slow,
        "positions_ms": {
            "p50": pct(lat["positions"], 50),
            "p99": pct(lat["positions"], 99),
            "max": pct(lat["positions"], 100),
        },
        "alerts_ms": {
            "p50": pct(lat["alert"], 50),
            "p99": pct(lat["alert"], 99),
            "max": pct(lat["alert"], 100),
        },
        "delivered_positions": round(counts["positions"] / expected_positions, 3),
        "delivered_alerts": (  # None: no burst fell in the measured seconds
            round(counts["alert"] / expected_alerts, 3) if expected_alerts else None
        ),
        "resyncs": counts.get("resync", 0),
        "server": stats,
        "server_cpu_pct": round(
            100 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / wall, 1
        ),
        "server_rss_mb": round(rss / 2**20, 1),
        "clients_cpu_pct": round(100 * (ccpu1 - ccpu0) / wall, 1),
        "load_avg_1m": round(load, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--role", choices=["orchestrate", "server", "clients"], default="orchestrate")
    ap.add_argument("--mode", choices=["hub", "hub-plain", "hub-batch", "naive"], default="hub")
    ap.add_argument("--consoles", type=positive_int, default=200)
    ap.add_argument("--vehicles", type=positive_int, default=2000)
    ap.add_argument("--seconds", type=positive_float, default=20.0)
    ap.add_argument("--burst", type=positive_int, default=50, help="alert versions per burst")
    ap.add_argument("--burst-every", type=positive_int, default=5, help="seconds between bursts")
    ap.add_argument("--port", type=non_negative_int, default=0)
    ap.add_argument("--count", type=non_negative_int, default=0)
    ap.add_argument(
        "--deflate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="consoles offer permessage-deflate, as browsers do (default: yes)",
    )
    ap.add_argument(
        "--cases",
        default="hub,hub-plain,naive,hub+slow,naive+slow",
        help="MODE[+slow],...: hub (prepared frames), hub-plain (the hub, one send_text per "
        "console per message), hub-batch (?batch=1), naive (the baseline)",
    )
    ap.add_argument("--profile", default="", help="server profiles (pyinstrument) to PREFIX.*")
    ap.add_argument(
        "--stamp",
        choices=["ready", "read"],
        default="ready",
        help="receipt time: when the client's loop saw the socket readable (default), or when "
        "the client process got to the bytes",
    )
    ap.add_argument(
        "--gc-freeze",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gc.freeze() in the server after start-up, as the service does (default: yes)",
    )
    args = ap.parse_args()
    if args.role == "server":
        profile = asyncio.run(serve(args))
        if profile is not None:
            Path(args.profile).write_text(profile)
        return
    if args.role == "clients":
        if args.stamp == "ready":
            sel = _StampingSelector()
            _READY.at = 0.0
            with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(sel)) as runner:
                runner.run(clients(args))
        else:
            asyncio.run(clients(args))
        return
    out = []
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    for case in args.cases.split(","):
        mode, _, slow = case.partition("+")
        r = run_case(args, mode, slow == "slow")
        print(json.dumps(r), flush=True)
        out.append(r)
    ended = dt.datetime.now(dt.UTC).strftime("%H:%M")
    print(
        f"\n{started}–{ended} UTC, deflate {'on' if args.deflate else 'off'}, "
        f"{args.consoles} consoles, {args.vehicles} vehicles, {args.seconds:g} s per case"
    )
    print(_table(out))


def _table(rows: list[dict[str, Any]]) -> str:
    """The cases as a markdown table; the naive broadcast is the named baseline."""
    names = {
        "hub": "hub, prepared frames",
        "hub-plain": "hub, one `send_text` per console",
        "hub-batch": "hub, `batch=1`",
        "naive": "**baseline**: naive broadcast",
    }

    def ms(d: dict[str, float | None]) -> str:
        return " / ".join("—" if d[k] is None else f"{d[k]:,.0f}" for k in ("p50", "p99", "max"))

    lines = [
        "| case | positions p50 / p99 / max (ms) | alerts p50 / p99 / max (ms) "
        "| delivered (positions / alerts) | server CPU | server RSS | clients CPU | load 1 min |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        name = names.get(r["mode"], r["mode"]) + (" + 1 slow console" if r["slow_console"] else "")
        backlog = r["server"].get("naive_backlog", 0) if r["mode"] == "naive" else 0
        alerts = r["delivered_alerts"]
        delivered = (
            f"{100 * r['delivered_positions']:.1f} % / "
            + ("no burst in the window" if alerts is None else f"{100 * alerts:.1f} %")
            + (f", backlog {backlog}" if backlog else "")
        )
        lines.append(
            f"| {name} | {ms(r['positions_ms'])} | {ms(r['alerts_ms'])} | {delivered} "
            f"| {r['server_cpu_pct']} % | {r['server_rss_mb']:.0f} MB "
            f"| {r['clients_cpu_pct']} % | {r['load_avg_1m']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
