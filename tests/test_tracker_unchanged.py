"""The re-run's shortcut for records it re-derives unchanged.

``VehicleTracker._diff_visits`` / ``_diff_stops`` used to build the started and completed events
of every re-derived record and let ``_update`` compare them with what was reported (most re-runs
re-derive what they reported before, figure for figure, and emit nothing).  Now
``_visit_unchanged`` / ``_stop_unchanged`` compare the record's figures with the reported events
field by field first, and the events are only built when something changed.  The promise: the
shortcut says "unchanged" exactly when ``_update`` would have emitted nothing, whatever was
reported (retracted or not, completed or not, figures equal or one ulp off, NaN HDOPs, restored
events of the other kind).
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from schedule.events import StopEnded, StopStarted, VisitCompleted, VisitStarted
from schedule.stops import StopRecord
from schedule.tracker import (
    TrackerStats,
    _Reported,
    _stop_unchanged,
    _update,
    _versioned,
    _visit_unchanged,
)
from schedule.visits import VisitRecord

SITES = ["s0", "s1"]
ints = st.sampled_from([1_000, 2_000, 3_000])
shares = st.sampled_from([0.5, 0.5 + 2**-53, 0.75, 0.123456789, 1.0])
hdops = st.sampled_from([0.9, 1.25, math.nan])
coords = st.sampled_from([55.7, 55.70000001, 55.7 + 2**-40, 37.6])
closed = st.sampled_from([None, "exit", "gap"])


@st.composite
def visit_records(draw: st.DrawFn) -> VisitRecord:
    arrival = draw(ints)
    last = draw(st.integers(0, 3))
    return VisitRecord(
        site=draw(st.integers(0, 1)),
        first=0,
        last=last,
        arrival_us=arrival,
        departure_us=arrival + draw(st.sampled_from([0, 500, 1_000])),
        confirmed_us=arrival + draw(st.sampled_from([0, 100])),
        fix_count=last + 1,
        inside_share=draw(shares),
        median_hdop=draw(hdops),
        closed_by=draw(closed),
    )


def visit_events(rec: VisitRecord, vehicle: str) -> tuple[VisitStarted, VisitCompleted | None]:
    """The events ``_diff_visits`` builds for ``rec`` (its slow path)."""
    site_id = SITES[rec.site]
    started = VisitStarted(
        visit_id="",
        vehicle_id=vehicle,
        site_id=site_id,
        arrival_us=rec.arrival_us,
        confirmed_us=rec.confirmed_us,
    )
    completed = None
    if rec.closed_by is not None:
        completed = VisitCompleted(
            visit_id="",
            vehicle_id=vehicle,
            site_id=site_id,
            arrival_us=rec.arrival_us,
            departure_us=rec.departure_us,
            fix_count=rec.fix_count,
            inside_share=round(rec.inside_share, 4),
            median_hdop=rec.median_hdop,
            closed_by=rec.closed_by,
        )
    return started, completed


@st.composite
def stop_records(draw: st.DrawFn) -> tuple[StopRecord, list[float], str | None]:
    start = draw(ints)
    last = draw(st.integers(0, 3))
    rec = StopRecord(
        first=0,
        last=last,
        confirm=0,
        start_us=start,
        end_us=start + draw(st.sampled_from([0, 500])),
        x=0.0,
        y=0.0,
        fix_count=last + 1,
        closed_by=draw(closed),
    )
    figures = [draw(coords) for _ in range(4)] + [0.0] * 4
    if draw(st.booleans()):
        figures[draw(st.integers(0, 3))] = math.nan
    return rec, figures, draw(st.sampled_from([None, "s0", "s1"]))


def stop_events(
    rec: StopRecord, f: list[float], site_id: str | None, vehicle: str
) -> tuple[StopStarted, StopEnded | None]:
    """The events ``_diff_stops`` builds for ``rec`` (its slow path)."""
    started = StopStarted(
        stop_id="",
        vehicle_id=vehicle,
        site_id=site_id,
        start_us=rec.start_us,
        lat=round(f[0], 7),
        lon=round(f[1], 7),
    )
    completed = None
    if rec.closed_by is not None:
        completed = StopEnded(
            stop_id="",
            vehicle_id=vehicle,
            site_id=site_id,
            start_us=rec.start_us,
            end_us=rec.end_us,
            lat=round(f[2], 7),
            lon=round(f[3], 7),
            fix_count=rec.fix_count,
            closed_by=rec.closed_by,
        )
    return started, completed


def reported(
    draw: st.DrawFn,
    started: VisitStarted | StopStarted,
    completed: VisitCompleted | StopEnded | None,
    other_completed: VisitCompleted | StopEnded | None,
) -> _Reported:
    """A _Reported as an earlier re-run (or a restore) may have left it: the events of
    ``started``/``completed`` (another record's: ``other_completed``), maybe retracted."""
    key = "k"
    st_ev = _versioned(started, key, None, retracted=draw(st.booleans()))
    done = draw(st.sampled_from(["none", "same", "other"]))
    c = {"none": None, "same": completed, "other": other_completed}[done]
    c_ev = None if c is None else _versioned(c, key, None, retracted=draw(st.booleans()))
    return _Reported(key=key, site=0, start_us=0, end_us=0, started=st_ev, completed=c_ev)


def emits_nothing(
    rep: _Reported,
    started: VisitStarted | StopStarted,
    completed: VisitCompleted | StopEnded | None,
) -> bool:
    return _update(copy.deepcopy(rep), started, completed, TrackerStats()) == []


def nearby(draw: st.DrawFn, rec: VisitRecord, other: VisitRecord) -> VisitRecord:
    """``rec`` itself, or with one field (or all) taken from ``other``."""
    how = draw(st.sampled_from(["same", "all", *VISIT_FIELDS]))
    if how == "same":
        return rec
    if how == "all":
        return other
    changed = replace(rec, **{how: getattr(other, how)})
    return changed if changed.confirmed_us >= changed.arrival_us <= changed.departure_us else rec


VISIT_FIELDS = [
    "site", "arrival_us", "departure_us", "confirmed_us", "fix_count", "inside_share",
    "median_hdop", "closed_by",
]  # fmt: skip


@settings(max_examples=800, deadline=None)
@given(st.data(), visit_records(), visit_records(), st.booleans())
def test_visit_shortcut_is_update_emitting_nothing(
    data: st.DataObject, rec: VisitRecord, other: VisitRecord, same_vehicle: bool
) -> None:
    vehicle = "v1"
    # what was reported: this record's own events, or with a field or all of them changed
    before = nearby(data.draw, rec, other)
    old_started, old_completed = visit_events(before, vehicle if same_vehicle else "v2")
    other = data.draw(
        st.sampled_from(
            [
                old_completed,
                StopEnded(
                    stop_id="", vehicle_id=vehicle, site_id=None, start_us=1, end_us=2,
                    lat=0.0, lon=0.0, fix_count=1, closed_by="exit",
                ),
            ]
        )
    )  # fmt: skip
    rep = reported(data.draw, old_started, old_completed, other)
    started, completed = visit_events(rec, vehicle)
    assert _visit_unchanged(rep, vehicle, SITES[rec.site], rec) == emits_nothing(
        rep, started, completed
    )


@settings(max_examples=800, deadline=None)
@given(st.data(), stop_records(), stop_records())
def test_stop_shortcut_is_update_emitting_nothing(
    data: st.DataObject,
    now: tuple[StopRecord, list[float], str | None],
    other: tuple[StopRecord, list[float], str | None],
) -> None:
    vehicle = "v1"
    rec, f, site_id = now
    # what was reported: this record's own events, or with a field or all of them changed
    how = data.draw(st.sampled_from(["same", "all", "site", "fig", "start", "end", "count", "by"]))
    o_rec, o_f, o_site = other
    before = {
        "same": now,
        "all": other,
        "site": (rec, f, o_site),
        "fig": (rec, [*f[:2], *o_f[2:4], *f[4:]], site_id)
        if data.draw(st.booleans())
        else (rec, [*o_f[:2], *f[2:]], site_id),
        "start": (replace(rec, start_us=min(o_rec.start_us, rec.end_us)), f, site_id),
        "end": (replace(rec, end_us=max(o_rec.end_us, rec.start_us)), f, site_id),
        "count": (replace(rec, fix_count=o_rec.fix_count), f, site_id),
        "by": (replace(rec, closed_by=o_rec.closed_by), f, site_id),
    }[how]
    old_started, old_completed = stop_events(*before, vehicle)
    rep = reported(data.draw, old_started, old_completed, old_completed)
    started, completed = stop_events(rec, f, site_id, vehicle)
    lat, lon = round(f[0], 7), round(f[1], 7)
    assert _stop_unchanged(rep, vehicle, site_id, rec, lat, lon, f) == emits_nothing(
        rep, started, completed
    )


def test_both_answers_occur() -> None:
    """The properties above are not vacuous: an unchanged record says so, a changed one not."""
    rec = VisitRecord(
        site=0, first=0, last=3, arrival_us=1_000, departure_us=2_000, confirmed_us=1_100,
        fix_count=4, inside_share=0.75, median_hdop=math.nan, closed_by="exit",
    )  # fmt: skip
    started, completed = visit_events(rec, "v1")
    rep = _Reported(
        key="k",
        site=0,
        start_us=0,
        end_us=0,
        started=_versioned(started, "k", None),
        completed=_versioned(completed, "k", None) if completed else None,
    )
    assert _visit_unchanged(rep, "v1", "s0", rec)
    moved = VisitRecord(
        site=0, first=0, last=3, arrival_us=1_000, departure_us=2_001, confirmed_us=1_100,
        fix_count=4, inside_share=0.75, median_hdop=math.nan, closed_by="exit",
    )  # fmt: skip
    assert not _visit_unchanged(rep, "v1", "s0", moved)
