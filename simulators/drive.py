"""Vehicle kinematics: a day as a list of motion phases, sampled at the unit's epochs with numpy.

A vehicle's day is one long polyline (depot → stops → depot along streets) and a timeline of
*phases* over distance along it:

- ``MOVE``: a trapezoidal speed profile from standstill to standstill over ``length_m``
  (accelerate, cruise at ``v_mps``, brake), e.g. from one turn or traffic light to the next;
- ``DWELL``: standing still (service at a site, a traffic light, lunch, waiting at the depot);
- ``CRAWL``: stop-and-go over ``length_m`` in ``duration_s`` (a jam or congested traffic):
  ``s(τ) = L(τ/D − sin(2πkτ/D)/(2πk))``, monotone, speed between 0 and 2L/D.

Phases are a few hundred Python tuples per vehicle; the ~30,000 epochs of a 1 Hz day are
evaluated in one vectorised pass (``sample``), never one Python object per fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

MOVE, DWELL, CRAWL = 0, 1, 2
ACCEL_MPS2 = 1.4


@dataclass(frozen=True, slots=True)
class Phase:
    kind: int
    length_m: float
    duration_s: float
    v_mps: float = 0.0  # MOVE: cruise speed
    cycles: int = 1  # CRAWL: stop-and-go cycles


def move_phase(length_m: float, v_mps: float) -> Phase:
    """A standstill-to-standstill move; a short one never reaches cruise (triangle profile)."""
    a = ACCEL_MPS2
    vp = min(v_mps, math.sqrt(length_m * a))
    d_acc = vp * vp / (2 * a)
    t = 2 * vp / a + (length_m - 2 * d_acc) / vp if vp > 0 else 0.0
    return Phase(MOVE, length_m, t, vp)


def crawl_phase(length_m: float, duration_s: float, period_s: float = 90.0) -> Phase:
    return Phase(CRAWL, length_m, duration_s, 0.0, max(1, round(duration_s / period_s)))


def dwell_phase(duration_s: float) -> Phase:
    return Phase(DWELL, 0.0, duration_s)


@dataclass(slots=True)
class Timeline:
    """A vehicle's polyline and phases under construction, then sampled.

    ``marks`` name instants (e.g. ``("park", "S0012")``) with their time, for the ground truth.
    """

    t0: float
    x: list[FloatArray] = field(default_factory=list)
    y: list[FloatArray] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    marks: list[tuple[str, str, float]] = field(default_factory=list)
    now: float = 0.0
    s: float = 0.0

    def __post_init__(self) -> None:
        self.now = self.t0

    def extend_path(self, x: FloatArray, y: FloatArray) -> None:
        if self.x:
            x, y = x[1:], y[1:]  # the route starts where the previous one ended
        self.x.append(x)
        self.y.append(y)

    def add(self, phase: Phase) -> None:
        self.phases.append(phase)
        self.now += phase.duration_s
        self.s += phase.length_m

    def mark(self, kind: str, ref: str) -> None:
        self.marks.append((kind, ref, self.now))

    def sample(self, t: FloatArray) -> Kinematics:
        """True position, speed and course at times ``t`` (seconds, the timeline's clock)."""
        px = np.concatenate(self.x)
        py = np.concatenate(self.y)
        seg = np.hypot(np.diff(px), np.diff(py))
        cum = np.concatenate([[0.0], np.cumsum(seg)])
        kinds = np.array([p.kind for p in self.phases])
        lengths = np.array([p.length_m for p in self.phases])
        durs = np.array([p.duration_s for p in self.phases])
        vcr = np.array([p.v_mps for p in self.phases])
        cyc = np.array([p.cycles for p in self.phases], dtype=np.float64)
        starts = self.t0 + np.concatenate([[0.0], np.cumsum(durs)[:-1]])
        s_start = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
        k = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(starts) - 1)
        tau = np.clip(t - starts[k], 0.0, durs[k])
        L, D, V, C, K = lengths[k], durs[k], vcr[k], cyc[k], kinds[k]
        s = np.zeros_like(t)
        v = np.zeros_like(t)
        m = K == MOVE
        if m.any():
            a = ACCEL_MPS2
            tm, Lm, Vm, Dm = tau[m], L[m], V[m], D[m]
            t_acc = Vm / a
            d_acc = Vm * t_acc / 2
            up = tm < t_acc
            down = tm > Dm - t_acc
            sm = np.where(up, 0.5 * a * tm**2, d_acc + Vm * (tm - t_acc))
            sm = np.where(down & ~up, Lm - 0.5 * a * (Dm - tm) ** 2, sm)
            vm = np.where(up, a * tm, np.where(down, a * (Dm - tm), Vm))
            s[m] = np.clip(sm, 0.0, Lm)
            v[m] = np.maximum(vm, 0.0)
        c = K == CRAWL
        if c.any():
            tc, Lc, Dc, Cc = tau[c], L[c], D[c], C[c]
            w = 2 * np.pi * Cc / Dc
            s[c] = Lc * (tc / Dc - np.sin(w * tc) / (w * Dc))
            v[c] = (Lc / Dc) * (1 - np.cos(w * tc))
        s = np.clip(s + s_start[k], 0.0, cum[-1])
        x = np.interp(s, cum, px)
        y = np.interp(s, cum, py)
        si = np.clip(np.searchsorted(cum, s, side="left"), 1, len(cum) - 1)
        course = np.degrees(np.arctan2(px[si] - px[si - 1], py[si] - py[si - 1])) % 360.0
        return Kinematics(t=t, x=x, y=y, v_mps=v, course=course, phase_kind=K)


@dataclass(frozen=True, slots=True)
class Kinematics:
    """True state at each epoch: metres, m/s, degrees true; the phase kind for the GPS model."""

    t: FloatArray
    x: FloatArray
    y: FloatArray
    v_mps: FloatArray
    course: FloatArray
    phase_kind: npt.NDArray[np.int_]


def street_phases(
    x: FloatArray,
    y: FloatArray,
    rng: np.random.Generator,
    *,
    v_kmh: tuple[float, float],
    light_p: float = 0.35,
    keep_moving_near: tuple[float, float, float] | None = None,
) -> list[Phase]:
    """Phases that drive a route: brake at every turn, sometimes wait at a light.

    Cruise speed per stretch is uniform in ``v_kmh``.  ``keep_moving_near = (x, y, r)`` forbids
    braking within ``r`` metres of a point (a drive-by must cross the fence at speed).
    """
    seg = np.hypot(np.diff(x), np.diff(y))
    n = len(seg)
    cut = np.zeros(n + 1, dtype=bool)
    cut[0] = cut[-1] = True
    if n >= 2:
        hx, hy = np.diff(x), np.diff(y)
        cosang = (hx[:-1] * hx[1:] + hy[:-1] * hy[1:]) / np.maximum(seg[:-1] * seg[1:], 1e-9)
        cut[1:-1] = cosang < math.cos(math.radians(30))
    if keep_moving_near is not None:
        cx, cy, r = keep_moving_near
        cut[1:-1] &= np.hypot(x[1:-1] - cx, y[1:-1] - cy) > r
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    idx = np.flatnonzero(cut)
    lengths = np.diff(cum[idx])
    speeds = rng.uniform(v_kmh[0], v_kmh[1], len(lengths)) / 3.6
    lights = rng.random(len(lengths)) < light_p
    waits = rng.uniform(5.0, 45.0, len(lengths))
    phases: list[Phase] = []
    for i, (length, v) in enumerate(zip(lengths.tolist(), speeds.tolist(), strict=True)):
        phases.append(move_phase(length, v))
        if i < len(lengths) - 1 and lights[i]:
            phases.append(dwell_phase(float(waits[i])))
    return phases
