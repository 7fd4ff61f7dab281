"""End to end at QoS 1 with detection on: Mosquitto -> fleetwatch -> PostgreSQL, beside naive
pipelines and the broker's own ceiling, all in the same run.

fleetwatch: ``python -m fleetwatch run`` as a child process (as deployed) with a sites file
(1,500 sites of ``geofence.synthetic.make_city_sites``), so the engine (match -> detection ->
board -> desk) runs at its default round interval; a private Mosquitto (fleetwatch.embedded,
the shipped config) and a private PostgreSQL (store.embedded, fsync on, synchronous_commit on,
``track_commit_timestamp=on`` so each row's commit time is known).

The offered load is the project's one synthetic fleet (simulators.synthetic): every unit drives
a circle through one of the sites and stands there ``--dwell`` seconds per lap, so the engine
really matches, opens and closes visits.  ``--publishers`` processes publish one RMC+GGA
payload per message over the raw QoS 1 publisher (simulators.mqtt_wire) at ``--rate`` msg/s
in total for ``--duration`` s; each fix's time is its publish time (to the centisecond), so
``pg_xact_commit_timestamp(xmin) - t`` is every stored fix's publish->commit latency.

Per repeat, the same offered load goes in turn to:

- **fleetwatch**: stored, loss, sustained rate (stored / (last commit - first fix time)),
  p50/p99 publish->commit, peak RSS (VmHWM), CPU seconds, and from its /metrics the engine's
  pending fixes (peak, sampled every 0.5 s), backpressure seconds, step durations and events;
- **mosquitto_sub -q 1** (the broker's ceiling): messages received / (last receive - first
  publish);
- **careful naive**: paho (manual acks) + pynmea2 + ``executemany`` with one COMMIT per 2,000
  fixes (or 200 ms), PUBACKs sent after the commit; rate measured as fleetwatch's.

Once per run, the **per-fix naive** (paho, pynmea2, one INSERT+COMMIT per fix, acks on receipt)
for ``--naive-duration`` s.  Medians over ``--repeats``.

Run:  python benchmarks/bench_end_to_end.py [--duration 60] [--rate 25000] [--repeats 3]
          [--units 30000] [--sites 1500] [--naive-duration 20] [--publishers 2]
          [--careful-duration 20] [--profile out.html]
      python benchmarks/bench_end_to_end.py --engine-offline --units 30000 --rate 30000 \\
          --duration 10   # the engine alone, same fleet and sites
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from _args import positive_float, positive_int  # noqa: E402
from shapely.geometry import mapping  # noqa: E402

from fleetwatch.embedded import open_embedded_broker  # noqa: E402
from geofence.synthetic import make_city_sites  # noqa: E402
from simulators.loadtest import histogram_quantiles, read_metrics  # noqa: E402
from simulators.mqtt_wire import RawPublisherPool  # noqa: E402
from simulators.synthetic import FleetShape, SyntheticFleet, publish_at_rate  # noqa: E402
from store.embedded import open_embedded_postgres  # noqa: E402

# ------------------------------------------------------------------------------- publishers


def fleet_shape(args: argparse.Namespace, topic_root: str, sites: np.ndarray | None) -> FleetShape:
    return FleetShape(
        units=args.units,
        unit_prefix="B",
        topic_root=topic_root,
        sites_lonlat=sites,
        dwell_s=args.dwell,
    )


def publisher(
    host: str, port: int, shape: FleetShape, j: int, n_proc: int, rate: float,
    duration_s: float, out: mp.Queue[Any],
) -> None:  # fmt: skip
    """Publish units ``j::n_proc`` of the synthetic fleet at *rate* msg/s, QoS 1."""
    fleet = SyntheticFleet(shape)
    pool = RawPublisherPool(
        host, port, connections=1, client_id_prefix=f"bench-pub-{j}-{os.getpid()}",
        max_inflight=20_000, keepalive_s=60,
    )  # fmt: skip
    pool.connect()
    run = publish_at_rate(
        fleet, pool, rate_per_s=rate, duration_s=duration_s,
        unit_indices=np.arange(j, shape.units, n_proc, dtype=np.int64),
    )  # fmt: skip
    pool.drain(timeout_s=180)
    pool.close()
    out.put((run.sent, pool.stats.acked, run.start, run.end))


def flood(
    host: str, port: int, shape: FleetShape, rate: float, duration_s: float, n_proc: int
) -> tuple[int, int, float, float]:
    """Run *n_proc* publishers on disjoint units; (sent, acked, first start, last end)."""
    q: mp.Queue[Any] = mp.Queue()
    procs = [
        mp.Process(
            target=publisher,
            args=(host, port, shape, j, n_proc, rate / n_proc, duration_s, q),
            name=f"publisher-{j}",
        )
        for j in range(n_proc)
    ]
    for p in procs:
        p.start()
    results = [q.get(timeout=duration_s + 240) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    return (
        sum(r[0] for r in results),
        sum(r[1] for r in results),
        min(r[2] for r in results),
        max(r[3] for r in results),
    )


# ------------------------------------------------------------------------------- fleetwatch

LATENCY_SQL = """
    SELECT count(*),
           extract(epoch FROM max(pg_xact_commit_timestamp(xmin)) - min(t)),
           percentile_cont(ARRAY[0.5, 0.99, 1.0]) WITHIN GROUP (ORDER BY
               extract(epoch FROM pg_xact_commit_timestamp(xmin) - t))
    FROM {table}"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """Rows of one table, their sustained rate and publish->commit latency."""

    published: int
    stored: int
    lost: int
    rate_fixes_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def wait_stored(dsn: str, table: str, acked: int, *, patience_s: float = 20.0) -> Stored:
    """Wait until *table* holds *acked* rows (or stops growing for *patience_s*); measure."""
    last, last_change = -1, time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as c:
        while True:
            n = c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            if n >= acked:
                break
            if n != last:
                last, last_change = n, time.monotonic()
            elif time.monotonic() - last_change > patience_s:
                break
            time.sleep(0.5)
        time.sleep(1.0)  # let a stray duplicate show up before counting for good
        row = c.execute(LATENCY_SQL.format(table=table)).fetchone()
    assert row is not None
    stored = int(row[0])
    if stored == 0:
        return Stored(published=acked, stored=0, lost=acked, rate_fixes_s=0.0,
                      p50_ms=math.nan, p99_ms=math.nan, max_ms=math.nan)  # fmt: skip
    span_s, pct = float(row[1]), [float(x) for x in row[2]]
    return Stored(
        published=acked, stored=stored, lost=acked - stored, rate_fixes_s=stored / span_s,
        p50_ms=pct[0] * 1000, p99_ms=pct[1] * 1000, max_ms=pct[2] * 1000,
    )  # fmt: skip


@dataclass(slots=True)
class EngineWatch:
    """Samples fleetwatch's /metrics while the flood runs (a thread: the flood blocks)."""

    url: str
    peak_pending: float = 0.0
    peak_inbox: float = 0.0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                m = read_metrics(self.url)
            except Exception:  # a missed sample is not a result
                continue
            self.samples += 1
            self.peak_pending = max(self.peak_pending, m.get("fleetwatch_engine_pending_fixes", 0))
            self.peak_inbox = max(self.peak_inbox, m.get("fleetwatch_engine_inbox", 0))

    def stop(self) -> None:
        self._stop.set()


@dataclass(frozen=True, slots=True, kw_only=True)
class FwRun:
    stored: Stored
    publish_acked_msg_s: float  # what the publishers achieved (acked / publishing time)
    peak_rss_mb: float
    cpu_s: float  # fleetwatch's CPU from the first publish until everything was stored
    engine_peak_pending_fixes: float
    engine_peak_inbox: float
    engine_pending_fixes_at_end: float
    engine_backpressure_s: float
    engine_steps: int
    engine_seconds_total: float
    engine_step_p50_s: float | None
    engine_step_p99_s: float | None
    engine_events: dict[str, int]
    engine_lag_s_at_end: float
    #: with --engine-process: the child processes' (engine + multiprocessing's resource
    #: tracker) CPU over the same span (included in cpu_s) and the engine child's peak RSS
    children_cpu_s: float = 0.0
    engine_child_peak_rss_mb: float = math.nan
    #: fixes refused by the decoder during the run, by reason (stored < published = these)
    rejects: dict[str, int] = field(default_factory=dict)


def _vmhwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _children(pid: int) -> list[int]:
    """The direct children of *pid* (fleetwatch's engine process and resource tracker)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def _children_cpu_s(pid: int) -> float:
    total = 0.0
    for c in _children(pid):
        try:
            total += _cpu_s(c)
        except OSError:
            continue
    return total


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fresh_db(admin_dsn: str, db: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {db}")
    return admin_dsn.replace("dbname=postgres", f"dbname={db}")


def _drop_db(admin_dsn: str, db: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def run_fleetwatch(
    broker_url: str, host: str, port: int, admin_dsn: str, shape: FleetShape,
    files: dict[str, Path], args: argparse.Namespace, repeat: int, workdir: Path,
) -> FwRun:  # fmt: skip
    db = f"bench_fw_{repeat}_{os.getpid()}"
    dsn = _fresh_db(admin_dsn, db)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETWATCH_")}
    env.update(
        {
            "FLEETWATCH_MQTT_URL": broker_url,
            "FLEETWATCH_DATABASE_URL": dsn,
            "FLEETWATCH_MQTT_CLIENT_ID": f"fleetwatch-bench-{repeat}-{os.getpid()}",
            "FLEETWATCH_UNITS_FILE": str(files["units"]),
            "FLEETWATCH_HTTP_PORT": "0",
            "FLEETWATCH_LOG_LEVEL": "INFO",
        }
    )
    if not args.no_detection:
        env["FLEETWATCH_SITES_FILE"] = str(files["sites"])
    if args.detect_interval_ms is not None:  # a diagnosis: the headline runs at the default
        env["FLEETWATCH_DETECT_INTERVAL_MS"] = str(args.detect_interval_ms)
    if args.engine_process:
        env["FLEETWATCH_ENGINE_PROCESS"] = "true"
    cmd = [sys.executable, "-m", "fleetwatch", "run"]
    if args.profile and repeat == 0:  # pyinstrument samples the main thread (the event loop)
        renderer = "html" if args.profile.suffix == ".html" else "text"
        cmd[1:1] = ["-m", "pyinstrument", "-o", str(args.profile), "-r", renderer]
    log = workdir / f"fleetwatch-{repeat}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while b"MQTT connected" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"fleetwatch did not start; see {log}:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        url = _metrics_url(log)
        m0 = read_metrics(url)
        watch = EngineWatch(url)
        sampler = threading.Thread(target=watch.run, name="engine-watch", daemon=True)
        sampler.start()
        cpu0, kids0 = _cpu_s(proc.pid), _children_cpu_s(proc.pid)
        _sent, acked, t0, t1 = flood(host, port, shape, args.rate, args.duration, args.publishers)
        stored = wait_stored(dsn, "fixes", acked, patience_s=args.patience)
        watch.stop()
        sampler.join(timeout=5)
        m1 = read_metrics(url)
        kids_cpu = _children_cpu_s(proc.pid) - kids0
        rss, cpu = _vmhwm_mb(proc.pid), _cpu_s(proc.pid) - cpu0 + kids_cpu
        child_rss = max((_vmhwm_mb(c) for c in _children(proc.pid)), default=math.nan)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    _drop_db(admin_dsn, db)

    def delta(key: str) -> float:
        return m1.get(key, 0.0) - m0.get(key, 0.0)

    q = histogram_quantiles(m0, m1, "fleetwatch_engine_seconds", (0.5, 0.99))
    events = {
        k.split('type="', 1)[1].split('"', 1)[0]: int(delta(k))
        for k in m1
        if k.startswith("fleetwatch_engine_events_total{") and delta(k) > 0
    }
    return FwRun(
        stored=stored,
        publish_acked_msg_s=acked / (t1 - t0),
        peak_rss_mb=rss,
        cpu_s=cpu,
        engine_peak_pending_fixes=watch.peak_pending,
        engine_peak_inbox=watch.peak_inbox,
        engine_pending_fixes_at_end=m1.get("fleetwatch_engine_pending_fixes", math.nan),
        engine_backpressure_s=delta("fleetwatch_engine_backpressure_seconds_total"),
        engine_steps=int(delta("fleetwatch_engine_seconds_count")),
        engine_seconds_total=delta("fleetwatch_engine_seconds_sum"),
        engine_step_p50_s=q["p50"],
        engine_step_p99_s=q["p99"],
        engine_events=events,
        engine_lag_s_at_end=m1.get("fleetwatch_engine_lag_seconds", math.nan),
        children_cpu_s=kids_cpu,
        rejects={
            k.split('reason="', 1)[1].split('"', 1)[0]: int(delta(k))
            for k in m1
            if k.startswith("fleetwatch_ingest_rejects_total{") and delta(k) > 0
        },
        engine_child_peak_rss_mb=child_rss,
    )


def _metrics_url(log: Path) -> str:
    import re

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = re.search(rb"metrics at (http://\S+/metrics)", log.read_bytes())
        if m:
            return m.group(1).decode()
        time.sleep(0.1)
    raise SystemExit(f"fleetwatch did not log its metrics address; see {log}")


# ------------------------------------------------------------------------- the broker's ceiling


def run_mosquitto_sub(host: str, port: int, shape: FleetShape, args: argparse.Namespace) -> float:
    """mosquitto_sub -q 1 drains the same offered load: messages / (last receive - first
    publish)."""
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", host, "-p", str(port), "-q", "1", "-t",
         f"{shape.topic_root}/+/nmea", "-i", f"bench-sub-{os.getpid()}", "-F", "%l"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    got = [0, 0.0]

    def read() -> None:
        assert sub.stdout is not None
        while chunk := sub.stdout.read1(1 << 16):  # type: ignore[attr-defined]
            got[0] += chunk.count(b"\n")
            got[1] = time.monotonic()

    reader = threading.Thread(target=read, name="mosquitto-sub-reader", daemon=True)
    reader.start()
    time.sleep(1.0)  # subscribed before the first publish
    _sent, acked, t0, _t1 = flood(host, port, shape, args.rate, args.duration, args.publishers)
    last, last_change = -1, time.monotonic()
    while got[0] < acked and time.monotonic() - last_change < 10:
        if got[0] != last:
            last, last_change = int(got[0]), time.monotonic()
        time.sleep(0.2)
    sub.terminate()
    sub.wait(timeout=10)
    reader.join(timeout=5)
    n, t_last = int(got[0]), float(got[1])
    print(f"mosquitto_sub received {n} of {acked} acked in {t_last - t0:.1f} s "
          f"(publishers acked {acked / (_t1 - t0):,.0f} msg/s)", flush=True)  # fmt: skip
    return n / (t_last - t0)


# ------------------------------------------------------------------------------- naive

NAIVE_TABLE = (
    "CREATE TABLE {name} (unit_id text, t timestamptz, lat float8, lon float8, "
    "speed_kn real, course real, sats int, hdop real, PRIMARY KEY (unit_id, t))"
)
NAIVE_INSERT = (
    "INSERT INTO {name} (unit_id, t, lat, lon, speed_kn, course, sats, hdop) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)


def _naive_rows(topic: str, payload: bytes | bytearray) -> list[tuple[Any, ...]]:
    """pynmea2 over one payload: the RMC's fix with the GGA's satellites and HDOP."""
    import datetime as dt

    import pynmea2

    unit = topic.split("/")[1]
    rmc = gga = None
    for line in payload.decode("ascii", "replace").splitlines():
        try:
            s = pynmea2.parse(line, check=True)
        except pynmea2.ParseError:
            continue
        if s.sentence_type == "RMC" and s.status == "A":
            rmc = s
        elif s.sentence_type == "GGA":
            gga = s
    if rmc is None:
        return []
    return [(
        unit, rmc.datetime.replace(tzinfo=dt.UTC), rmc.latitude, rmc.longitude,
        rmc.spd_over_grnd, rmc.true_course,
        int(gga.num_sats) if gga is not None and gga.num_sats else None,
        float(gga.horizontal_dil) if gga is not None and gga.horizontal_dil else None,
    )]  # fmt: skip


def careful_subscriber(
    host: str, port: int, dsn: str, topic_root: str, stop_at: float, out: mp.Queue[Any]
) -> None:
    """paho (manual acks) + pynmea2 + executemany, one COMMIT per 2,000 fixes or 200 ms;
    the PUBACKs of a batch are sent after its commit (nothing acknowledged is lost)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    conn = psycopg.connect(dsn)
    sql = NAIVE_INSERT.format(name="careful_fixes")
    rows: list[tuple[Any, ...]] = []
    mids: list[int] = []
    first = [0.0]
    n = [0]

    def on_message(client: object, userdata: object, msg: paho.MQTTMessage) -> None:
        if not rows:
            first[0] = time.monotonic()
        rows.extend(_naive_rows(msg.topic, msg.payload))
        mids.append(msg.mid)
        if len(rows) >= 2000:
            flush()

    def flush() -> None:
        if rows:
            with conn.cursor() as cur:
                cur.executemany(sql, rows)
            conn.commit()
            n[0] += len(rows)
        for mid in mids:
            c.ack(mid, 1)
        rows.clear()
        mids.clear()

    c = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"careful-{os.getpid()}",
        protocol=paho.MQTTv311, clean_session=True, manual_ack=True,
    )  # fmt: skip
    c.max_inflight_messages_set(65535)
    c.on_message = on_message
    c.connect(host, port)
    c.subscribe(f"{topic_root}/+/nmea", qos=1)
    out.put("ready")
    while time.monotonic() < stop_at:
        c.loop(timeout=0.05)
        if mids and time.monotonic() - first[0] > 0.2:
            flush()
    flush()
    c.disconnect()
    out.put(n[0])


def per_fix_subscriber(
    host: str, port: int, dsn: str, topic_root: str, stop_at: float, out: mp.Queue[Any]
) -> None:
    """paho callback + pynmea2 + one INSERT and COMMIT per fix (acks on receipt)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    conn = psycopg.connect(dsn)
    sql = NAIVE_INSERT.format(name="naive_fixes")
    n = [0]

    def on_message(client: object, userdata: object, msg: paho.MQTTMessage) -> None:
        for row in _naive_rows(msg.topic, msg.payload):
            conn.execute(sql, row)
            conn.commit()
            n[0] += 1

    c = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"naive-{os.getpid()}",
        protocol=paho.MQTTv311, clean_session=True,
    )  # fmt: skip
    c.on_message = on_message
    c.connect(host, port)
    c.subscribe(f"{topic_root}/+/nmea", qos=1)
    out.put("ready")
    while time.monotonic() < stop_at:
        c.loop(timeout=0.1)
    c.disconnect()
    out.put(n[0])


def run_careful(
    host: str, port: int, admin_dsn: str, shape: FleetShape, args: argparse.Namespace, r: int
) -> Stored:
    db = f"bench_careful_{r}_{os.getpid()}"
    dsn = _fresh_db(admin_dsn, db)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(NAIVE_TABLE.format(name="careful_fixes"))
    q: mp.Queue[Any] = mp.Queue()
    # it stops reading at stop_at: long enough for the flood and the backlog it leaves
    stop_at = time.monotonic() + 5 + args.careful_duration + 240
    sub = mp.Process(
        target=careful_subscriber, args=(host, port, dsn, shape.topic_root, stop_at, q),
        name="careful",
    )  # fmt: skip
    sub.start()
    assert q.get(timeout=30) == "ready"
    _sent, acked, _t0, _t1 = flood(
        host, port, shape, args.rate, args.careful_duration, args.publishers
    )
    stored = wait_stored(dsn, "careful_fixes", acked, patience_s=10)
    os.kill(sub.pid or 0, signal.SIGTERM)
    sub.join(timeout=30)
    _drop_db(admin_dsn, db)
    return stored


def run_per_fix(
    host: str, port: int, admin_dsn: str, shape: FleetShape, args: argparse.Namespace
) -> float:
    db = f"bench_naive_{os.getpid()}"
    dsn = _fresh_db(admin_dsn, db)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(NAIVE_TABLE.format(name="naive_fixes"))
    q: mp.Queue[Any] = mp.Queue()
    t_start = time.monotonic() + 3
    stop_at = t_start + args.naive_duration
    sub = mp.Process(
        target=per_fix_subscriber, args=(host, port, dsn, shape.topic_root, stop_at, q),
        name="naive",
    )  # fmt: skip
    sub.start()
    assert q.get(timeout=30) == "ready"
    time.sleep(max(0.0, t_start - time.monotonic()))
    flood(host, port, shape, args.rate, args.naive_duration, args.publishers)
    n = q.get(timeout=args.naive_duration + 120)
    sub.join(timeout=30)
    _drop_db(admin_dsn, db)
    return float(n) / float(args.naive_duration)


# ------------------------------------------------------------------------------- engine alone


def engine_offline(args: argparse.Namespace, work: Path) -> int:
    """The engine alone over the same fleet and sites, fed as ``fleetwatch run`` feeds it
    (decoded 2,000-message batches, the receive time as the clock, rounds at the interval):
    CPU per second of data, without broker, database or GIL sharing (``--engine-offline``;
    wrap it in ``python -m pyinstrument`` for the profile)."""
    from fleetwatch.engine_setup import build_engine, load_sites
    from ingest.nmea import DecodeOptions, Decoder
    from schedule.engine import EngineParams

    files, centres = write_inputs(args, work)
    shape = fleet_shape(args, "fleet", centres)
    fleet = SyntheticFleet(shape)
    names = [shape.unit_id(i) for i in range(args.units)]
    interval_s = (args.detect_interval_ms or 1000.0) / 1000
    engine = build_engine(
        load_sites(files["sites"]),
        {u: f"V{u}" for u in names},
        params=EngineParams(round_interval_s=interval_s),
    )
    decoder = Decoder(DecodeOptions())
    everyone = np.arange(args.units, dtype=np.int64)
    hz = args.rate / args.units
    t0 = time.time_ns() // 1000
    cpu = 0.0
    steps = round(args.duration * hz)
    cpu_at: list[float] = []  # CPU so far at the end of each step of data
    for s in range(steps):
        t = t0 + round(s * 1e6 / hz)
        payloads = fleet.payloads(everyone, t)
        for i in range(0, args.units, 2000):
            now = t + round(1e6 / hz * i / args.units) + 10_000
            part = payloads[i : i + 2000]
            fixes = decoder.decode(names[i : i + 2000], part, np.full(len(part), now)).fixes
            c = time.process_time()
            engine.feed(fixes, now)
            cpu += time.process_time() - c
        cpu_at.append(cpu)
    n = steps * args.units
    # steady state: the last 10 s of data (a vehicle's first fixes are its warm-up)
    tail = min(steps - 1, round(10 * hz))
    tail_cpu = cpu - cpu_at[-1 - tail] if tail > 0 else cpu
    tail_n = tail * args.units if tail > 0 else n
    print(
        f"engine alone: {args.units} units at {hz:g} Hz, {args.duration:g} s of data, rounds "
        f"every {interval_s:g} s: {cpu:.1f} CPU-s ({cpu / args.duration:.2f} per second of "
        f"data), {1e6 * cpu / n:.1f} us per fix, {n / cpu:,.0f} fixes per CPU-second; "
        f"last {tail / hz:g} s of data: {1e6 * tail_cpu / tail_n:.1f} us per fix, "
        f"{tail_n / max(tail_cpu, 1e-9):,.0f} fixes per CPU-second"
    )
    return 0


# ------------------------------------------------------------------------------- main


def write_inputs(args: argparse.Namespace, work: Path) -> tuple[dict[str, Path], np.ndarray]:
    """units.csv, sites.geojson (1,500 city sites), and the sites' centres for the fleet."""
    shape = fleet_shape(args, "fleet", None)
    units = [shape.unit_id(i) for i in range(args.units)]
    files = {"units": work / "units.csv", "sites": work / "sites.geojson"}
    files["units"].write_text(
        "unit_id,vehicle_id,driver\n" + "".join(f"{u},V{u},\n" for u in units)
    )
    sites = make_city_sites(args.sites, seed=args.seed)
    feats = []
    for s in sites:
        props: dict[str, Any] = {"site_id": s.site_id, "client_id": s.client_id,
                                 "name": s.name, "service_min": s.service_min}  # fmt: skip
        if s.radius_m is not None:
            props["radius_m"] = s.radius_m
        feats.append({"type": "Feature", "geometry": mapping(s.geometry), "properties": props})
    files["sites"].write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    centres = np.array([(s.geometry.centroid.x, s.geometry.centroid.y) for s in sites])
    return files, centres


SKIPPABLE = {"sub", "careful", "naive"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=positive_float, default=60.0)
    ap.add_argument(
        "--rate", type=positive_float, default=25_000.0, help="target publish rate, msg/s"
    )
    ap.add_argument("--units", type=positive_int, default=30_000, help="simulated units")
    ap.add_argument("--sites", type=positive_int, default=1500, help="sites in the sites file")
    ap.add_argument(
        "--dwell", type=positive_float, default=240.0, help="seconds a unit stands at its site"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=positive_int, default=3)
    ap.add_argument("--naive-duration", type=positive_float, default=20.0)
    ap.add_argument(
        "--careful-duration", type=positive_float, default=20.0,
        help="seconds of offered load for the careful naive (it then drains the backlog)",
    )  # fmt: skip
    ap.add_argument("--publishers", type=positive_int, default=2)
    ap.add_argument(
        "--patience", type=positive_float, default=30.0,
        help="stop waiting for fleetwatch to store everything after this long without progress",
    )  # fmt: skip
    ap.add_argument("--no-detection", action="store_true", help="no sites file (engine off)")
    ap.add_argument(
        "--detect-interval-ms", type=positive_float, default=None,
        help="the engine's round interval (default: fleetwatch's own default, 1000 ms)",
    )  # fmt: skip
    ap.add_argument(
        "--engine-process", action="store_true",
        help="run fleetwatch's engine in a child process (FLEETWATCH_ENGINE_PROCESS=true)",
    )  # fmt: skip
    ap.add_argument("--skip", default="", help="comma list of: sub,careful,naive")
    ap.add_argument(
        "--engine-offline", action="store_true",
        help="measure the engine alone over the same fleet and sites (no broker, no database)",
    )  # fmt: skip
    ap.add_argument("--profile", type=Path, help="pyinstrument profile of fleetwatch, repeat 1")
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if skip - SKIPPABLE:  # a misspelt name used to run the baseline it meant to skip
        ap.error(f"--skip: unknown {sorted(skip - SKIPPABLE)}; choose from sub,careful,naive")

    work = Path(tempfile.mkdtemp(prefix="fleetwatch-bench-e2e-"))
    work.chmod(0o755)
    if args.engine_offline:
        return engine_offline(args, work)
    files, centres = write_inputs(args, work)
    pg_settings = {
        "track_commit_timestamp": "on",
        "synchronous_commit": "on",
        "shared_buffers": "256MB",
        "max_wal_size": "2GB",
    }
    runs: list[FwRun] = []
    subs: list[float] = []
    careful: list[Stored] = []
    naive = math.nan
    with (
        open_embedded_broker(work / "broker") as broker,
        open_embedded_postgres(work / "pg", fsync=True, settings=pg_settings) as pg,
    ):
        print(
            f"broker {broker.kind} {broker.url}; PostgreSQL port {pg.port}; files in {work}; "
            f"{args.units} units through {args.sites} sites, {args.rate:g} msg/s offered",
            flush=True,
        )
        h, p = broker.host, broker.port
        for r in range(args.repeats):
            run = run_fleetwatch(broker.url, h, p, pg.dsn, fleet_shape(args, "fleet", centres),
                                 files, args, r, work)  # fmt: skip
            runs.append(run)
            print(f"fleetwatch repeat {r + 1}: {json.dumps(asdict(run))}", flush=True)
            if "sub" not in skip:
                subs.append(run_mosquitto_sub(h, p, fleet_shape(args, "sub", centres), args))
                print(f"mosquitto_sub repeat {r + 1}: {subs[-1]:,.0f} msg/s", flush=True)
            if "careful" not in skip:
                careful.append(
                    run_careful(h, p, pg.dsn, fleet_shape(args, "careful", centres), args, r)
                )
                print(f"careful naive repeat {r + 1}: {json.dumps(asdict(careful[-1]))}",
                      flush=True)  # fmt: skip
        if "naive" not in skip:
            naive = run_per_fix(h, p, pg.dsn, fleet_shape(args, "naive", centres), args)
            print(f"per-fix naive: {naive:.0f} fixes/s committed", flush=True)

    def med(values: list[float]) -> float:
        return float(statistics.median(values)) if values else math.nan

    fw = med([x.stored.rate_fixes_s for x in runs])
    care = med([x.rate_fixes_s for x in careful])
    sub = med(subs)
    summary = {
        "duration_s": args.duration,
        "target_rate": args.rate,
        "units": args.units,
        "sites": 0 if args.no_detection else args.sites,
        "engine_process": args.engine_process,
        "repeats": args.repeats,
        "fleetwatch_fixes_s_runs": [round(x.stored.rate_fixes_s) for x in runs],
        "fleetwatch_fixes_s_median": fw,
        "published_total": sum(x.stored.published for x in runs),
        "lost_total": sum(x.stored.lost for x in runs),
        "p50_ms_median": med([x.stored.p50_ms for x in runs]),
        "p99_ms_median": med([x.stored.p99_ms for x in runs]),
        "peak_rss_mb_max": max(x.peak_rss_mb for x in runs),
        "cpu_us_per_fix_median": med([1e6 * x.cpu_s / max(1, x.stored.stored) for x in runs]),
        "engine_peak_pending_fixes_max": max(x.engine_peak_pending_fixes for x in runs),
        "engine_backpressure_s_runs": [round(x.engine_backpressure_s, 2) for x in runs],
        "engine_seconds_total_runs": [round(x.engine_seconds_total, 2) for x in runs],
        "mosquitto_sub_msg_s_runs": [round(x) for x in subs],
        "mosquitto_sub_msg_s_median": sub,
        "careful_fixes_s_runs": [round(x.rate_fixes_s) for x in careful],
        "careful_fixes_s_median": care,
        "careful_lost_total": sum(x.lost for x in careful),
        "per_fix_naive_fixes_s": naive,
        "ratio_vs_careful": fw / care if care else math.nan,
        "ratio_vs_per_fix": fw / naive if naive else math.nan,
        "share_of_mosquitto_sub": fw / sub if sub else math.nan,
    }
    print("\nSUMMARY " + json.dumps(summary, indent=2))
    print(
        f"\nfleetwatch {fw:,.0f} fixes/s stored (median of {args.repeats}), lost "
        f"{summary['lost_total']}, p50/p99 publish->commit {summary['p50_ms_median']:.0f}/"
        f"{summary['p99_ms_median']:.0f} ms; careful naive {care:,.0f} "
        f"({summary['ratio_vs_careful']:.1f}x); per-fix naive {naive:,.0f} "
        f"({summary['ratio_vs_per_fix']:.1f}x); mosquitto_sub {sub:,.0f} msg/s "
        f"({100 * summary['share_of_mosquitto_sub']:.0f}%)"
    )
    if args.json:
        result = {
            "summary": summary,
            "runs": [asdict(x) for x in runs],
            "careful": [asdict(x) for x in careful],
        }
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if summary["lost_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
