"""Load tester: the highest QoS 1 publish rate one process sustains against a private Mosquitto.

Starts its own Mosquitto on a free loopback port (no persistence, no subscriber: the broker
acknowledges and drops, so only the publisher and the broker are measured), then runs the
load tester's publishing loop for 10,000 synthetic units (RMC+GGA per message, ~150 bytes)
with an unreachable target rate, i.e. as fast as the broker acknowledges with at most
``max_inflight`` unacknowledged messages per connection.  Figure: the batched publish-only
client (``simulators.mqtt_wire``, what ``fleetwatch loadtest`` uses).  Baseline in the same
run: the same loop over paho-mqtt 2.2 clients (``simulators.publish.PublisherPool``).
Medians of --repeats runs; messages counted only when the broker's PUBACK came back.

    python benchmarks/bench_loadtest.py [--seconds 5] [--repeats 3] [--connections 4]

With ``--fleetwatch UNITS RATE SECONDS`` it instead runs ``fleetwatch loadtest`` against a real
``fleetwatch run`` with a private broker and PostgreSQL (fleetwatch.embedded), accepting
unknown units, and prints the load tester's report (a worked example, not a comparison).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _args import positive_float, positive_int

from simulators.loadtest import LoadTestParams, run_load
from simulators.mqtt_wire import RawPublisherPool
from simulators.publish import Pool, PublisherPool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = workdir / "m.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nmax_inflight_messages 0\n"
    )
    proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def one(kind: str, port: int, seconds: float, connections: int, inflight: int) -> float:
    cls = RawPublisherPool if kind == "raw" else PublisherPool
    pool: Pool = cls(
        "127.0.0.1",
        port,
        connections=connections,
        client_id_prefix=f"bench-{kind}",
        max_inflight=inflight,
    )
    pool.connect()
    try:
        p = LoadTestParams(units=10_000, rate_hz=50.0, duration_s=seconds, drain_s=30.0)
        report = run_load(p, pool)
    finally:
        pool.close()
    return float(report["acked"]) / float(report["duration_s"])


def against_fleetwatch(units: int, rate: float, seconds: float) -> int:
    import os
    import urllib.request

    from fleetwatch.config import Settings
    from fleetwatch.embedded import open_private_servers

    base = Path(tempfile.mkdtemp(prefix="bench-lt-fw-"))
    base.chmod(0o755)  # the embedded PostgreSQL runs as 'nobody' when we are root
    try:
        with open_private_servers(Settings(), base) as ps:
            s = ps.settings
            port = free_port()
            env = dict(
                os.environ,
                FLEETWATCH_MQTT_URL=s.mqtt_url or "",
                FLEETWATCH_DATABASE_URL=s.database_url or "",
                FLEETWATCH_ACCEPT_UNKNOWN_UNITS="true",
                FLEETWATCH_HTTP_PORT=str(port),
                FLEETWATCH_MQTT_VERSION=str(s.mqtt_version),
                FLEETWATCH_LOG_LEVEL="WARNING",
            )
            fw = subprocess.Popen([sys.executable, "-m", "fleetwatch", "run"], env=env)
            metrics = f"http://127.0.0.1:{port}/metrics"
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(metrics, timeout=1).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or fw.poll() is not None:
                        fw.kill()
                        raise RuntimeError("fleetwatch run did not start") from None
                    time.sleep(0.2)
            try:
                cmd = [
                    sys.executable,
                    "-m",
                    "fleetwatch",
                    "loadtest",
                    "--vehicles",
                    str(units),
                    "--rate",
                    str(rate),
                    "--duration",
                    str(seconds),
                    "--pid",
                    str(fw.pid),
                    "--metrics-url",
                    metrics,
                ]
                return subprocess.run(cmd, env=env, check=False).returncode
            finally:
                fw.terminate()
                fw.wait(30)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--fleetwatch", nargs=3, type=positive_float, metavar=("UNITS", "RATE", "SECONDS")
    )
    ap.add_argument("--seconds", type=positive_float, default=5.0)
    ap.add_argument("--repeats", type=positive_int, default=3)
    ap.add_argument("--connections", type=positive_int, default=4)
    ap.add_argument("--max-inflight", type=positive_int, default=1000)
    a = ap.parse_args()
    if a.fleetwatch:
        return against_fleetwatch(int(a.fleetwatch[0]), a.fleetwatch[1], a.fleetwatch[2])
    with tempfile.TemporaryDirectory(prefix="bench-lt-") as d:
        proc, port = start_mosquitto(Path(d))
        try:
            res: dict[str, list[float]] = {"raw": [], "paho": []}
            for _ in range(a.repeats):
                for kind in res:
                    res[kind].append(one(kind, port, a.seconds, a.connections, a.max_inflight))
        finally:
            proc.terminate()
            proc.wait(10)
    raw = statistics.median(res["raw"])
    paho = statistics.median(res["paho"])
    print(
        f"10,000 units, QoS 1, {a.connections} connections, {a.max_inflight} in flight each, "
        f"{a.seconds:g} s runs, private mosquitto on loopback"
    )
    print(
        f"batched raw client (fleetwatch loadtest): {raw:10,.0f} msg/s  "
        f"runs {[round(x) for x in res['raw']]}"
    )
    print(
        f"baseline paho-mqtt 2.2 pool          : {paho:10,.0f} msg/s  "
        f"runs {[round(x) for x in res['paho']]}"
    )
    print(f"ratio                                : {raw / paho:10.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
