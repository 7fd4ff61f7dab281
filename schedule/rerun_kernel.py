"""A tracker re-run's detection in one compiled call (``VehicleTracker._rerun``'s fast path).

Why: after :func:`schedule.motion.motion`, a re-run mapped the fence pairs onto the kept fixes,
ran the visit and the stop detectors, searched for checkpoints and measured the stops' figures:
six compiled calls, each with its dispatch and the boxing of its result arrays, and the Python
between them (gathers over ``keep``, ``drop_dominated``, the open records' first fixes, the
stop rows re-packed into an array for the figures).  At 2,000-fix batches a vehicle re-runs
~8,000 times a day over a few hundred kept fixes, mostly re-deriving what it reported before,
so that glue, not the arithmetic, was much of the ~200 µs a re-run took (issue 7).

Exactness: this module only composes the kernels the separate calls ran
(:func:`schedule.checkpoint_kernel.rerun_pairs`, ``structural``, ``settled``,
:func:`schedule.visits_kernel.all_site_visits`, :func:`schedule.stops_kernel.detect`,
``stop_figures``) with the same arguments, and transcribes the little Python between them
(:func:`schedule.visits.drop_dominated`, the open records' first fixes, the open stop's
site counts) on the same integers and floats.  ``VehicleTracker`` keeps the separate calls
as its slow path (``compiled_rerun = False``, and whenever the stop walk hands a call to its
numpy reference); tests/test_rerun_kernel.py holds the two equal.

Caching: numba's cache of a function is keyed by its own source file only, and the machine code
of :func:`detect` embeds the kernels it calls from the other modules, so an edit there would
leave a stale ``detect`` in the cache.  Its cache entry is therefore named after a digest of
the schedule package's other kernel modules as loaded (:func:`kernel_digest`: each function's
code objects and each module-level constant, which numba freezes into the machine code), so any
edit of one compiles it afresh (the old entry is left behind, unused).  The digest is taken
from the imported modules, not by reading their files: this is a logic module (no I/O).
"""

from __future__ import annotations

import hashlib
import types
from collections.abc import Iterable
from typing import Any

import numpy as np
from numba import njit

from schedule import append_kernel, motion_kernel, parked_kernel, select_kernel
from schedule import checkpoint_kernel as _ck
from schedule import stops_kernel as _sk
from schedule import visits_kernel as _vk


@njit(cache=True)
def _drop_dominated(oi: Any, of: Any) -> tuple[Any, Any]:
    """:func:`schedule.visits.drop_dominated` over the visit rows (order kept).  Its integer
    comparisons with ``dur / 2`` hold in float64 as in Python: microsecond durations are far
    below 2**53, so every int converts exactly."""
    n = oi.shape[0]
    keep = np.ones(n, np.bool_)
    w = 0
    for a in range(n):
        share_a = of[a, _vk.V_SHARE]
        arr_a = oi[a, _vk.V_ARRIVAL]
        dep_a = oi[a, _vk.V_DEPARTURE]
        dur = max(dep_a - arr_a, 1)
        if share_a < 0.5:
            for b in range(n):
                if (
                    b != a
                    and oi[b, _vk.V_SITE] != oi[a, _vk.V_SITE]
                    and of[b, _vk.V_SHARE] >= 2 * share_a
                    and min(dep_a, oi[b, _vk.V_DEPARTURE]) - max(arr_a, oi[b, _vk.V_ARRIVAL])
                    >= dur / 2
                ):
                    keep[a] = False
                    break
        if keep[a]:
            w += 1
    ki = np.empty((w, oi.shape[1]), np.int64)
    kf = np.empty((w, of.shape[1]), np.float64)
    w = 0
    for a in range(n):
        if keep[a]:
            ki[w] = oi[a]
            kf[w] = of[a]
            w += 1
    return ki, kf


@njit(cache=True)
def _tail_counts(kin: Any, first: int) -> Any:
    """(2, S): each site with an inside pair at kept index ``first`` or later, and how many
    (sites ascending): the open stop's ``site_counts`` (``VehicleTracker._diff_stops``)."""
    n_sites = 0
    for j in range(kin.shape[1]):
        if kin[0, j] >= first and kin[1, j] + 1 > n_sites:
            n_sites = kin[1, j] + 1
    counts = np.zeros(n_sites, np.int64)
    for j in range(kin.shape[1]):
        if kin[0, j] >= first:
            counts[kin[1, j]] += 1
    s = 0
    for c in range(n_sites):
        if counts[c]:
            s += 1
    out = np.empty((2, s), np.int64)
    s = 0
    for c in range(n_sites):
        if counts[c]:
            out[0, s] = c
            out[1, s] = counts[c]
            s += 1
    return out


#: a pair hint's fields (int64): the table's data address, its length then, the first kept
#: fix's time then, and the first pair not older than that fix
H_ADDR, H_LEN, H_T, H_Q = range(4)
N_HINT = 4


@njit(cache=True)
def _hint_from(pair_t: Any, hint: Any, t_first: int) -> int:
    """Where the scan for the first pair not older than ``t_first`` may start: the hint's
    pair when ``pair_t`` begins at the address it was taken at and has not shrunk, and
    ``t_first`` is not older than then (so every pair before it is older than ``t_first``:
    the caller guarantees that a table at that address with that prefix length still holds
    those values), else 0."""
    if pair_t.ctypes.data == hint[H_ADDR] and len(pair_t) >= hint[H_LEN] and t_first >= hint[H_T]:
        return int(hint[H_Q])
    return 0


@njit(cache=True)
def _hint_of(pair_t: Any, t_first: int, q: int) -> Any:
    out = np.empty(N_HINT, np.int64)
    out[H_ADDR] = pair_t.ctypes.data
    out[H_LEN] = len(pair_t)
    out[H_T] = t_first
    out[H_Q] = q
    return out


def _feed_code(h: Any, code: types.CodeType) -> None:
    h.update(code.co_code)
    h.update(repr((code.co_names, code.co_varnames)).encode())
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _feed_code(h, c)
        elif isinstance(c, frozenset):  # (its repr's order follows string hashing)
            h.update(repr(sorted(map(repr, c))).encode())
        else:
            h.update(repr(c).encode())


def kernel_digest(modules: Iterable[types.ModuleType]) -> str:
    """A short digest of the modules as loaded (in the given order): the code of every
    function defined in each (a numba kernel's ``py_func``) and every module-level constant
    (an upper-case name bound to a number, string or tuple: numba compiles globals in as
    constants; lower-case globals are the modules' run-time caches, which change)."""
    h = hashlib.sha256()
    for mod in modules:
        h.update(mod.__name__.encode())
        for name, obj in sorted(vars(mod).items()):
            fn = getattr(obj, "py_func", obj)
            code = getattr(fn, "__code__", None)
            if isinstance(code, types.CodeType) and getattr(fn, "__module__", None) == mod.__name__:
                h.update(name.encode())
                _feed_code(h, code)
            elif isinstance(obj, (bool, int, float, str, tuple)) and name.lstrip("_").isupper():
                h.update(f"{name}={obj!r}".encode())
    return h.hexdigest()[:16]


#: the other compiled modules of the package, whose code :func:`detect` embeds (all of them:
#: a kernel may come to call another's helpers; tests/test_rerun_kernel.py checks the list)
KERNEL_MODULES = (append_kernel, _ck, motion_kernel, parked_kernel, select_kernel, _sk, _vk)


def _detect(
    t_us: Any,
    lon: Any,
    lat: Any,
    hdop: Any,
    keep: Any,
    t_s: Any,
    x: Any,
    y: Any,
    speed: Any,
    rep: Any,
    still: Any,
    jump: Any,
    gap: Any,
    in_t: Any,
    in_site: Any,
    near_t: Any,
    near_site: Any,
    in_hint: Any,
    near_hint: Any,
    active: int,
    t0_us: int,
    has_now: bool,
    now_us: int,
    stale: bool,
    vprm: Any,
    table: Any,
    sprm: Any,
    cpv: Any,
    settled_on: bool,
) -> tuple[Any, ...]:
    """Everything ``VehicleTracker._rerun`` derives from a motion, at once.

    ``t_us``/``lon``/``lat``/``hdop`` are the re-run's track columns and ``keep`` the motion's
    kept fixes; ``t_s`` .. ``gap`` the motion's arrays, ``rep`` its reported speeds (all NaN:
    none).  ``in_hint``/``near_hint`` are the pair tables' hints from an earlier call
    (``H_*``; all zero: none), which must only be passed while the table at that address
    still holds the values it held then in its first ``H_LEN`` pairs.  ``active`` is the
    first kept fix after the checkpoint (0 <= active <= kept fixes).  ``vprm``,
    ``table``/``sprm`` and ``cpv`` are the visit, stop and checkpoint kernels' parameters;
    ``settled_on`` is ``VehicleTracker.settled_checkpoints``.

    Returns (status, info, pending, kept_t, visit int rows, visit float rows, stop int rows
    (the walk's four columns, then the stop's site), stop float rows (the walk's four
    columns, then the eight figures of ``stops_kernel.stop_figures``), the new checkpoints'
    fix times, the open tail stop's site counts, the (2, N_HINT) new hints of the inside and
    the near pairs).  ``status`` is
    the stop walk's: anything but ``stops_kernel.DONE`` leaves the rest empty (the caller
    runs the slow path, which raises or runs the reference).  Visit rows are
    ``drop_dominated``'s survivors, sites ascending then time (sort them by arrival and site
    as the tracker does); the site counts are (2, 0) unless the last stop is open and ends at
    the newest kept fix.
    """
    nk = keep.shape[0]
    kept_t = np.empty(nk, np.int64)
    hdop_k = np.empty(nk, np.float64)
    for i in range(nk):
        kept_t[i] = t_us[keep[i]]
        hdop_k[i] = hdop[keep[i]]
    status, info, pending, s_ints, s_flts = _sk.detect(
        t_s, x, y, speed, rep, still, jump, gap, table, sprm, active, stale
    )
    no_i = np.empty((0, 8), np.int64)
    no_f = np.empty((0, 2), np.float64)
    if status != _sk.DONE:
        return (
            status, info, pending, kept_t, no_i, no_f, np.empty((0, 5), np.int64),
            np.empty((0, 12), np.float64), np.empty(0, np.int64), np.empty((2, 0), np.int64),
            np.zeros((2, N_HINT), np.int64),
        )  # fmt: skip
    t_first = kept_t[0] if nk else 0
    kin, knear, near_any, site_a, q_in, q_near = _ck.rerun_pairs_from(
        kept_t, in_t, in_site, near_t, near_site, active,
        _hint_from(in_t, in_hint, t_first), _hint_from(near_t, near_hint, t_first),
    )  # fmt: skip
    hints = np.zeros((2, N_HINT), np.int64)
    hints[0] = _hint_of(in_t, t_first, q_in)
    hints[1] = _hint_of(near_t, t_first, q_near)
    oi, of = no_i, no_f
    if len(site_a):
        oi, of = _vk.all_site_visits(
            t_s, still, gap, speed, hdop_k, kin[0], kin[1], knear[0], knear[1], active,
            t0_us, has_now, now_us, vprm,
        )  # fmt: skip
        oi, of = _drop_dominated(oi, of)
    cps = _ck.structural(x, y, t_s, speed, still, jump, gap, near_any, active, cpv)
    n_rec = s_ints.shape[0]
    if settled_on:
        # nothing at or after the first fix of an open visit or stop is settled
        until = nk
        for r in range(oi.shape[0]):
            if oi[r, _vk.V_CLOSED] == _vk.CLOSED_OPEN and oi[r, _vk.V_FIRST] < until:
                until = oi[r, _vk.V_FIRST]
        for r in range(n_rec):
            if s_ints[r, _sk.R_CLOSED] % _sk.MERGED == _sk.OPEN and s_ints[r, _sk.R_FIRST] < until:
                until = s_ints[r, _sk.R_FIRST]
        after = cps[-1] + 1 if len(cps) else active
        st = _ck.settled(
            x, y, t_s, speed, still, jump, gap, rep, kin, knear, max(active, after), until,
            active, cpv,
        )  # fmt: skip
        if len(st):
            cps = np.concatenate((cps, st))
    sites = np.empty(0, np.int64)
    figs = np.empty((0, 8), np.float64)
    counts = np.empty((2, 0), np.int64)
    stop_i = np.empty((n_rec, 5), np.int64)
    stop_f = np.empty((n_rec, 12), np.float64)
    if n_rec:
        recs = np.empty((n_rec, 5), np.int64)
        for r in range(n_rec):
            recs[r, 0] = s_ints[r, _sk.R_FIRST]
            recs[r, 1] = s_ints[r, _sk.R_CONFIRM]
            recs[r, 2] = s_ints[r, _sk.R_LAST]
            recs[r, 3] = s_ints[r, _sk.R_LAST] - s_ints[r, _sk.R_FIRST] + 1
            recs[r, 4] = 1 if s_ints[r, _sk.R_CLOSED] % _sk.MERGED != _sk.OPEN else 0
        sites, figs = _sk.stop_figures(lon, lat, keep, kin, recs)
        r = n_rec - 1
        if recs[r, 4] == 0 and recs[r, 2] == nk - 1:
            counts = _tail_counts(kin, recs[r, 0])
        for r in range(n_rec):
            for c in range(4):
                stop_i[r, c] = s_ints[r, c]
                stop_f[r, c] = s_flts[r, c]
            stop_i[r, 4] = sites[r]
            for c in range(8):
                stop_f[r, 4 + c] = figs[r, c]
    cp_times = np.empty(len(cps), np.int64)
    for r in range(len(cps)):
        cp_times[r] = kept_t[cps[r]]
    return status, info, pending, kept_t, oi, of, stop_i, stop_f, cp_times, counts, hints


DEPS_DIGEST = kernel_digest(KERNEL_MODULES)
_detect.__name__ = _detect.__qualname__ = f"detect_{DEPS_DIGEST}"  # (names the cache entry)
detect = njit(cache=True)(_detect)


def warm_up() -> None:
    """Compile the kernel now (or load it from numba's cache): run a tracker re-run on a
    small track that visits a site and stops there."""
    from schedule.tracker import VehicleTracker

    n = 80
    t = np.arange(n, dtype=np.int64) * 10_000_000
    lon = 37.6 + np.concatenate((np.zeros(50), np.arange(30) * 1e-3))
    lat = np.full(n, 55.7)
    speed = np.concatenate((np.zeros(50), np.full(30, 40.0)))
    pairs = np.stack((np.arange(40), np.zeros(40, np.int64)))
    tr = VehicleTracker("warm-up", ["s"])
    tr.feed(t, lon, lat, speed, np.ones(n), pairs, pairs)
    tr.finish()
