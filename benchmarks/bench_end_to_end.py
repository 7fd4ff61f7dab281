"""End to end at QoS 1: Mosquitto -> fleetwatch -> PostgreSQL, vs a naive pipeline, same run.

fleetwatch: ``python -m fleetwatch run`` as a child process (as deployed), a private Mosquitto
(fleetwatch.embedded) and a private PostgreSQL (store.embedded, fsync on,
synchronous_commit on, ``track_commit_timestamp=on`` so each row's commit time is known).
Publisher processes (paho, QoS 1) send one RMC+GGA payload per message for many 1 Hz units,
at a target total rate, for ``--duration`` seconds; each fix's time is its publish time (to
the centisecond), so ``pg_xact_commit_timestamp(xmin) - t`` is the publish->commit latency of
every stored fix (overstated by < 10 ms from the rounding).

Reported per repeat: published (acknowledged by the broker), stored, loss, the sustained rate
(stored / time from first publish to last commit), p50/p99 publish->commit, fleetwatch's peak
RSS (VmHWM) and CPU seconds.  The naive baseline (paho callback + pynmea2 + one INSERT and
COMMIT per fix, auto-ack on receipt) gets the same flood on another topic tree; its rate is
rows committed / seconds.  Medians over ``--repeats``.

Run:  python benchmarks/bench_end_to_end.py [--duration 60] [--rate 40000] [--repeats 3]
          [--naive-duration 20] [--publishers 2] [--profile out.html]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from fleetwatch.embedded import open_embedded_broker  # noqa: E402
from ingest.nmea_encode import checksum  # noqa: E402
from simulators.mqtt_wire import encode_connect, varint  # noqa: E402
from store.embedded import open_embedded_postgres  # noqa: E402

# ------------------------------------------------------------------------------- publishers


def _ddmm(value: float, width: int) -> str:
    a = abs(value)
    deg = int(a)
    return f"{deg:0{width}d}{(a - deg) * 60:09.6f}"


def publisher(
    host: str,
    port: int,
    prefix: str,
    units: list[str],
    rate: float,
    duration_s: float,
    out: mp.Queue[Any],
) -> None:
    """Publish one fix per message, round-robin over *units*, at *rate* msg/s, QoS 1.

    A raw MQTT 3.1.1 client on a blocking socket: PUBLISH packets are built as bytes and
    written in 64 KiB chunks, PUBACKs counted as they come (the broker acks in order).  paho
    costs ~5x more CPU per message, and on this 2-core machine the publisher must not be
    what limits the pipeline under test.
    """
    import select
    import socket

    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(encode_connect(f"bench-pub-{os.getpid()}", keepalive_s=60))
    connack = sock.recv(4)
    if len(connack) < 4 or connack[3] != 0:
        raise SystemExit(f"publisher: broker refused the connection: {connack!r}")
    # everything but the time fields is fixed per unit: precompute it and its checksum part
    rmc_tail, gga_tail, rmc_x, gga_x, heads = [], [], [], [], []
    for i, u in enumerate(units):
        lat = 55.60 + (i % 1000) * 0.0003
        lon = 37.40 + (i // 1000) * 0.0003
        pos = f"{_ddmm(lat, 2)},N,{_ddmm(lon, 3)},E"
        rmc_tail.append(f",A,{pos},0.000,0.00,")
        gga_tail.append(f",{pos},1,09,0.90,150.0,M,,M,,")
        rmc_x.append(checksum(b"GPRMC," + rmc_tail[-1].encode() + b",,,A"))
        gga_x.append(checksum(b"GPGGA," + gga_tail[-1].encode()))
        topic = f"{prefix}/{u}/nmea".encode()
        heads.append(len(topic).to_bytes(2, "big") + topic)
    n = len(units)
    window = 20_000  # unacknowledged PUBLISHes at most (packet ids are 1..65535)
    sent = acked = 0
    pending = bytearray()
    t0 = time.monotonic()
    end = t0 + duration_s
    k = 0
    last_s = -1.0
    hms = date = ""
    tx = dx = 0
    inbuf = b""
    while True:
        now = time.monotonic()
        if now >= end and not pending:
            break
        # read PUBACKs without blocking (4 bytes each)
        r, _, _ = select.select([sock], [], [], 0)
        if r:
            inbuf += sock.recv(65536)
            whole = len(inbuf) // 4
            acked += whole
            inbuf = inbuf[whole * 4 :]
        due = 0 if now >= end else min(int((now - t0) * rate) - sent, window - (sent - acked))
        for _ in range(min(max(due, 0), 1000)):
            wall = time.time()
            cs = int(wall * 100)
            if cs != last_s:
                last_s = cs
                tm = time.gmtime(wall)
                hms = f"{tm.tm_hour:02d}{tm.tm_min:02d}{tm.tm_sec:02d}.{cs % 100:02d}"
                date = f"{tm.tm_mday:02d}{tm.tm_mon:02d}{tm.tm_year % 100:02d}"
                tx = checksum(hms.encode())
                dx = checksum(date.encode())
            i = k % n
            k += 1
            payload = (
                f"$GPRMC,{hms}{rmc_tail[i]}{date},,,A*{rmc_x[i] ^ tx ^ dx:02X}\r\n"
                f"$GPGGA,{hms}{gga_tail[i]}*{gga_x[i] ^ tx:02X}\r\n"
            ).encode()
            sent += 1
            pid = (sent - 1) % 65535 + 1
            body_len = len(heads[i]) + 2 + len(payload)
            pending += b"\x32" + varint(body_len) + heads[i] + pid.to_bytes(2, "big") + payload
        if pending:
            _, w, _ = select.select([], [sock], [], 0.001)
            if w:
                try:
                    wrote = sock.send(pending[:65536])
                except BlockingIOError:
                    wrote = 0
                del pending[:wrote]
        elif due <= 0:
            select.select([sock], [], [], 0.0005)
    deadline = time.monotonic() + 120
    while acked < sent and time.monotonic() < deadline:
        r, _, _ = select.select([sock], [], [], 0.1)
        if r:
            inbuf += sock.recv(65536)
            whole = len(inbuf) // 4
            acked += whole
            inbuf = inbuf[whole * 4 :]
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    out.put((sent, acked, t0, time.monotonic()))


def flood(
    host: str, port: int, prefix: str, units: list[str], rate: float, duration_s: float, n_proc: int
) -> tuple[int, int, float]:
    """Run *n_proc* publishers on disjoint units; (sent, acked, seconds) when all are done."""
    q: mp.Queue[Any] = mp.Queue()
    procs = [
        mp.Process(
            target=publisher,
            args=(host, port, prefix, units[j::n_proc], rate / n_proc, duration_s, q),
            name=f"publisher-{j}",
        )
        for j in range(n_proc)
    ]
    for p in procs:
        p.start()
    results = [q.get(timeout=duration_s + 180) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    sent = sum(r[0] for r in results)
    acked = sum(r[1] for r in results)
    secs = max(r[3] for r in results) - min(r[2] for r in results)
    return sent, acked, secs


# ------------------------------------------------------------------------------- fleetwatch


@dataclass(frozen=True, slots=True, kw_only=True)
class FwRun:
    published: int
    stored: int
    lost: int
    publish_s: float
    rate_fixes_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    peak_rss_mb: float
    cpu_s: float


def _vmhwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_fleetwatch(
    broker_url: str,
    host: str,
    port: int,
    admin_dsn: str,
    units: list[str],
    units_file: Path,
    args: argparse.Namespace,
    repeat: int,
    workdir: Path,
) -> FwRun:
    db = f"bench_fw_{repeat}_{os.getpid()}"
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {db}")
        c.execute(f"CREATE DATABASE {db}")
    dsn = admin_dsn.replace("dbname=postgres", f"dbname={db}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env.update(
        {
            "FLEETWATCH_MQTT_URL": broker_url,
            "FLEETWATCH_DATABASE_URL": dsn,
            "FLEETWATCH_MQTT_CLIENT_ID": f"fleetwatch-bench-{repeat}-{os.getpid()}",
            "FLEETWATCH_UNITS_FILE": str(units_file),
            "FLEETWATCH_HTTP_PORT": "0",
            "FLEETWATCH_LOG_LEVEL": "INFO",
        }
    )
    cmd = [sys.executable, "-m", "fleetwatch", "run"]
    if args.profile and repeat == 0:
        renderer = "html" if args.profile.suffix == ".html" else "text"
        cmd = [
            sys.executable,
            "-m",
            "pyinstrument",
            "-o",
            str(args.profile),
            "-r",
            renderer,
            "-m",
            "fleetwatch",
            "run",
        ]
    log = workdir / f"fleetwatch-{repeat}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while b"MQTT connected" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"fleetwatch did not start; see {log}:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        pid = proc.pid  # pyinstrument profiles in-process: same pid
        _sent, acked, publish_s = flood(
            host, port, "fleet", units, args.rate, args.duration, args.publishers
        )
        deadline = time.monotonic() + 300
        stored = 0
        with psycopg.connect(dsn, autocommit=True) as c:
            while time.monotonic() < deadline:
                stored = c.execute("SELECT count(*) FROM fixes").fetchone()[0]  # type: ignore[index]
                if stored >= acked:
                    break
                time.sleep(0.5)
            time.sleep(1.0)  # let a stray duplicate show up before counting for good
            row = c.execute("""
                SELECT count(*),
                       extract(epoch FROM max(pg_xact_commit_timestamp(xmin)) - min(t)),
                       percentile_cont(ARRAY[0.5, 0.99, 1.0]) WITHIN GROUP (ORDER BY
                           extract(epoch FROM pg_xact_commit_timestamp(xmin) - t))
                FROM fixes""").fetchone()
        assert row is not None
        stored, span_s, pct = int(row[0]), float(row[1]), [float(x) for x in row[2]]
        rss, cpu = _vmhwm_mb(pid), _cpu_s(pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    return FwRun(
        published=acked,
        stored=stored,
        lost=acked - stored,
        publish_s=publish_s,
        rate_fixes_s=stored / span_s,
        p50_ms=pct[0] * 1000,
        p99_ms=pct[1] * 1000,
        max_ms=pct[2] * 1000,
        peak_rss_mb=rss,
        cpu_s=cpu,
    )


# ------------------------------------------------------------------------------- naive


def naive_subscriber(host: str, port: int, dsn: str, stop_at: float, out: mp.Queue[Any]) -> None:
    """paho callback + pynmea2 + one INSERT and COMMIT per fix (acks on receipt)."""
    import paho.mqtt.client as paho
    import pynmea2
    from paho.mqtt.enums import CallbackAPIVersion

    conn = psycopg.connect(dsn)
    n = [0]

    def on_message(client: object, userdata: object, msg: paho.MQTTMessage) -> None:
        unit = msg.topic.split("/")[1]
        for line in msg.payload.decode("ascii", "replace").splitlines():
            try:
                s = pynmea2.parse(line, check=True)
            except pynmea2.ParseError:
                continue
            if s.sentence_type == "RMC" and s.status == "A":
                conn.execute(
                    "INSERT INTO naive_fixes (unit_id, t, lat, lon, speed_kn, course) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (
                        unit,
                        s.datetime.replace(tzinfo=__import__("datetime").timezone.utc),
                        s.latitude,
                        s.longitude,
                        s.spd_over_grnd,
                        s.true_course,
                    ),
                )
                conn.commit()
                n[0] += 1

    c = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"naive-{os.getpid()}",
        protocol=paho.MQTTv311,
        clean_session=True,
    )
    c.on_message = on_message
    c.connect(host, port)
    c.subscribe("naive/+/nmea", qos=1)
    out.put("ready")
    while time.monotonic() < stop_at:
        c.loop(timeout=0.1)
    c.disconnect()
    out.put(n[0])


def run_naive(
    host: str, port: int, admin_dsn: str, units: list[str], args: argparse.Namespace
) -> float:
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS naive_fixes")
        c.execute(
            "CREATE TABLE naive_fixes (unit_id text, t timestamptz, lat float8, "
            "lon float8, speed_kn real, course real, PRIMARY KEY (unit_id, t))"
        )
    q: mp.Queue[Any] = mp.Queue()
    t_start = time.monotonic() + 3
    stop_at = t_start + args.naive_duration
    sub = mp.Process(
        target=naive_subscriber, args=(host, port, admin_dsn, stop_at, q), name="naive"
    )
    sub.start()
    assert q.get(timeout=30) == "ready"
    time.sleep(max(0.0, t_start - time.monotonic()))
    flood(host, port, "naive", units, args.rate, args.naive_duration, args.publishers)
    n = q.get(timeout=args.naive_duration + 60)
    sub.join(timeout=30)
    return float(n) / float(args.naive_duration)


# ------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=40_000.0, help="target publish rate, msg/s")
    ap.add_argument("--units", type=int, default=30_000, help="simulated units (1 Hz each)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--naive-duration", type=float, default=20.0)
    ap.add_argument("--publishers", type=int, default=2)
    ap.add_argument("--profile", type=Path, help="pyinstrument HTML of the first repeat")
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    args = ap.parse_args()

    units = [f"B{u:05d}" for u in range(args.units)]
    work = Path(tempfile.mkdtemp(prefix="fleetwatch-bench-e2e-"))
    work.chmod(0o755)
    units_file = work / "units.csv"
    units_file.write_text("unit_id,vehicle_id,driver\n" + "".join(f"{u},V{u},\n" for u in units))
    pg_settings = {
        "track_commit_timestamp": "on",
        "synchronous_commit": "on",
        "shared_buffers": "256MB",
        "max_wal_size": "2GB",
    }
    runs: list[FwRun] = []
    with (
        open_embedded_broker(work / "broker") as broker,
        open_embedded_postgres(work / "pg", fsync=True, settings=pg_settings) as pg,
    ):
        print(
            f"broker {broker.kind} {broker.url}; PostgreSQL port {pg.port}; files in {work}",
            flush=True,
        )
        for r in range(args.repeats):
            run = run_fleetwatch(
                broker.url, broker.host, broker.port, pg.dsn, units, units_file, args, r, work
            )
            runs.append(run)
            print(f"fleetwatch repeat {r + 1}: {json.dumps(asdict(run))}", flush=True)
        naive = run_naive(broker.host, broker.port, pg.dsn, units, args)
        print(f"naive: {naive:.0f} fixes/s committed", flush=True)

    def med(key: str) -> float:
        return float(statistics.median(float(getattr(x, key)) for x in runs))

    summary = {
        "duration_s": args.duration,
        "target_rate": args.rate,
        "units": args.units,
        "repeats": args.repeats,
        "fleetwatch_fixes_s_median": med("rate_fixes_s"),
        "published_total": sum(x.published for x in runs),
        "lost_total": sum(x.lost for x in runs),
        "p50_ms_median": med("p50_ms"),
        "p99_ms_median": med("p99_ms"),
        "peak_rss_mb_max": max(x.peak_rss_mb for x in runs),
        "cpu_s_per_1k_fixes": med("cpu_s") / (med("published") / 1000),
        "naive_fixes_s": naive,
        "ratio": med("rate_fixes_s") / naive if naive else float("inf"),
    }
    print("\nSUMMARY " + json.dumps(summary, indent=2))
    print(
        f"\nfleetwatch {summary['fleetwatch_fixes_s_median']:,.0f} fixes/s stored (median of "
        f"{args.repeats}), lost {summary['lost_total']}, p99 publish->commit "
        f"{summary['p99_ms_median']:.0f} ms, peak RSS {summary['peak_rss_mb_max']:.0f} MB; "
        f"naive {naive:,.0f} fixes/s; ratio {summary['ratio']:.1f}x"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"summary": summary, "runs": [asdict(x) for x in runs]}, indent=2)
        )
    return 0 if summary["lost_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
