"""Analytics fed back into the ETA model: a site's typical service time (learned from past
visits in the store) replaces the plan's estimate in the ETAs of the stops after it."""

from __future__ import annotations

from schedule.stop_events import RouteProgress, VehiclePosition
from tests.schedule_world import at, board, plan


def eta_after_first(learned: dict[str, float]) -> int:
    b = board()
    b.learn_service_minutes(learned)
    b.load_plan(plan({"V1": [("S1", 9, 11), ("S2", 9, 13)]}), at(6))
    ev = b.on_positions(
        [VehiclePosition(vehicle_id="V1", t_us=at(9), lon=37.55, lat=55.75, speed_kmh=30.0)],
        at(9),
    )
    ev += b.tick(at(9))
    routes = [e for e in ev if isinstance(e, RouteProgress)]
    assert routes, "the board reports the route's ETAs"
    last = routes[-1]
    return last.eta_us[last.stop_ids.index(last.stop_ids[-1])]


def test_a_learned_service_time_moves_the_etas_after_the_site() -> None:
    planned = eta_after_first({})  # the plan's 10 min at S1
    learned = eta_after_first({"S1": 40.0})  # S1 typically takes 40 min
    assert learned - planned == 30 * 60 * 1_000_000


def test_implausible_learned_values_are_ignored() -> None:
    assert eta_after_first({"S1": 0.0, "S2": -5.0}) == eta_after_first({})
    assert eta_after_first({"S1": 1e9}) == eta_after_first({})
