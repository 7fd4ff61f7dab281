"""Load tester: many synthetic units publishing RMC+GGA at a target rate, and what got stored.

What is measured (docs/bench/simulator.md repeats it):

- **published**: messages the broker acknowledged (PUBACK, QoS 1), and that count per second
  of the publishing phase;
- **stored**: rows with ``unit_id LIKE '<prefix>%'`` that appeared in fleetwatch's ``fixes``
  table (count at the end minus count at the start; polled every ``poll_interval_s``), or, with
  only a metrics URL, the increase of ``fleetwatch_ingest_fixes_inserted_total``;
- **loss** = published − stored after a drain wait (0 is the only passing value);
- **latency publish → stored**: each message's fix time *is* its publish time, so fleetwatch's
  own ``fleetwatch_ingest_fix_to_commit_seconds`` histogram measures it (percentiles
  interpolated in its buckets).  From the database alone we estimate it by polling: rows are
  assumed committed in publish order (FIFO), so when the count first reaches *k*, message *k*
  was stored at most one poll interval earlier; the figure is an upper bound with the poll
  interval as resolution;
- **fleetwatch CPU and peak RSS**: psutil on ``--pid`` (CPU seconds over the run / wall
  time, RSS sampled every poll), or the ``process_*`` series of its /metrics.

Every message is for one unit; units publish round-robin so each sends at ``rate_hz`` and the
aggregate is ``units × rate_hz``.  Fix time resolution is 10 ms, so a unit's consecutive
fixes never share a time (which the ingest would drop as a duplicate).
"""

from __future__ import annotations

import math
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from simulators.publish import Pool
from simulators.synthetic import FleetShape, SyntheticFleet, publish_at_rate

__all__ = ["LoadTestParams", "SyntheticFleet", "run_load"]

METRICS_TIMEOUT_S = 5.0
#: publish times kept for the database latency estimate (8 bytes each: 160 MB at most)
MAX_TIMED = 20_000_000


class LoadTestError(RuntimeError):
    """The load test could not run or measure (the message says what to fix)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadTestParams(FleetShape):
    """The fleet (:class:`simulators.synthetic.FleetShape`) plus the run's rate and timing."""

    rate_hz: float = 1.0  # per unit
    duration_s: float = 30.0
    tick_s: float = 0.005
    drain_s: float = 60.0  # how long to wait for fleetwatch to store everything
    poll_interval_s: float = 0.25

    def __post_init__(self) -> None:
        if self.units < 1 or self.units > 1_000_000:
            raise ValueError(f"units must be 1..1,000,000, got {self.units}")
        if not 0 < self.rate_hz <= 50:
            raise ValueError(f"per-unit rate must be in (0, 50] Hz, got {self.rate_hz}")
        if not 0 < self.duration_s <= 24 * 3600:
            raise ValueError(f"duration must be in (0, 86400] s, got {self.duration_s}")

    @property
    def target_rate(self) -> float:
        return self.units * self.rate_hz


# -- what fleetwatch stored --------------------------------------------------------------------


class StoredCounter:
    """Counts the load test's rows in the database (psycopg, one short query per poll)."""

    def __init__(self, dsn: str, prefix: str) -> None:
        import psycopg

        try:
            self._conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise LoadTestError(f"cannot connect to the database: {exc}") from None
        self._sql = "SELECT count(*) FROM fixes WHERE unit_id LIKE %s"
        self._arg = prefix.replace("_", r"\_").replace("%", r"\%") + "%"

    def count(self) -> int:
        import psycopg

        try:
            row = self._conn.execute(self._sql, (self._arg,)).fetchone()
        except psycopg.Error as exc:
            raise LoadTestError(
                f"cannot count stored fixes (is fleetwatch's schema in this database?): {exc}"
            ) from None
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._conn.close()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.M)


def read_metrics(url: str) -> dict[str, float]:
    """Prometheus text → ``{"name{labels}": value}`` (only what the load test reads)."""
    try:
        with urllib.request.urlopen(url, timeout=METRICS_TIMEOUT_S) as resp:
            text = resp.read(16 << 20).decode("utf-8", "replace")
    except OSError as exc:
        raise LoadTestError(f"cannot read metrics from {url}: {exc}") from None
    out: dict[str, float] = {}
    for m in _SAMPLE.finditer(text):
        try:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        except ValueError:
            continue
    return out


def histogram_quantiles(
    before: dict[str, float], after: dict[str, float], name: str, qs: tuple[float, ...]
) -> dict[str, float | None]:
    """Quantiles of the increase of a Prometheus histogram between two scrapes."""
    pat = re.compile(re.escape(name) + r'_bucket\{.*?le="([^"]+)".*?\}')
    buckets = []
    for key, v in after.items():
        m = pat.fullmatch(key)
        if m:
            le = math.inf if m.group(1) == "+Inf" else float(m.group(1))
            buckets.append((le, v - before.get(key, 0.0)))
    buckets.sort()
    out: dict[str, float | None] = {f"p{round(q * 100, 1):g}": None for q in qs}
    if not buckets or buckets[-1][1] <= 0:
        return out
    total = buckets[-1][1]
    for q in qs:
        want = q * total
        lo_le, lo_c = 0.0, 0.0
        for le, c in buckets:
            if c >= want:
                if math.isinf(le):
                    val = lo_le
                else:
                    frac = (want - lo_c) / (c - lo_c) if c > lo_c else 1.0
                    val = lo_le + frac * (le - lo_le)
                out[f"p{round(q * 100, 1):g}"] = round(val, 4)
                break
            lo_le, lo_c = le, c
    return out


@dataclass(slots=True)
class ProcessProbe:
    """fleetwatch's CPU seconds and peak RSS, by psutil on its pid."""

    pid: int
    cpu0: float = 0.0
    peak_rss: int = 0
    _proc: Any = field(default=None, repr=False)

    def start(self) -> None:
        import psutil

        try:
            self._proc = psutil.Process(self.pid)
            self._proc.cpu_times()
        except psutil.Error as exc:
            raise LoadTestError(f"cannot watch process {self.pid}: {exc}") from None
        self.cpu0 = self._cpu_now()
        self.sample()

    def _cpu_now(self) -> float:
        """CPU seconds of the process and its live children (worker processes count too)."""
        import psutil

        t = self._proc.cpu_times()
        total = float(t.user + t.system)
        for child in self._proc.children(recursive=True):
            try:
                c = child.cpu_times()
            except psutil.Error:
                continue
            total += float(c.user + c.system)
        return total

    def sample(self) -> None:
        import psutil

        try:
            rss = int(self._proc.memory_info().rss)
            for child in self._proc.children(recursive=True):
                rss += int(child.memory_info().rss)
        except psutil.Error:
            return
        self.peak_rss = max(self.peak_rss, rss)

    def cpu_seconds(self) -> float:
        return self._cpu_now() - self.cpu0


# -- the run -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Polls:
    times: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)


def run_load(
    p: LoadTestParams,
    pool: Pool,
    *,
    stored: StoredCounter | None = None,
    metrics_url: str | None = None,
    probe: ProcessProbe | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_us: Callable[[], int] = lambda: time.time_ns() // 1000,
) -> dict[str, Any]:
    """Publish for ``duration_s``, wait for the stores to catch up, and report (a JSON dict)."""
    fleet = SyntheticFleet(p)
    n_conn = pool.connections
    # monotonic publish time of message k (k = publish order), for the first MAX_TIMED ones
    capacity = min(int(p.target_rate * p.duration_s * 1.05) + 1000, MAX_TIMED)
    pub_t = np.zeros(capacity)
    m_before = read_metrics(metrics_url) if metrics_url else {}
    base = stored.count() if stored else 0
    if probe:
        probe.start()
    polls = _Polls()
    start = clock()
    run = publish_at_rate(
        fleet,
        pool,
        rate_per_s=p.target_rate,
        duration_s=p.duration_s,
        tick_s=p.tick_s,
        pub_times=pub_t,
        poll=lambda _now: _poll(stored, base, polls, clock, probe),
        poll_interval_s=p.poll_interval_s,
        clock=clock,
        wall_us=wall_us,
    )
    sent = run.sent
    publish_s = clock() - start
    if not pool.drain(timeout_s=p.drain_s):
        raise LoadTestError(f"the broker did not acknowledge {pool.outstanding} messages")
    acked_at = clock()
    acked = pool.stats.acked
    # drain: wait until fleetwatch has stored everything (or stops making progress)
    stored_n = None
    if stored:
        deadline = acked_at + p.drain_s
        last_change, last = clock(), -1
        while clock() < deadline:
            _poll(stored, base, polls, clock, probe)
            c = polls.counts[-1]
            if c >= sent:
                break
            if c != last:
                last, last_change = c, clock()
            elif clock() - last_change > min(15.0, p.drain_s):
                break
            pool.pump(p.poll_interval_s)
        stored_n = polls.counts[-1]
    m_after = read_metrics(metrics_url) if metrics_url else {}
    report: dict[str, Any] = {
        "units": p.units,
        "rate_hz_per_unit": p.rate_hz,
        "target_rate": round(p.target_rate, 1),
        "duration_s": round(publish_s, 3),
        "published": sent,
        "acked": acked,
        "publish_rate": round(acked / publish_s, 1) if publish_s else None,
        "connections": n_conn,
    }
    if stored_n is not None:
        report["stored"] = stored_n
        report["loss"] = sent - stored_n
        report["stored_rate"] = _stored_rate(polls, start, publish_s)
        timed = pub_t[: min(sent, capacity)]
        report["latency_db_poll_s"] = _fifo_latency(polls, timed, p.poll_interval_s)
    if metrics_url:
        key = "fleetwatch_ingest_fixes_inserted_total"
        inserted = m_after.get(key, 0.0) - m_before.get(key, 0.0)
        report["metrics_inserted"] = int(inserted)
        if stored_n is None:
            report["stored"] = int(inserted)
            report["loss"] = sent - int(inserted)
        report["latency_metrics_s"] = histogram_quantiles(
            m_before, m_after, "fleetwatch_ingest_fix_to_commit_seconds", (0.5, 0.9, 0.99, 0.999)
        )
        if not probe:
            cpu = m_after.get("process_cpu_seconds_total", math.nan) - m_before.get(
                "process_cpu_seconds_total", math.nan
            )
            rss = m_after.get("process_resident_memory_bytes")
            report["fleetwatch_cpu_percent"] = (
                None if math.isnan(cpu) else round(100 * cpu / (clock() - start), 1)
            )
            report["fleetwatch_rss_mb_at_end"] = None if rss is None else round(rss / 2**20, 1)
    if probe:
        probe.sample()
        report["fleetwatch_cpu_percent"] = round(100 * probe.cpu_seconds() / (clock() - start), 1)
        report["fleetwatch_peak_rss_mb"] = round(probe.peak_rss / 2**20, 1)
    return report


def _poll(
    stored: StoredCounter | None,
    base: int,
    polls: _Polls,
    clock: Callable[[], float],
    probe: ProcessProbe | None,
) -> None:
    if stored:
        c = stored.count() - base
        polls.times.append(clock())
        polls.counts.append(c)
    if probe:
        probe.sample()


def _stored_rate(polls: _Polls, start: float, publish_s: float) -> float | None:
    """Rows per second stored while publishing (from the polls inside the publishing phase)."""
    inside = [
        (t, c) for t, c in zip(polls.times, polls.counts, strict=True) if t <= start + publish_s
    ]
    if len(inside) < 2:
        return None
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return round((c1 - c0) / (t1 - t0), 1) if t1 > t0 else None


def _fifo_latency(polls: _Polls, pub_t: npt.NDArray[np.float64], res_s: float) -> dict[str, Any]:
    """Publish → seen-in-DB latency per message under the FIFO assumption (see module doc)."""
    if len(pub_t) == 0 or not polls.counts:
        return {}
    t = np.array(polls.times)
    c = np.minimum(np.maximum.accumulate(np.array(polls.counts)), len(pub_t))
    # the first poll at which count > k: message k was visible then
    first = np.searchsorted(c, np.arange(len(pub_t)), side="right")
    seen = first < len(t)
    lat = t[first[seen]] - pub_t[seen]
    if len(lat) == 0:
        return {"resolution_s": res_s}
    q = np.percentile(lat, [50, 90, 99, 99.9])
    return {
        "p50": round(float(q[0]), 3),
        "p90": round(float(q[1]), 3),
        "p99": round(float(q[2]), 3),
        "p99.9": round(float(q[3]), 3),
        "max": round(float(lat.max()), 3),
        "resolution_s": res_s,
    }


def human_table(report: dict[str, Any]) -> str:
    """The report as aligned ``key  value`` lines for stderr."""
    rows = []
    for k, v in report.items():
        if isinstance(v, dict):
            v = "  ".join(f"{kk}={vv}" for kk, vv in v.items())
        rows.append((k, str(v)))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(w)}  {v}" for k, v in rows)
