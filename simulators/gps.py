"""What a GPS unit makes of the truth: noise, multipath, and how its epochs reach the broker.

Two stages, both vectorised over a unit's whole day:

- :func:`observe` turns true kinematics into receiver output: correlated position noise
  (an AR(1)-like random walk with the unit's σ, because real GPS error drifts rather than jumps
  every second), multipath outliers near buildings, speed/course jitter (a parked truck reports
  ~0 km/h with noise and a wandering course), satellites, HDOP, altitude.
- :func:`transmit` decides which epochs are sent in which MQTT payload and when they arrive:
  live epochs one per payload a fraction of a second after the fix; during a coverage dropout
  nothing, then the backlog oldest-first in bursts of several epochs; nothing after a unit goes
  silent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulators.drive import Kinematics

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    x: FloatArray
    y: FloatArray
    speed_kmh: FloatArray
    course: FloatArray
    hdop: FloatArray
    sats: IntArray
    alt_m: FloatArray
    multipath: npt.NDArray[np.bool_]


def _smooth_noise(rng: np.random.Generator, n: int, tau_epochs: float) -> FloatArray:
    """Unit-variance noise correlated over ~tau epochs (exponential kernel, vectorised)."""
    if n == 0:
        return np.zeros(0)
    k = max(1, int(4 * tau_epochs))
    w = np.exp(-np.arange(k) / max(tau_epochs, 1e-9))
    w /= np.sqrt((w**2).sum())
    white = rng.standard_normal(n + k - 1)
    return np.convolve(white, w, mode="valid")[:n]


def observe(
    kin: Kinematics,
    rng: np.random.Generator,
    *,
    sigma_m: float,
    rate_hz: float,
    near_buildings: npt.NDArray[np.bool_],
    multipath_rate: float,
) -> Observed:
    """Receiver output for true kinematics; ``near_buildings`` marks epochs where multipath can
    strike (with probability ``multipath_rate`` per such epoch, 30–150 m for 1–4 epochs)."""
    n = len(kin.t)
    tau = 15.0 * rate_hz  # ~15 s correlation time, whatever the rate
    ex = _smooth_noise(rng, n, tau) * sigma_m
    ey = _smooth_noise(rng, n, tau) * sigma_m
    hits = near_buildings & (rng.random(n) < multipath_rate)
    starts = np.flatnonzero(hits)
    lengths = rng.integers(1, 5, len(starts))
    mags = rng.uniform(30.0, 150.0, len(starts))
    angs = rng.uniform(0.0, 2 * np.pi, len(starts))
    mp = np.zeros(n, dtype=bool)
    for s0, ln, mag, ang in zip(
        starts.tolist(), lengths.tolist(), mags.tolist(), angs.tolist(), strict=True
    ):
        sl = slice(s0, min(n, s0 + ln))
        ex[sl] += mag * np.sin(ang)
        ey[sl] += mag * np.cos(ang)
        mp[sl] = True
    v_kmh = kin.v_mps * 3.6
    speed = np.abs(v_kmh + rng.normal(0.0, 1.0, n) * (0.3 + 0.02 * v_kmh))
    wander = np.cumsum(rng.normal(0.0, 8.0, n))
    course = (
        np.where(v_kmh < 1.0, kin.course + wander, kin.course + rng.normal(0.0, 1.5, n)) % 360.0
    )
    hdop = np.clip(0.6 + sigma_m / 10.0 + 0.3 * _smooth_noise(rng, n, 60 * rate_hz), 0.5, 9.0)
    hdop = np.where(mp, np.maximum(hdop, 2.5), hdop)
    sats = np.clip(np.round(10 + 2.5 * _smooth_noise(rng, n, 120 * rate_hz)), 4, 16)
    alt = 150.0 + 12.0 * _smooth_noise(rng, n, 300 * rate_hz)
    return Observed(
        x=kin.x + ex,
        y=kin.y + ey,
        speed_kmh=speed,
        course=course,
        hdop=np.round(hdop, 2),
        sats=sats.astype(np.int64),
        alt_m=np.round(alt, 1),
        multipath=mp,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Dropout:
    start_s: float
    end_s: float
    released_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Transmission:
    """Epoch indices in arrival order, cut into payloads.

    ``order[bounds[j]:bounds[j+1]]`` are the epochs of payload *j*, which arrives at
    ``recv_s[j]`` (non-decreasing).
    """

    order: IntArray
    bounds: IntArray
    recv_s: FloatArray


def transmit(
    t: FloatArray,
    rng: np.random.Generator,
    *,
    dropouts: list[Dropout],
    silent_from_s: float | None,
) -> Transmission:
    """Which epochs go out in which payload, and when they arrive (true clock, seconds)."""
    n = len(t)
    latency = np.minimum(0.2 + rng.exponential(0.35, n), 1.5)
    group = np.arange(n, dtype=np.int64)
    recv = t + latency
    next_group = n
    for d in dropouts:
        held = np.flatnonzero((t >= d.start_s) & (t < d.end_s))
        if len(held) == 0:
            continue
        per = int(rng.integers(10, 31))
        chunk = np.arange(len(held)) // per
        gap = float(rng.uniform(0.05, 0.3))
        group[held] = next_group + chunk
        recv[held] = d.released_s + chunk * gap + 0.01
        next_group += int(chunk[-1]) + 1
    keep = np.ones(n, dtype=bool)
    if silent_from_s is not None:
        keep = (t < silent_from_s) & (recv < silent_from_s)
    idx = np.flatnonzero(keep)
    order = idx[np.lexsort((t[idx], group[idx], np.round(recv[idx], 3)))]
    g = group[order]
    change = np.flatnonzero(np.diff(g) != 0) + 1
    bounds = np.concatenate([[0], change, [len(order)]]).astype(np.int64)
    recv_s = np.round(recv[order[bounds[:-1]]], 3) if len(order) else np.zeros(0)
    return Transmission(order=order.astype(np.int64), bounds=bounds, recv_s=recv_s)
