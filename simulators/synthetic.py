"""One synthetic fleet: every simulated unit that is not a scenario comes from here.

Used by the load tester (``fleetwatch loadtest``), the demo's synthetic fleet, and the decode,
MQTT-receive and end-to-end benchmarks, so that what they measure is the same traffic (before,
each had its own generator and they had drifted: precomputed sentences, one Python ``Fix`` per
message, fixed positions).

- **Positions are a function of time** (:meth:`SyntheticFleet.columns`): each unit drives a circle
  of 200–800 m at 10–50 km/h.  Given site centres (``sites_lonlat``), each unit's circle passes
  through one site and the unit *stops there* for ``dwell_s`` every lap, so geofence matching
  and visit detection have real work (entries, dwells, exits), not points in empty space.
- **Payloads are built vectorised** by the project's NMEA writer (:mod:`simulators.nmea_writer`):
  one numpy pass per publish step, not one ``Fix`` per message.
- **Bad sentences** can be injected (:func:`corrupt`): one character flipped, so the checksum no
  longer vouches for it and ingest must dead-letter it.
- **One publishing loop** (:func:`publish_at_rate`) over any :class:`simulators.publish.Pool`
  (the raw-socket :class:`simulators.mqtt_wire.RawPublisherPool` for load), paced by an
  injected clock.

Fix times are the publish time rounded down to 10 ms (NMEA carries centiseconds), so a unit's
consecutive fixes never share a time as long as it publishes at ≤ 50 Hz.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from simulators.nmea_writer import FixColumns, epoch_bytes
from simulators.publish import Pool

EARTH_M_PER_DEG = 111_195.0
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetShape:
    """What the fleet looks like; the same shape and seed give the same fleet."""

    units: int = 10_000
    unit_prefix: str = "lt-"
    topic_root: str = "fleet"
    centre_lat: float = 55.7558
    centre_lon: float = 37.6173
    seed: int = 1
    #: site centres (lon, lat), shape (n, 2); unit i drives through site ``i % n``.  None: the
    #: units circle random points within ±0.15° of the centre and never stop
    sites_lonlat: FloatArray | None = field(default=None, compare=False, repr=False)
    #: how long a unit stands at its site every lap (only with ``sites_lonlat``)
    dwell_s: float = 240.0

    def unit_id(self, i: int) -> str:
        return f"{self.unit_prefix}{i:06d}"


class SyntheticFleet:
    """Positions and NMEA payloads of every unit as a function of time (sans-I/O)."""

    def __init__(self, shape: FleetShape) -> None:
        p = shape
        rng = np.random.Generator(np.random.PCG64(p.seed))
        n = p.units
        self.shape = p
        cos0 = math.cos(math.radians(p.centre_lat))
        self.cos0 = cos0
        lat0 = p.centre_lat + rng.uniform(-0.15, 0.15, n)
        lon0 = p.centre_lon + rng.uniform(-0.15, 0.15, n) / cos0
        self.radius_m = rng.uniform(200, 800, n)
        self.omega = rng.uniform(10, 50, n) / 3.6 / self.radius_m  # rad/s
        self.phase = rng.uniform(0, 2 * math.pi, n)
        self.sats = rng.integers(6, 14, n)
        self.dwell_s = np.zeros(n)
        if p.sites_lonlat is not None and len(p.sites_lonlat):
            # circle through the unit's site: the site is at angle `phase` on the circle
            site = np.asarray(p.sites_lonlat, dtype=np.float64)[np.arange(n) % len(p.sites_lonlat)]
            self.dwell_s[:] = p.dwell_s
            east = self.radius_m * np.cos(self.phase)
            north = self.radius_m * np.sin(self.phase)
            lat0 = site[:, 1] - north / EARTH_M_PER_DEG
            lon0 = site[:, 0] - east / (EARTH_M_PER_DEG * cos0)
            # where in its lap each unit starts (seconds), so arrivals are spread over time
            lap_s = self.dwell_s + 2 * math.pi / self.omega
            self.offset_s = rng.uniform(0, 1, n) * lap_s
        else:
            self.offset_s = np.zeros(n)
        self.lat0, self.lon0 = lat0, lon0
        self.topics = [f"{p.topic_root}/{p.unit_id(i)}/nmea" for i in range(n)]

    def columns(self, idx: IntArray, t_us: int) -> FixColumns:
        """The fix of every unit in ``idx`` at ``t_us`` (fix time rounded down to 10 ms)."""
        t = t_us / 1e6
        r = self.radius_m[idx]
        omega = self.omega[idx]
        dwell = self.dwell_s[idx]
        lap = dwell + 2 * math.pi / omega
        u = np.mod(t + self.offset_s[idx], lap)
        standing = u < dwell
        a = self.phase[idx] + omega * np.maximum(u - dwell, 0.0)
        lat = self.lat0[idx] + r * np.sin(a) / EARTH_M_PER_DEG
        lon = self.lon0[idx] + r * np.cos(a) / (EARTH_M_PER_DEG * self.cos0)
        course = (np.degrees(-a) % 360.0 + 360.0) % 360.0
        k = len(idx)
        return FixColumns(
            t_us=np.full(k, t_us - t_us % 10_000, dtype=np.int64),
            lat=lat,
            lon=lon,
            speed_kmh=np.where(standing, 0.0, omega * r * 3.6),
            course=course,
            quality=np.ones(k, dtype=np.int64),
            sats=self.sats[idx].astype(np.int64),
            hdop=np.full(k, 0.9),
            alt_m=np.full(k, 150.0),
        )

    def payloads(self, idx: IntArray, t_us: int) -> list[bytes]:
        """One RMC+GGA payload per unit in ``idx``, all with fix time ``t_us``."""
        buf, off = epoch_bytes(self.columns(idx, t_us), talker="GP")
        o = off.tolist()
        return [buf[o[2 * i] : o[2 * i + 2]] for i in range(len(idx))]


def corrupt(payload: bytes) -> bytes:
    """Flip one character of the first sentence: its checksum no longer vouches for it."""
    i = payload.index(b",") + 3
    return payload[:i] + (b"7" if payload[i : i + 1] != b"7" else b"8") + payload[i + 1 :]


def inject_bad(payloads: list[bytes], *, first_seq: int, bad_every: int) -> int:
    """Corrupt (in place) every payload whose sequence number ``first_seq + i`` is
    ``bad_every - 1`` modulo ``bad_every`` (0: none); returns how many were corrupted."""
    if bad_every <= 0:
        return 0
    start = (bad_every - 1 - first_seq) % bad_every
    hit = range(start, len(payloads), bad_every)
    for i in hit:
        payloads[i] = corrupt(payloads[i])
    return len(hit)


@dataclass(slots=True)
class PublishRun:
    """What :func:`publish_at_rate` did (``acked`` is the pool's count after its drain)."""

    sent: int = 0
    bad: int = 0
    start: float = 0.0
    end: float = 0.0


def publish_at_rate(
    fleet: SyntheticFleet,
    pool: Pool,
    *,
    rate_per_s: float,
    duration_s: float,
    max_messages: int | None = None,
    unit_indices: IntArray | None = None,
    bad_every: int = 0,
    tick_s: float = 0.005,
    max_step: int = 5_000,
    pub_times: FloatArray | None = None,
    poll: Callable[[float], None] | None = None,
    poll_interval_s: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
    wall_us: Callable[[], int] = lambda: time.time_ns() // 1000,
) -> PublishRun:
    """Publish round-robin over ``unit_indices`` (default: every unit) at ``rate_per_s``
    messages/s in total for ``duration_s`` (or until ``max_messages`` are sent), never more
    than the pool's in-flight window outstanding; returns without draining (the caller decides
    how long to wait for acks).

    ``pub_times[k]`` gets the clock time of message *k* (as many as fit); ``poll(now)`` is
    called every ``poll_interval_s`` (the load tester counts stored rows there).
    """
    units = np.arange(fleet.shape.units, dtype=np.int64) if unit_indices is None else unit_indices
    n_units = len(units)
    n_conn = pool.connections
    window = pool.max_inflight * n_conn
    run = PublishRun(start=clock())
    end = run.start + duration_s
    cursor = 0
    next_poll = run.start + poll_interval_s
    cap = 0 if pub_times is None else len(pub_times)
    while True:
        now = clock()
        if now >= end or run.sent == max_messages:
            break
        due = int(min((now - run.start) * rate_per_s, max_messages or math.inf))
        k = min(due - run.sent, max(0, window - pool.outstanding), max_step)
        if k > 0:
            idx = units[(cursor + np.arange(k, dtype=np.int64)) % n_units]
            cursor = (cursor + k) % n_units
            payloads = fleet.payloads(idx, wall_us())
            run.bad += inject_bad(payloads, first_seq=run.sent, bad_every=bad_every)
            t_pub = clock()
            topics = fleet.topics
            for u, payload in zip(idx.tolist(), payloads, strict=True):
                pool.publish(u % n_conn, topics[u], payload)
            if pub_times is not None and run.sent < cap:
                pub_times[run.sent : min(run.sent + k, cap)] = t_pub
            run.sent += k
        pool.pump(0.0 if k > 0 else tick_s)
        if poll is not None and now >= next_poll:
            next_poll = now + poll_interval_s
            poll(now)
    run.end = clock()
    return run
