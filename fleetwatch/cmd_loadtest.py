"""Drive a running fleetwatch with synthetic units at a target fix rate, and report.

  fleetwatch loadtest --vehicles 10000 --rate 2 --duration 60 \\
      [--broker mqtt://127.0.0.1:1883] [--database-url DSN] [--metrics-url URL] [--pid PID]

Each of N units (``lt-000000``…) publishes one RMC+GGA payload per 1/RATE s to
``fleet/<unit>/nmea`` at QoS 1 (aggregate N×RATE fixes/s), over --connections connections; the
fix time is the publish time.  Reports: achieved publish rate, rows fleetwatch stored (database
count of ``lt-%`` rows and/or its /metrics), loss after a drain wait, publish→stored latency,
fleetwatch's CPU and peak RSS.  One JSON object on stdout, a table on stderr.  fleetwatch must
accept the units (``FLEETWATCH_ACCEPT_UNKNOWN_UNITS`` or a units file: --write-units FILE
writes one).  Only loopback brokers or the configured one (FLEETWATCH_MQTT_URL) are accepted.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fleetwatch.cli_types import non_negative_float, positive_float, positive_int
from simulators.loadtest import (
    LoadTestError,
    LoadTestParams,
    ProcessProbe,
    StoredCounter,
    human_table,
    run_load,
)
from simulators.mqtt_wire import RawPublisherPool
from simulators.publish import (
    BrokerUnavailable,
    Pool,
    PublisherPool,
    TargetRefused,
    check_target,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = LoadTestParams()
    parser.add_argument(
        "--vehicles", type=positive_int, default=d.units, help=f"units (default {d.units})"
    )
    parser.add_argument(
        "--rate", type=positive_float, default=d.rate_hz, help="Hz per unit (default 1)"
    )
    parser.add_argument(
        "--duration", type=positive_float, default=d.duration_s, help="publishing seconds"
    )
    parser.add_argument("--broker", help="mqtt://host:port (default: the configured broker)")
    parser.add_argument("--database-url", help="count stored rows here (default: configured)")
    parser.add_argument("--metrics-url", help="fleetwatch's /metrics (latency histogram, CPU)")
    parser.add_argument("--pid", type=positive_int, help="fleetwatch's process id (CPU, peak RSS)")
    parser.add_argument(
        "--connections", type=positive_int, default=4, help="MQTT connections (default 4)"
    )
    parser.add_argument("--max-inflight", type=positive_int, default=1000, help="per connection")
    parser.add_argument(
        "--client",
        choices=("raw", "paho"),
        default="raw",
        help="raw: batched publish-only MQTT 3.1.1 (fast, default); paho: paho-mqtt",
    )
    parser.add_argument(
        "--drain", type=non_negative_float, default=d.drain_s, help="seconds to wait for stores"
    )
    parser.add_argument("--unit-prefix", default=d.unit_prefix,
                        help=f"unit ids are PREFIX000000... (default {d.unit_prefix})")  # fmt: skip
    parser.add_argument("--write-units", type=Path, help="write a units.csv for the units and exit")
    parser.add_argument("--no-database", action="store_true", help="publish only, count nothing")
    parser.add_argument(
        "--sites", type=Path,
        help="a sites file (GeoJSON or CSV, as FLEETWATCH_SITES_FILE): each unit drives a circle "
        "through one of its sites and stands there --dwell s a lap, so detection has work",
    )  # fmt: skip
    parser.add_argument(
        "--dwell", type=positive_float, default=d.dwell_s,
        help=f"seconds at the site per lap, with --sites (default {d.dwell_s:g})",
    )  # fmt: skip


def site_centres(path: Path) -> npt.NDArray[np.float64]:
    """(lon, lat) of every site's centre in a sites file (the engine's own loader)."""
    from fleetwatch.engine_setup import SitesFileError, load_sites

    try:
        load = load_sites(path, source="--sites")  # it names the option, and no usable site
    except SitesFileError as exc:
        raise LoadTestError(str(exc)) from None
    return np.array([(s.geometry.centroid.x, s.geometry.centroid.y) for s in load.sites])


class OutageTolerantCounter(StoredCounter):
    """Counts the load test's rows and rides through database outages.

    The load test is the tool that proves fleetwatch's outage promise, so it must not die when
    the database goes away: while the database is unavailable the last count is returned (the
    counts pause; fleetwatch holds and the broker queues), the connection is reopened at the
    next poll, and one line says when the database went away and one when it came back.
    A database that never answers within ``connect_wait_s`` at start is an error.
    """

    def __init__(self, dsn: str, prefix: str, *, connect_wait_s: float = 30.0) -> None:
        from fleetwatch.health import DependencyLog

        self._dsn = dsn
        self._sql = "SELECT count(*) FROM fixes WHERE unit_id LIKE %s"
        self._arg = prefix.replace("_", r"\_").replace("%", r"\%") + "%"
        self._conn: Any = None
        self._last = 0
        self.outages = 0
        self.dep = DependencyLog("database", "--database-url / FLEETWATCH_DATABASE_URL")
        deadline = time.monotonic() + connect_wait_s
        while not self._try_count():
            if time.monotonic() > deadline:
                raise LoadTestError(
                    f"the database did not answer within {connect_wait_s:g} s: check "
                    "--database-url (or FLEETWATCH_DATABASE_URL)"
                )
            time.sleep(1.0)  # a CLI waiting for its database at start, not logic

    def _try_count(self) -> bool:
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=3)
            row = self._conn.execute(self._sql, (self._arg,)).fetchone()
        except psycopg.errors.UndefinedTable as exc:
            raise LoadTestError(
                "the database has no fixes table: is this fleetwatch's database (run "
                f"`fleetwatch run` against it once)? ({' '.join(str(exc).split())})"
            ) from None
        except psycopg.OperationalError as exc:
            from fleetwatch.health import DepState

            if self.dep.state is DepState.UP:
                self.outages += 1
            self.dep.failed("count stored fixes", str(exc), None)
            self.close()
            return False
        self.dep.ok("count stored fixes")
        self._last = int(row[0]) if row else 0
        return True

    def count(self) -> int:
        self._try_count()
        return self._last

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _configured() -> tuple[str | None, str | None]:
    from fleetwatch.config import Settings

    s = Settings.load()
    return s.mqtt_url, s.database_url


def run(args: argparse.Namespace) -> int:
    from ingest.mqtt import parse_mqtt_url

    try:
        p = LoadTestParams(
            units=args.vehicles,
            rate_hz=args.rate,
            duration_s=args.duration,
            unit_prefix=args.unit_prefix,
            drain_s=args.drain,
            sites_lonlat=site_centres(args.sites) if args.sites else None,
            dwell_s=args.dwell,
        )
        if args.write_units:
            with args.write_units.open("w", newline="", encoding="utf-8") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(["unit_id", "vehicle_id", "driver"])
                for i in range(p.units):
                    w.writerow([p.unit_id(i), f"lt-vehicle-{i:06d}", "load test"])
            return 0
        conf_mqtt, conf_db = _configured()
        url = args.broker or conf_mqtt
        if not url:
            raise LoadTestError("no broker: give --broker or set FLEETWATCH_MQTT_URL")
        target = parse_mqtt_url(url)
        allowed = (
            [(parse_mqtt_url(conf_mqtt).host, parse_mqtt_url(conf_mqtt).port)] if conf_mqtt else []
        )
        check_target(target.host, target.port, allowed)
        dsn = None if args.no_database else (args.database_url or conf_db)
        stored = OutageTolerantCounter(dsn, p.unit_prefix) if dsn else None
        probe = ProcessProbe(pid=args.pid) if args.pid else None
        pool_cls: type[RawPublisherPool] | type[PublisherPool] = (
            RawPublisherPool if args.client == "raw" else PublisherPool
        )
        pool: Pool = pool_cls(
            target.host,
            target.port,
            connections=args.connections,
            client_id_prefix=f"fleetwatch-loadtest-{int(time.time())}",
            username=target.username,
            password=target.password,
            max_inflight=args.max_inflight,
        )
        pool.connect()
        try:
            report = run_load(p, pool, stored=stored, metrics_url=args.metrics_url, probe=probe)
            if stored is not None:
                report["database_outages_seen"] = stored.outages
        finally:
            pool.close()
            if stored:
                stored.close()
    except TargetRefused as exc:
        print(f"fleetwatch loadtest: refused: {exc}", file=sys.stderr)
        return 2
    except (LoadTestError, BrokerUnavailable, ValueError, OSError) as exc:
        print(f"fleetwatch loadtest: error: {exc}", file=sys.stderr)
        return 2
    print(human_table(report), file=sys.stderr)
    print(json.dumps(report))
    return 1 if report.get("loss", 0) else 0
