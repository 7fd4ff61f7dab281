"""Cost of the schedule board per tick and per position batch (issue 8).

  python benchmarks/bench_schedule_board.py [--vehicles 1000] [--stops-per-vehicle 30]

A synthetic day: N vehicles, K stops each on a 40 km city, windows staggered through the day.
The clock runs in 1 s ticks from the import at 06:00 to --hours after 07:00; every 10 s each
vehicle reports a position (near its next stop); every 5 min a visit completes per vehicle.
Reports the median, p99 and max of ``tick`` and of ``on_positions`` (one batch = every
vehicle's newest fix) and the cost of importing the plan.  Numbers are noisy on a shared
machine: quote medians.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time

import numpy as np
from _args import positive_float, positive_int

from schedule.board import ScheduleBoard
from schedule.contracts import Contract, SiteContract
from schedule.events import VisitCompleted, VisitStarted
from schedule.plans import DayPlan, PlannedStop
from schedule.schedule_params import ScheduleParams
from schedule.stop_events import VehiclePosition

DAY = dt.date(2026, 11, 23)
T0 = int(dt.datetime(2026, 11, 23, tzinfo=dt.UTC).timestamp()) * 1_000_000
S = 1_000_000


def build(n_veh: int, k: int, seed: int = 1) -> tuple[ScheduleBoard, DayPlan, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = n_veh * k
    lon = 37.3 + rng.random(n) * 0.6
    lat = 55.6 + rng.random(n) * 0.35
    contract = Contract(
        weekdays=frozenset(range(1, 8)), window_start_min=0, window_end_min=1440, tz="UTC"
    )
    sites = {
        f"S{i:06d}": SiteContract(
            site_id=f"S{i:06d}",
            client_id="C",
            lon=float(lon[i]),
            lat=float(lat[i]),
            contract=contract,
            service_min=10.0,
            tz="UTC",
        )
        for i in range(n)
    }
    routes = {}
    for v in range(n_veh):
        stops = []
        for j in range(k):
            i = v * k + j
            pa = T0 + 7 * 3600 * S + j * 16 * 60 * S
            stops.append(
                PlannedStop(
                    service_date=DAY,
                    vehicle_id=f"V{v:04d}",
                    seq=j + 1,
                    site_id=f"S{i:06d}",
                    planned_arrival_us=pa,
                    window_start_us=pa - 3600 * S,
                    window_end_us=pa + int(rng.integers(45, 150)) * 60 * S,
                    service_min=10.0,
                )
            )
        routes[f"V{v:04d}"] = tuple(stops)
    plan = DayPlan(
        service_date=DAY, routes=routes, departures_us={v: T0 + 6 * 3600 * S for v in routes}
    )
    board = ScheduleBoard(
        sites=sites,
        vehicles=list(routes),
        depots={v: (37.6, 55.75) for v in routes},
        params=ScheduleParams(),
    )
    return board, plan, np.stack([lon, lat])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vehicles", type=positive_int, default=1000)
    ap.add_argument("--stops-per-vehicle", type=positive_int, default=30)
    ap.add_argument("--hours", type=positive_float, default=8.0)
    a = ap.parse_args()
    board, plan, ll = build(a.vehicles, a.stops_per_vehicle)
    t = time.perf_counter()
    board.load_plan(plan, T0 + 6 * 3600 * S)
    load_s = time.perf_counter() - t
    # baseline in the same run: a polling design re-computes every route on every tick
    # (measured after the import, every stop still open)
    naive: list[float] = []
    for _ in range(5):
        t = time.perf_counter()
        for r in list(board._routes.values()):
            board._refresh_route(r, "tick")
        naive.append(time.perf_counter() - t)

    vids = list(plan.routes)
    ticks: list[float] = []
    batches: list[float] = []
    dets: list[float] = []
    events = 0
    now = T0 + 6 * 3600 * S
    end = T0 + 7 * 3600 * S + int(a.hours * 3600) * S
    k = a.stops_per_vehicle
    while now < end:
        now += S
        t = time.perf_counter()
        events += len(board.tick(now))
        ticks.append(time.perf_counter() - t)
        sec = (now - T0) // S
        if sec % 10 == 0:
            j = min(int((now - T0 - 7 * 3600 * S) // (16 * 60 * S)), k - 1)
            pos = [
                VehiclePosition(
                    vehicle_id=v,
                    t_us=now,
                    lon=float(ll[0, i * k + j]) + 0.003,
                    lat=float(ll[1, i * k + j]),
                    speed_kmh=20.0,
                )
                for i, v in enumerate(vids)
            ]
            t = time.perf_counter()
            events += len(board.on_positions(pos, now))
            batches.append(time.perf_counter() - t)
        if sec % 300 == 0:
            j = int((now - T0 - 7 * 3600 * S) // (16 * 60 * S))
            if j < k:
                evs: list[VisitStarted | VisitCompleted] = []
                for i, v in enumerate(vids):
                    site = f"S{i * k + j:06d}"
                    evs.append(
                        VisitStarted(
                            visit_id=f"{v}-{j}",
                            vehicle_id=v,
                            site_id=site,
                            arrival_us=now - 120 * S,
                            confirmed_us=now,
                        )
                    )
                    if j > 0:
                        prev = f"S{i * k + j - 1:06d}"
                        evs.append(
                            VisitCompleted(
                                visit_id=f"{v}-{j - 1}",
                                vehicle_id=v,
                                site_id=prev,
                                arrival_us=now - 900 * S,
                                departure_us=now - 400 * S,
                                fix_count=9,
                                inside_share=1.0,
                                median_hdop=1.0,
                                closed_by="exit",
                            )
                        )
                t = time.perf_counter()
                events += len(board.on_detection(evs, now))
                dets.append(time.perf_counter() - t)

    def q(xs: list[float]) -> dict[str, float]:
        ys = sorted(xs)
        return {
            "median_ms": round(statistics.median(ys) * 1e3, 3),
            "p99_ms": round(ys[int(0.99 * (len(ys) - 1))] * 1e3, 3),
            "max_ms": round(ys[-1] * 1e3, 3),
            "n": len(ys),
        }

    print(
        json.dumps(
            {
                "vehicles": a.vehicles,
                "stops": a.vehicles * k,
                "load_plan_s": round(load_s, 3),
                "tick": q(ticks),
                "positions_batch": q(batches),
                "detection_batch": q(dets),
                "naive_tick_all_routes": q(naive),
                "tick_median_vs_naive": round(
                    statistics.median(ticks) / statistics.median(naive), 4
                ),
                "events": events,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
