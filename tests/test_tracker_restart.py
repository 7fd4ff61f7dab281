"""Durable ids: a restart that re-feeds the stored fixes reproduces the ids it had reported.

The rule (schedule/tracker.py, ``VehicleTracker.restore``): a visit is
``{vehicle}-{site}-{arrival_us}``, a stop ``{vehicle}-stop-{start_us}``, as first reported.
Re-feeding the last ``horizon_s`` of fixes derives the same ids by itself; restoring the
reported events first also keeps versions going and recognises what was already published.
"""

from __future__ import annotations

import numpy as np
import pytest

from schedule.events import (
    VisitCompleted,
    VisitStarted,
    event_key,
    latest,
)
from schedule.params import DetectionParams
from schedule.tracker import FleetTracker, VehicleTracker
from tests.test_tracker_sites import fix_batch
from tests.test_visits_synthetic import T0_US, Circles, TrackBuilder, feed_all

FENCES = Circles([(0.0, 0.0, 50.0), (1500.0, 0.0, 50.0)])
PARAMS = DetectionParams(horizon_s=900.0)
CHUNK = 30


def day() -> dict[str, np.ndarray]:
    """Visit site 0 for 10 min, drive 1.5 km, visit site 1 for 15 min, drive away."""
    b = TrackBuilder(seed=21).start(-500, 0).drive(0, 0, 20).park(600, outlier_rate=0.01)
    b.drive(1500, 0, 30).park(900, outlier_rate=0.01).drive(2500, 0, 30)
    return b.arrays()


def chunks(lo: int, hi: int) -> list[np.ndarray]:
    return [np.arange(i, min(i + CHUNK, hi)) for i in range(lo, hi, CHUNK)]


def cut_in_second_visit(a: dict[str, np.ndarray]) -> int:
    t = (a["t_us"] - T0_US) / 1e6
    return int(np.searchsorted(t, t[-1] - 300)) // CHUNK * CHUNK  # well inside the second park


def test_refeeding_the_horizon_rederives_the_same_ids_without_any_restore() -> None:
    a = day()
    n = len(a["t_us"])
    k = cut_in_second_visit(a)
    live = VehicleTracker("V", FENCES.ids, PARAMS)
    before = feed_all(live, a, FENCES, chunks(0, k), finish=False)
    open_ids = {e.visit_id for e in before if isinstance(e, VisitStarted) and e.site_id == "S0001"}
    assert len(open_ids) == 1  # the visit in progress at the "crash"
    after = feed_all(live, a, FENCES, chunks(k, n))
    # restart: a fresh tracker re-fed the stored fixes of the last horizon_s, then live data
    lo = int(np.searchsorted(a["t_us"], a["t_us"][k - 1] - round(PARAMS.horizon_s * 1e6)))
    restarted = VehicleTracker("V", FENCES.ids, PARAMS)
    again = feed_all(restarted, a, FENCES, [*chunks(lo, k), *chunks(k, n)])
    fresh = latest(again)
    # every visit/stop that starts inside the re-fed window has the same id and content
    window_start = int(a["t_us"][lo])
    for key, ev in latest(before + after).items():
        start = ev.arrival_us if isinstance(ev, VisitStarted | VisitCompleted) else ev.start_us
        if start > window_start + 60 * 10**6:
            assert key in fresh, f"{key} not re-derived"
            assert fresh[key].retracted == ev.retracted
    assert any(key[1] in open_ids for key in fresh)


@pytest.mark.parametrize("horizon_s", [900.0, 1200.0, 3600.0])
def test_restore_then_refeed_recognises_what_was_published_and_ends_identical(
    horizon_s: float,
) -> None:
    a = day()
    n = len(a["t_us"])
    k = cut_in_second_visit(a)
    params = DetectionParams(horizon_s=horizon_s)
    # the uninterrupted run
    ref = VehicleTracker("V", FENCES.ids, params)
    ref_events = feed_all(ref, a, FENCES, chunks(0, n))
    # the run that dies at fix k, its events stored
    first_life = VehicleTracker("V", FENCES.ids, params)
    stored = feed_all(first_life, a, FENCES, chunks(0, k), finish=False)
    # restart: restore the stored events, re-feed the last horizon_s in one feed (it may begin
    # inside the first visit: that one stands as stored) and go on with live data
    second_life = VehicleTracker("V", FENCES.ids, params)
    second_life.restore(list(latest(stored).values()), lambda sid: FENCES.ids.index(sid))
    lo_t = int(a["t_us"][k - 1]) - round(horizon_s * 1e6)
    refeed_from = second_life.refeed_from_us
    assert refeed_from is not None  # the second visit and its stop are open
    lo = int(np.searchsorted(a["t_us"], min(lo_t, refeed_from)))
    replayed = feed_all(second_life, a, FENCES, [np.arange(lo, k)], finish=False)  # one feed
    assert replayed == []  # everything re-derived was already published, nothing new
    rest = feed_all(second_life, a, FENCES, chunks(k, n))
    assert latest(stored + replayed + rest) == latest(ref_events)


def test_restore_keeps_ids_when_late_data_had_corrected_an_arrival() -> None:
    # the first life saw the first visit's arrival late (a buffered backlog corrected it, the
    # id keeps the arrival first reported); a clean re-derivation alone would name it after
    # the corrected arrival, so restoring is what keeps the id
    a = day()
    n = len(a["t_us"])
    t = (a["t_us"] - T0_US) / 1e6
    hole = np.flatnonzero((t > 80) & (t < 150))  # the drive-in and the first minute inside
    early = np.setdiff1d(np.arange(400), hole)
    k = cut_in_second_visit(a)
    live = [early, hole, *chunks(400, k)]
    params = DetectionParams(horizon_s=7200.0)
    first_life = VehicleTracker("V", FENCES.ids, params)
    stored = feed_all(first_life, a, FENCES, live, finish=False)
    assert any(e.version > 1 for e in stored)  # the correction happened
    uninterrupted = stored + feed_all(first_life, a, FENCES, chunks(k, n))

    second_life = VehicleTracker("V", FENCES.ids, params)
    second_life.restore(list(latest(stored).values()), lambda sid: FENCES.ids.index(sid))
    replayed = feed_all(second_life, a, FENCES, [np.arange(0, k)], finish=False)
    assert replayed == []
    rest = feed_all(second_life, a, FENCES, chunks(k, n))
    assert latest(stored + replayed + rest) == latest(uninterrupted)

    no_restore = VehicleTracker("V", FENCES.ids, params)
    rederived = feed_all(no_restore, a, FENCES, [np.arange(0, k), *chunks(k, n)])
    assert {event_key(e) for e in rederived} != {event_key(e) for e in uninterrupted}


def test_restore_after_the_first_feed_is_refused() -> None:
    a = day()
    tr = VehicleTracker("V", FENCES.ids, PARAMS)
    feed_all(tr, a, FENCES, chunks(0, 30), finish=False)
    with pytest.raises(RuntimeError, match="before the first feed"):
        tr.restore([], lambda sid: 0)


def test_fleet_restore_adopts_each_vehicles_events_and_sites_by_id() -> None:
    a = day()
    k = cut_in_second_visit(a)
    first = FleetTracker(FENCES.ids, {"U1": "V1"})
    stored = []
    for idx in chunks(0, k):
        stored += first.feed_matched(fix_batch({c: v[idx] for c, v in a.items()}), FENCES)
    # the new life's site list is in another order: restored visits keep their site ids
    ids = list(reversed(FENCES.ids))
    reordered = Circles(list(reversed(FENCES.centres)))
    second = FleetTracker(ids, {"U1": "V1"})
    second.restore(stored)
    assert second.refeed_from_us() is not None
    whole = fix_batch({c: v[:k] for c, v in a.items()})
    assert second.feed_matched(whole, reordered) == []
    rest = fix_batch({c: v[k:] for c, v in a.items()})
    after = second.feed_matched(rest, reordered) + second.finish()
    done = [e for e in latest(stored + after).values() if isinstance(e, VisitCompleted)]
    assert sorted(e.site_id for e in done) == ["S0000", "S0001"]
    published = {e.visit_id for e in stored if isinstance(e, VisitStarted)}
    assert {e.visit_id for e in done} == published  # the open visit kept its id


def test_a_visit_left_before_a_coverage_gap_is_closed_by_exit_in_one_pass_as_in_many() -> None:
    """The exit is confirmed, then the unit falls silent for half an hour (a store-and-forward
    dropout).  Fed fix by fix the visit closed by "exit" when the exit was confirmed; a restart
    re-reads hours of fixes in one pass, gap included, and must say the same -- it said "gap"
    (whichever came first decides), a new version of every such visit in the CRM feed."""
    b = TrackBuilder(seed=5).start(-500, 0).drive(0, 0, 20).park(600, outlier_rate=0.0)
    b.drive(800, 0, 30).gap(1800).drive(1500, 0, 30).park(600).drive(2500, 0, 30)
    a = b.arrays()
    n = len(a["t_us"])

    def closed_by(events: list[object]) -> dict[str, str]:
        return {
            ev.site_id: ev.closed_by
            for ev in latest(events).values()  # type: ignore[arg-type]
            if isinstance(ev, VisitCompleted) and not ev.retracted
        }

    one = closed_by(list(feed_all(VehicleTracker("V", FENCES.ids, PARAMS), a, FENCES)))
    many = closed_by(list(feed_all(VehicleTracker("V", FENCES.ids, PARAMS), a, FENCES,
                                   chunks(0, n))))  # fmt: skip
    assert many["S0000"] == "exit"
    assert one == many
