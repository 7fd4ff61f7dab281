"""Console fan-out: 200 websocket consoles, 2,000 vehicles at 1 Hz plus alert bursts.

What is measured: the delay from "the hub knows" (the moment the engine's output is handed to
the console server: ``ConsoleServer.publish``) to "the console received the frame", for
``positions`` frames and for ``alert`` messages, at p50/p99/max over every console; the server
process's CPU and memory; and what one deliberately slow console (a socket that never reads)
costs the others.  The baseline, in the same run, is the naive broadcast: one ``send`` per
console per event, awaited in turn (every event is encoded once; a positions batch is one
event).

Processes: the server (the real ``ws.server.ConsoleServer`` + hub on the real web shell, or
the naive endpoint on the same shell), two client processes of ``consoles/2`` ``websockets``
clients each, and this orchestrator (which also holds the slow console: a raw socket with a
4 KiB receive buffer that completes the handshake and never reads).  Timestamps: the driver
stamps each record with the wall clock (``t`` of positions, ``at`` of alerts, ms) when it
publishes; clients subtract it from their wall clock at receipt (one machine, one clock).

Run: python benchmarks/bench_ws_fanout.py [--consoles 200 --vehicles 2000 --seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import WebSocket

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


async def serve(args: argparse.Namespace) -> None:
    from starlette.websockets import WebSocketDisconnect

    from fleetwatch.web import WebOptions, WebShell, open_web_server
    from schedule.stop_events import VehiclePosition
    from ws.hub import Hub, HubLimits
    from ws.protocol import alert_json, dumps
    from ws.server import ConsoleServer

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
            if args.mode == "hub":
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

    async with asyncio.TaskGroup() as tg:
        tg.create_task(web.serve(), name="web")
        tg.create_task(drive(), name="drive")
        tg.create_task(naive_pump(), name="naive")
        while True:  # report the hub's counters now and then (the orchestrator reads them)
            await asyncio.sleep(1.0)
            st = hub.statistics()
            print(
                json.dumps(
                    {
                        "consoles": st.consoles if args.mode == "hub" else len(naive),
                        "resyncs": st.resyncs,
                        "shared": st.position_frames_shared,
                        "built": st.position_frames_built,
                        "naive_backlog": naive_queue.qsize(),
                    }
                ),
                flush=True,
            )


def _iso(t_us: int) -> str:
    from core.fixes import iso_utc

    return iso_utc(t_us)


# -- clients -------------------------------------------------------------------------------------


def _parse_iso_ms(text: str, key: str) -> float | None:
    """The first ``"key":"...Z"`` timestamp of a frame, as epoch seconds (cheap: no full parse)."""
    i = text.find(f'"{key}":"')
    if i < 0:
        return None
    s = text[i + len(key) + 4 : i + len(key) + 28]
    import datetime as dt

    z = s.find("Z")
    if z < 0:
        return None
    stamp = s[:z]
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in stamp else "%Y-%m-%dT%H:%M:%S"
    return dt.datetime.strptime(stamp, fmt).replace(tzinfo=dt.UTC).timestamp()


async def clients(args: argparse.Namespace) -> None:
    from websockets.asyncio.client import connect

    path = "/ws/console" if args.mode == "hub" else "/ws/naive"
    url = f"ws://127.0.0.1:{args.port}{path}?token={TOKEN}"
    lat: dict[str, list[float]] = {"positions": [], "alert": []}
    counts = {"positions": 0, "alert": 0, "resync": 0, "snapshot": 0}
    measure_from = time.time() + WARMUP_S
    measure_to = measure_from + args.seconds

    async def one() -> None:
        async with connect(url, max_size=None, open_timeout=60) as ws:
            async for text in ws:
                now = time.time()
                assert isinstance(text, str)
                kind = text[9:20].split('"')[0]  # {"type":"xxx"
                if kind in counts and measure_from <= now <= measure_to:
                    counts[kind] += 1
                if kind == "positions":
                    t = _parse_iso_ms(text, "t")
                elif kind == "alert":
                    t = _parse_iso_ms(text, "at")
                else:
                    continue
                if t is not None and measure_from <= now <= measure_to:
                    lat[kind].append(now - t)
                if now > measure_to:
                    return

    async with asyncio.timeout(WARMUP_S + args.seconds + 60):
        await asyncio.gather(*(one() for _ in range(args.count)), return_exceptions=True)
    print(json.dumps({"latencies": lat, "counts": counts}), flush=True)


# -- the slow console ---------------------------------------------------------------------------


def slow_console(port: int, path: str) -> socket.socket:
    """Handshake, then never read: a 4 KiB receive buffer fills at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path}?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    return sock


# -- orchestrator -------------------------------------------------------------------------------


def run_case(args: argparse.Namespace, mode: str, slow: bool) -> dict[str, Any]:
    import psutil

    py = sys.executable
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    common = ["--vehicles", str(args.vehicles), "--consoles", str(args.consoles)]
    common += ["--burst", str(args.burst), "--burst-every", str(args.burst_every)]
    server = subprocess.Popen(
        [py, __file__, "--role", "server", "--mode", mode, *common],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        port = json.loads(server.stdout.readline())["port"]
        proc = psutil.Process(server.pid)
        holder = (
            slow_console(port, "/ws/console" if mode == "hub" else "/ws/naive") if slow else None
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
                ],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(2)
        ]
        time.sleep(WARMUP_S)
        cpu0 = proc.cpu_times()
        t0 = time.monotonic()
        time.sleep(args.seconds)
        cpu1 = proc.cpu_times()
        wall = time.monotonic() - t0
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
    stats = json.loads(rest.strip().splitlines()[-1]) if rest.strip() else {}
    lat = {
        k: np.concatenate([np.asarray(r["latencies"][k]) for r in results])
        for k in ("positions", "alert")
    }
    counts = {k: sum(r["counts"][k] for r in results) for k in results[0]["counts"]}
    expected_alerts = args.consoles * args.burst * (args.seconds / args.burst_every)
    expected_positions = args.consoles * args.seconds

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
        "delivered_alerts": round(counts["alert"] / expected_alerts, 3),
        "resyncs": counts.get("resync", 0),
        "server": stats,
        "server_cpu_pct": round(
            100 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / wall, 1
        ),
        "server_rss_mb": round(rss / 2**20, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--role", choices=["orchestrate", "server", "clients"], default="orchestrate")
    ap.add_argument("--mode", choices=["hub", "naive"], default="hub")
    ap.add_argument("--consoles", type=int, default=200)
    ap.add_argument("--vehicles", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--burst", type=int, default=50, help="alert versions per burst")
    ap.add_argument("--burst-every", type=int, default=5, help="seconds between bursts")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--cases", default="hub,naive,hub+slow,naive+slow")
    args = ap.parse_args()
    if args.role == "server":
        asyncio.run(serve(args))
        return
    if args.role == "clients":
        asyncio.run(clients(args))
        return
    out = []
    for case in args.cases.split(","):
        mode, _, slow = case.partition("+")
        r = run_case(args, mode, slow == "slow")
        print(json.dumps(r), flush=True)
        out.append(r)


if __name__ == "__main__":
    main()
