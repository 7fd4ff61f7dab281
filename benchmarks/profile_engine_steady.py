"""The engine's steady state at fleet scale, with a breakdown of where a round's CPU goes.

``bench_end_to_end.py --engine-offline`` gives CPU per fix over a run; this runs the same feed
(the same synthetic fleet and sites, decoded 2,000-message batches, the receive time as the
clock, 1 s rounds) and splits the engine's CPU per part, because a mean per fix does not say
what to cut: fence matching, the tracker (``FleetTracker.feed``), each round's newest position
per vehicle, the board and stages (``Engine._downstream``), and the engine's own rest (feed's
bookkeeping, the concatenation of pending batches, the periodic ``advance`` of silent
vehicles).  Optionally a pyinstrument profile of the data after ``--warmup`` seconds only
(the warm-up, each vehicle's first fixes, is not the steady state).

With ``--plan-stops K`` every vehicle also has a day plan of K stops (the schedule board and
the alert desk run, as ``fleetwatch run`` with a plans directory): its first stop is its own
fence site where that site is still free (one stop per site and date), the others board-only
sites within ~3 km of its circle, planned arrivals spread from 3 h before the data to 9 h
after it, 30 min before / 60 min after as the window; the board's and the desk's calls are
then timed per method.

Run:  python benchmarks/profile_engine_steady.py --units 30000 --duration 150 --warmup 120 \\
          [--plan-stops 4] [--profile /tmp/steady.html]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import numpy as np  # noqa: E402
from _args import non_negative_float, non_negative_int, positive_float, positive_int  # noqa: E402

from benchmarks.bench_end_to_end import fleet_shape, write_inputs  # noqa: E402
from simulators.synthetic import SyntheticFleet  # noqa: E402

if TYPE_CHECKING:
    from fleetwatch.engine_setup import Schedule
    from geofence import SiteLoad
    from schedule.plans import DayPlan

_S = 1_000_000


def make_schedule(
    load: SiteLoad, vehicles: list[str], centres: np.ndarray, k: int, t0_us: int, seed: int
) -> tuple[Schedule, DayPlan]:
    """Every vehicle a route of *k* stops on the data's UTC date (see the module docstring)."""
    import datetime as dt

    from alerts.roster import generate_roster
    from fleetwatch.engine_setup import Schedule
    from schedule.contracts import SiteContract, site_contracts
    from schedule.plans import DayPlan, PlannedStop, ScheduleInputs

    rng = np.random.default_rng(seed)
    sites = site_contracts(load.sites)
    fence_ids = [s.site_id for s in load.sites]
    day = dt.datetime.fromtimestamp(t0_us / 1e6, tz=dt.UTC).date()
    routes: dict[str, tuple[PlannedStop, ...]] = {}
    taken: set[str] = set()
    for i, vid in enumerate(vehicles):
        c = i % len(fence_ids)
        pas = np.sort(t0_us + rng.integers(-3 * 3600, 9 * 3600, size=k) * _S)
        stops = []
        for j in range(k):
            sid = fence_ids[c]
            if j > 0 or sid in taken:
                sid = f"P{i}-{j}"
                lon, lat = centres[c] + rng.uniform(-0.03, 0.03, size=2)
                sites[sid] = SiteContract(
                    site_id=sid, client_id="C", lon=float(lon), lat=float(lat), contract=None
                )
            taken.add(sid)
            pa = int(pas[j])
            stops.append(
                PlannedStop(
                    service_date=day,
                    vehicle_id=vid,
                    seq=j + 1,
                    site_id=sid,
                    planned_arrival_us=pa,
                    window_start_us=pa - 1800 * _S,
                    window_end_us=pa + 3600 * _S,
                    service_min=10.0,
                )
            )
        routes[vid] = tuple(stops)
    plan = DayPlan(
        service_date=day, routes=routes, departures_us={v: t0_us - 4 * 3600 * _S for v in routes}
    )
    inputs = ScheduleInputs(
        sites=sites, vehicles=frozenset(vehicles), depots={}, plans={day: plan}, problems=[]
    )
    return Schedule(inputs=inputs, roster=generate_roster(vehicles)), plan


class Clock:
    """CPU seconds per named part (exclusive of nested parts timed separately)."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}
        self.on = False

    def wrap(self, obj: Any, name: str, part: str) -> None:
        fn: Callable[..., Any] = getattr(obj, name)

        def timed(*a: Any, **k: Any) -> Any:
            if not self.on:
                return fn(*a, **k)
            c = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                self.parts[part] = self.parts.get(part, 0.0) + time.process_time() - c

        setattr(obj, name, timed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=positive_int, default=30_000)
    ap.add_argument(
        "--rate", type=positive_float, default=30_000.0, help="fixes per second in total"
    )
    ap.add_argument("--duration", type=positive_float, default=150.0, help="seconds of data")
    ap.add_argument(
        "--warmup", type=non_negative_float, default=120.0, help="seconds of data not measured"
    )
    ap.add_argument("--sites", type=positive_int, default=1500)
    ap.add_argument("--dwell", type=positive_float, default=240.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detect-interval-ms", type=positive_float, default=None)
    ap.add_argument(
        "--plan-stops", type=non_negative_int, default=0,
        help="a day plan of this many stops per vehicle (board and alert desk run); 0: none",
    )  # fmt: skip
    ap.add_argument("--profile", type=Path, help="pyinstrument HTML (or .txt) of the measured part")
    args = ap.parse_args()
    if not args.warmup < args.duration:  # it printed negative fix counts and 0 us per fix
        ap.error(
            f"--warmup ({args.warmup:g} s) must be shorter than --duration "
            f"({args.duration:g} s); give a smaller --warmup with a short --duration"
        )

    import schedule.engine as engine_mod
    from fleetwatch.engine_setup import build_engine, load_sites
    from ingest.nmea import DecodeOptions, Decoder
    from schedule.engine import EngineParams

    work = Path(tempfile.mkdtemp(prefix="fleetwatch-steady-"))
    files, centres = write_inputs(args, work)
    shape = fleet_shape(args, "fleet", centres)
    fleet = SyntheticFleet(shape)
    names = [shape.unit_id(i) for i in range(args.units)]
    interval_s = (args.detect_interval_ms or 1000.0) / 1000
    load = load_sites(files["sites"])
    t0 = time.time_ns() // 1000
    schedule = plan = None
    if args.plan_stops > 0:
        c = time.process_time()
        schedule, plan = make_schedule(
            load, [f"V{u}" for u in names], centres, args.plan_stops, t0, args.seed
        )
        print(f"plan: {plan.stop_count} stops built in {time.process_time() - c:.1f} CPU-s")
    engine = build_engine(
        load,
        {u: f"V{u}" for u in names},
        params=EngineParams(round_interval_s=interval_s),
        schedule=schedule,
    )
    if plan is not None:
        c = time.process_time()
        engine.load_plan(plan, t0)
        print(f"plan imported in {time.process_time() - c:.1f} CPU-s")
    clock = Clock()
    # the parts, outermost first: matching and the tracker inside _detect; positions; board
    match = engine._matcher
    engine._matcher = lambda lon, lat, m: timed_match(lon, lat, m)

    def timed_match(lon: Any, lat: Any, m: float) -> Any:
        if not clock.on:
            return match(lon, lat, m)
        c = time.process_time()
        try:
            return match(lon, lat, m)
        finally:
            clock.parts["match"] = clock.parts.get("match", 0.0) + time.process_time() - c

    clock.wrap(engine.tracker, "feed", "tracker.feed")
    clock.wrap(engine.tracker, "advance", "tracker.advance")
    clock.wrap(engine, "_detect", "_detect (match + tracker.feed)")
    clock.wrap(engine_mod, "newest_positions", "newest_positions")
    clock.wrap(engine, "_downstream", "_downstream (board, stages)")
    clock.wrap(engine, "_take", "_take (concat)")
    if engine.board is not None:
        for name in ("on_positions", "tick", "on_detection"):
            clock.wrap(engine.board, name, f"board.{name}")
    for k, stage in enumerate(engine.stages):
        for name in ("consume", "tick"):
            clock.wrap(stage, name, f"stage{k}.{name}")

    decoder = Decoder(DecodeOptions())
    everyone = np.arange(args.units, dtype=np.int64)
    hz = args.rate / args.units
    steps = round(args.duration * hz)
    warm = round(args.warmup * hz)
    profiler = None
    cpu = cpu_tail = 0.0
    per_step: list[float] = []
    rounds_tail = 0
    for s in range(steps):
        if s == warm:
            clock.on = True
            rounds_tail = engine.stats.rounds
            if args.profile is not None:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.001)
                profiler.start()
        t = t0 + round(s * 1e6 / hz)
        payloads = fleet.payloads(everyone, t)
        step_cpu = 0.0
        for i in range(0, args.units, 2000):
            now = t + round(1e6 / hz * i / args.units) + 10_000
            part = payloads[i : i + 2000]
            fixes = decoder.decode(names[i : i + 2000], part, np.full(len(part), now)).fixes
            c = time.process_time()
            engine.feed(fixes, now)
            step_cpu += time.process_time() - c
        per_step.append(step_cpu)
        cpu += step_cpu
        if s >= warm:
            cpu_tail += step_cpu
    if profiler is not None:
        profiler.stop()
        assert args.profile is not None
        if args.profile.suffix == ".txt":
            args.profile.write_text(profiler.output_text(unicode=True, show_all=False))
        else:
            args.profile.write_text(profiler.output_html())
    n = steps * args.units
    n_tail = (steps - warm) * args.units
    rounds = engine.stats.rounds - rounds_tail
    print(
        f"{args.units} units at {hz:g} Hz, {args.duration:g} s of data, rounds every "
        f"{interval_s:g} s: whole run {1e6 * cpu / n:.1f} us per fix; after {args.warmup:g} s "
        f"({n_tail} fixes, {rounds} rounds): {1e6 * cpu_tail / max(n_tail, 1):.1f} us per fix, "
        f"{1e3 * cpu_tail / max(rounds, 1):.0f} ms per round"
    )
    tail10 = per_step[-round(10 * hz) :]
    print(f"last 10 s of data: {1e6 * sum(tail10) / (len(tail10) * args.units):.1f} us per fix")
    for what, sec in sorted(clock.parts.items(), key=lambda kv: -kv[1]):
        print(f"  {what:34s} {sec:7.2f} CPU-s  {1e6 * sec / max(n_tail, 1):6.2f} us per fix")
    st = engine.statistics()
    print(f"detection events {st.detection_events}, tracker {st.tracker}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
