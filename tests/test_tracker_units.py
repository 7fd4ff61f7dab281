"""FleetTracker's per-batch tracker lookup (``_trackers``) is ``_tracker`` unit by unit.

``_trackers`` skips the method call for the common case (a known unit whose vehicle already
has a tracker); unknown units, first sightings and a unit map swapped between batches (as
``Engine.set_units`` does) must still end with the same trackers, the same vehicles and the
same ``unknown_units`` as calling ``_tracker`` for each unit.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schedule.tracker import FleetTracker

_UNITS = [f"u{i}" for i in range(6)]
_VEHICLES = ["V0", "V1", "V2", "u5"]  # "u5": a vehicle named like an (unknown) unit

_mapping = st.dictionaries(st.sampled_from(_UNITS), st.sampled_from(_VEHICLES), max_size=6)


@settings(max_examples=200, deadline=None)
@given(
    rounds=st.lists(
        st.tuples(st.none() | _mapping, st.lists(st.sampled_from(_UNITS), max_size=8)),
        max_size=6,
    ),
    first=_mapping,
)
def test_batch_lookup_equals_one_tracker_call_per_unit(
    rounds: list[tuple[dict[str, str] | None, list[str]]], first: dict[str, str]
) -> None:
    fast = FleetTracker(["a"], first)
    ref = FleetTracker(["a"], first)
    for mapping, units in rounds:
        if mapping is not None:  # the engine swaps the whole map
            fast.unit_to_vehicle = dict(mapping)
            ref.unit_to_vehicle = dict(mapping)
        got = fast._trackers(units)
        want = [ref._tracker(u) for u in units]
        assert [t.vehicle_id for t in got] == [t.vehicle_id for t in want]
        # one tracker per vehicle: the same unit twice gets the very same object
        assert all(fast.vehicles[t.vehicle_id] is t for t in got)
        assert fast.vehicles.keys() == ref.vehicles.keys()
        assert fast.unknown_units == ref.unknown_units
