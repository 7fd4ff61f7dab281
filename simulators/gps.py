"""What a GPS unit makes of the truth: noise, multipath, and how its epochs reach the broker.

Two stages, both vectorised over a unit's whole day:

- :func:`observe` turns true kinematics into receiver output: correlated position noise
  (an AR(1)-like random walk with the unit's σ, because real GPS error drifts rather than jumps
  every second), multipath outliers near buildings, speed/course jitter (a parked truck reports
  ~0 km/h with noise and a wandering course), satellites, HDOP, altitude.
- :class:`MultipathNoise` (an option of :func:`observe`) is the independent fleet-day
  generator's noise model from issue 11 instead: white noise, σ 6 m parked and 3 m moving, 1 %
  of parked fixes replaced by a 40–80 m jump.  :func:`stand_and_creep` re-times a jam as that
  generator drives it: stands of minutes with short creeps at walking pace.
- :func:`transmit` decides which epochs are sent in which MQTT payload and when they arrive:
  live epochs one per payload a fraction of a second after the fix; during a coverage dropout
  nothing, then the backlog oldest-first in bursts of several epochs; nothing after a unit goes
  silent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulators.drive import DWELL, MOVE, Kinematics

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


class InvalidNoiseModel(ValueError):
    """A noise model that cannot be simulated (the message names the field to change)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MultipathNoise:
    """The independent generator's receiver noise (issue 11), for tests and ``--noise-model
    multipath``: independent (white) per-axis noise of ``parked_sigma_m`` while the truck stands
    (true speed below ``parked_below_mps``) and ``moving_sigma_m`` while it moves; a share
    ``outlier_share`` of the parked fixes is *replaced* by the true position moved 40–80 m in a
    random direction, for ``burst_fixes`` consecutive epochs (1: a lone outlier).

    Unlike the default model's drifting error, white noise at σ 6 m makes the step into or out
    of a 40–45 m outlier fall under the 40 m jump slack about half the time: the case that used
    to cut stops.
    """

    parked_sigma_m: float = 6.0
    moving_sigma_m: float = 3.0
    outlier_share: float = 0.01
    outlier_min_m: float = 40.0
    outlier_max_m: float = 80.0
    burst_fixes: int = 1
    parked_below_mps: float = 0.3

    def __post_init__(self) -> None:
        for name in ("parked_sigma_m", "moving_sigma_m", "outlier_min_m", "parked_below_mps"):
            if not getattr(self, name) >= 0:
                raise InvalidNoiseModel(f"{name}={getattr(self, name)!r} must be >= 0")
        if not 0.0 <= self.outlier_share <= 1.0:
            raise InvalidNoiseModel(f"outlier_share={self.outlier_share!r} must be in [0, 1]")
        if not self.outlier_min_m <= self.outlier_max_m:
            raise InvalidNoiseModel("outlier_min_m must not exceed outlier_max_m")
        if self.burst_fixes < 1:
            raise InvalidNoiseModel(f"burst_fixes={self.burst_fixes} must be >= 1")


def multipath_noise(
    v_mps: FloatArray, rng: np.random.Generator, model: MultipathNoise
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Position errors (east, north, metres) and the outlier mask for true speeds ``v_mps``."""
    n = len(v_mps)
    parked = v_mps < model.parked_below_mps
    sigma = np.where(parked, model.parked_sigma_m, model.moving_sigma_m)
    ex = rng.standard_normal(n) * sigma
    ey = rng.standard_normal(n) * sigma
    # one draw per epoch whatever the share: the same seed with outlier_share=0 is the same day
    # without its outliers (a controlled comparison, see docs/detection.md)
    hit = rng.random(n) < model.outlier_share / model.burst_fixes
    all_mags = rng.uniform(model.outlier_min_m, model.outlier_max_m, n)
    all_angs = rng.uniform(0.0, 2 * np.pi, n)
    starts = np.flatnonzero(parked & hit)
    mags, angs = all_mags[starts], all_angs[starts]
    mp = np.zeros(n, dtype=bool)
    for k in range(model.burst_fixes):  # a burst stays at one offset, as multipath does
        idx = starts + k
        ok = idx < n
        ex[idx[ok]] = mags[ok] * np.sin(angs[ok])
        ey[idx[ok]] = mags[ok] * np.cos(angs[ok])
        mp[idx[ok]] = True
    return ex, ey, mp


def stand_and_creep(
    kin: Kinematics,
    jams: list[tuple[float, float]],
    rng: np.random.Generator,
    *,
    creep_kmh: tuple[float, float] = (5.0, 7.0),
    stand_min_s: float = 60.0,
) -> Kinematics:
    """The same day with each jam ``(t_start, t_end)`` driven as stands with short creeps.

    The default simulator crawls through a jam smoothly; the independent generator (and real
    queues) stand for minutes and creep a few metres at walking pace in between.  The jam covers
    the same stretch of street in the same time (so the truth's stop is unchanged); it starts
    and ends with a stand.  Creeps: one per ``stand_min_s``-and-more of jam, at most 4.
    """
    x, y, v = kin.x.copy(), kin.y.copy(), kin.v_mps.copy()
    kind = kin.phase_kind.copy()
    for t_a, t_b in jams:
        idx = np.flatnonzero((kin.t >= t_a) & (kin.t <= t_b))
        if len(idx) < 3:
            continue
        px, py = kin.x[idx], kin.y[idx]
        cum = np.concatenate(([0.0], np.cumsum(np.hypot(np.diff(px), np.diff(py)))))
        length, dur = float(cum[-1]), float(t_b - t_a)
        k = int(min(4, max(1, dur // (2 * stand_min_s)), int(rng.integers(2, 5))))
        speed = float(rng.uniform(*creep_kmh)) / 3.6
        creep_s = length / k / speed
        stand_total = dur - k * creep_s
        if stand_total < (k + 1) * stand_min_s / 2:
            continue  # too short a jam to stand in: leave it as the default crawl
        stands = rng.dirichlet(np.full(k + 1, 4.0)) * stand_total
        # creep j runs from c0[j] to c0[j] + creep_s (seconds into the jam)
        c0 = np.cumsum(stands[:-1]) + np.arange(k) * creep_s
        tau = kin.t[idx] - t_a
        j = np.clip(np.searchsorted(c0, tau, side="right") - 1, -1, k - 1)
        into = np.where(j >= 0, np.clip(tau - c0[np.maximum(j, 0)], 0.0, creep_s), 0.0)
        frac = np.where(j >= 0, (np.maximum(j, 0) + into / creep_s) / k, 0.0)
        moving = (j >= 0) & (into > 0.0) & (into < creep_s)
        x[idx] = np.interp(frac * length, cum, px)
        y[idx] = np.interp(frac * length, cum, py)
        v[idx] = np.where(moving, speed, 0.0)
        kind[idx] = np.where(moving, MOVE, DWELL)
    return Kinematics(t=kin.t, x=x, y=y, v_mps=v, course=kin.course, phase_kind=kind)


def observe(
    kin: Kinematics,
    rng: np.random.Generator,
    *,
    sigma_m: float,
    rate_hz: float,
    near_buildings: npt.NDArray[np.bool_],
    multipath_rate: float,
    noise: MultipathNoise | None = None,
) -> Observed:
    """Receiver output for true kinematics; ``near_buildings`` marks epochs where multipath can
    strike (with probability ``multipath_rate`` per such epoch, 30–150 m for 1–4 epochs).

    With ``noise`` the position error is that model's instead (``sigma_m``, ``near_buildings``
    and ``multipath_rate`` are then unused for positions).
    """
    n = len(kin.t)
    if noise is not None:
        ex, ey, mp = multipath_noise(kin.v_mps, rng, noise)
    else:
        ex, ey, mp = _default_noise(
            n, rng, sigma_m=sigma_m, rate_hz=rate_hz, near=near_buildings, rate=multipath_rate
        )
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


def _default_noise(
    n: int,
    rng: np.random.Generator,
    *,
    sigma_m: float,
    rate_hz: float,
    near: npt.NDArray[np.bool_],
    rate: float,
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Drifting error (~15 s correlation) plus 30–150 m multipath for 1–4 epochs near
    buildings (the simulator's own model; its random draws are unchanged)."""
    tau = 15.0 * rate_hz  # ~15 s correlation time, whatever the rate
    ex = _smooth_noise(rng, n, tau) * sigma_m
    ey = _smooth_noise(rng, n, tau) * sigma_m
    hits = near & (rng.random(n) < rate)
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
    return ex, ey, mp


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
