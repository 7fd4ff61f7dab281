"""AlertDesk cost at fleet scale: 30,000 stops / 1,000 vehicles (and 1,500 / 50).

What is measured, in CPU time of this process (the machine is shared: wall time is noise;
data time is synthetic, the desk never reads a clock, the benchmark does):
  consume_raise      µs per StopChanged that raises a thread (at risk), batches of 1,500
  consume_worsen     µs per StopChanged that worsens one (late)
  consume_replay     µs per StopChanged fed a second time (idempotent: no record)
  tick_idle          µs per tick when nothing is due, with every thread armed
  tick_idle_naive    the same for a naive desk that scans every armed deadline per tick
                     (the baseline: what "proportional to all alerts" costs)
  tick_hops          µs per escalation hop when ticking once per data second through the
                     escalation window (the hops themselves: least-loaded choice, versions)
  snapshot           ms per snapshot() with every thread active

Run: python benchmarks/bench_alerts.py [--repeats 5] [--stops 30000 --vehicles 1000]
Prints one JSON object: medians over the repeats, and the naive/heap ratio of the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _args import positive_int

from alerts.desk import AlertDesk, AlertParams
from alerts.roster import generate_roster
from schedule.stop_events import StopChanged, StopState, stop_id_of

DATE = "2026-11-23"
T0 = 1_795_417_200_000_000  # 2026-11-23T07:00:00Z = 10:00 Moscow: day shift on
S = 1_000_000


def make_stops(n: int, vehicles: int, state: StopState, at_us: int) -> list[StopChanged]:
    return [
        StopChanged(
            stop_id=stop_id_of(DATE, f"S{i:05d}"),
            site_id=f"S{i:05d}",
            client_id=f"C{i:05d}",
            service_date=DATE,
            vehicle_id=f"V{i % vehicles:04d}",
            state=state,
            previous=None,
            window_start_us=T0,
            window_end_us=T0 + 3600 * S,
            planned_arrival_us=T0 + 1800 * S,
            eta_us=None,
            arrival_us=None,
            departure_us=None,
            visited_by=None,
            visit_id=None,
            outcome=None,
            minutes_late=None,
            reason=state,
            cause="tick",
            at_us=at_us + (i % 1000),  # spread the deadlines over 1 ms
        )
        for i in range(n)
    ]


def one_run(stops: int, vehicles: int) -> dict[str, float]:
    roster = generate_roster([f"V{i:04d}" for i in range(vehicles)])
    desk = AlertDesk(roster=roster, params=AlertParams())
    out: dict[str, float] = {}

    raise_evs = make_stops(stops, vehicles, "at_risk", T0)
    t = time.process_time()
    for k in range(0, stops, 1500):
        desk.consume(raise_evs[k : k + 1500], T0 + 1000)
    out["consume_raise_us"] = (time.process_time() - t) / stops * 1e6

    t = time.process_time()
    for k in range(0, stops, 1500):
        desk.consume(raise_evs[k : k + 1500], T0 + 1000)
    out["consume_replay_us"] = (time.process_time() - t) / stops * 1e6

    late_evs = make_stops(stops, vehicles, "late", T0 + 60 * S)
    t = time.process_time()
    for k in range(0, stops, 1500):
        desk.consume(late_evs[k : k + 1500], T0 + 60 * S + 1000)
    out["consume_worsen_us"] = (time.process_time() - t) / stops * 1e6

    # every thread is armed for T0 + 60 s + 10 min; tick 1,000 times before that
    n_ticks = 1000
    now = T0 + 61 * S
    t = time.process_time()
    for i in range(n_ticks):
        desk.tick(now + i * 1000)
        desk.next_deadline_us()
    out["tick_idle_us"] = (time.process_time() - t) / n_ticks * 1e6

    deadlines = {f"a{i}": T0 + 660 * S + i for i in range(stops)}  # the naive desk's timers
    t = time.process_time()
    for i in range(n_ticks):
        due = [k for k, d in deadlines.items() if d <= now + i * 1000]
        assert not due
        min(deadlines.values())
    out["tick_idle_naive_us"] = (time.process_time() - t) / n_ticks * 1e6

    t = time.process_time()
    snap = desk.snapshot()
    out["snapshot_ms"] = (time.process_time() - t) * 1e3
    assert len(snap.active) == stops

    hops = 0
    t = time.process_time()
    second = T0 + 600 * S
    while (nd := desk.next_deadline_us()) is not None and second < T0 + 3600 * S:
        second = max(second + S, nd)
        hops += len(desk.tick(second))
    out["tick_hops_us"] = (time.process_time() - t) / max(hops, 1) * 1e6
    out["hops"] = hops
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--stops", type=positive_int, default=30_000)
    ap.add_argument("--vehicles", type=positive_int, default=1_000)
    args = ap.parse_args()
    runs = [one_run(args.stops, args.vehicles) for _ in range(args.repeats)]
    med = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    ratios = [r["tick_idle_naive_us"] / r["tick_idle_us"] for r in runs]
    print(
        json.dumps(
            {
                "stops": args.stops,
                "vehicles": args.vehicles,
                "repeats": args.repeats,
                "median": med,
                "idle_tick_naive_over_heap_median": round(statistics.median(ratios), 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
