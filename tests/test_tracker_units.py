"""FleetTracker's per-batch tracker lookup (``_trackers``) is ``_tracker`` unit by unit.

``_trackers`` skips the method call for the common case (a known unit whose vehicle already
has a tracker); unknown units, first sightings and a unit map swapped between batches (as
``Engine.set_units`` does) must still end with the same trackers, the same vehicles and the
same ``unknown_units`` as calling ``_tracker`` for each unit.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schedule.tracker as tracker_module
from schedule.tracker import FleetTracker, SiteListMismatch
from tests.test_tracker_fastpath import batch, drive_leg, run_rounds
from tests.test_visits_properties import FENCES, PARAMS, build, leg
from tests.test_visits_synthetic import TrackBuilder

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


# -- several units of one vehicle in one batch ------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    legs=st.lists(st.one_of(leg, drive_leg), min_size=1, max_size=5),
    seed=st.integers(0, 2**16),
    round_fixes=st.sampled_from([4, 10, 40]),
    split=st.sampled_from(["alternate", "halves", "random"]),
)
def test_units_sharing_a_vehicle_in_one_batch_report_what_one_unit_would(
    legs: list[tuple[str, int, object]], seed: int, round_fixes: int, split: str
) -> None:
    """Two units carried by one vehicle (a unit swapped mid-shift, or a spare in the cab) send
    the same track between them; in a batch the later unit id may carry the earlier fixes.

    The batch-wide decisions (the fast paths' tails, the in-order check) are made per unit
    group before any group is fed; a second group of the same vehicle must not be appended
    behind fixes the first group just added (it raised "Track fix times must be strictly
    increasing", or appended out of order).  Every batch-wide shortcut on must report what the
    fleet reports with none of them.
    """
    arrays = build(legs, seed).arrays()
    n = len(arrays["t_us"])
    rng = np.random.default_rng(seed)
    rounds = []
    for lo in range(0, n, round_fixes):
        idx = np.arange(lo, min(lo + round_fixes, n))
        if split == "alternate":
            to_u1 = idx % 2 == 0
        elif split == "halves":
            to_u1 = idx < lo + len(idx) // 2  # U1 (fed second) carries the earlier half
        else:
            to_u1 = rng.random(len(idx)) < 0.5
        rounds.append(batch([("U0", arrays, idx[~to_u1]), ("U1", arrays, idx[to_u1])]))
    out = []
    for fast in (True, False):
        fleet = FleetTracker(FENCES.ids, {"U0": "V0", "U1": "V0"}, PARAMS, fast=fast)
        out.append(run_rounds(fleet, rounds, [None] * len(rounds), with_now=False))
    assert out[0] == out[1]


def test_a_later_unit_carrying_earlier_fixes_is_not_appended_behind_them() -> None:
    """The case found by hand: U1 carries each round's first five fixes, U0 the next five."""
    arrays = TrackBuilder(seed=5).start(-300, -300).drive(0, 0, 20).park(500).arrays()
    n = len(arrays["t_us"])
    rounds = [
        batch(
            [
                ("U0", arrays, np.arange(lo, min(lo + 10, n))[5:]),
                ("U1", arrays, np.arange(lo, min(lo + 10, n))[:5]),
            ]
        )
        for lo in range(0, n, 10)
    ]
    out = []
    for fast in (True, False):
        fleet = FleetTracker(FENCES.ids, {"U0": "V0", "U1": "V0"}, PARAMS, fast=fast)
        out.append(run_rounds(fleet, rounds, [None] * len(rounds), with_now=False))
        assert fleet.statistics().fixes_in == n
    assert out[0] == out[1]
    assert any(out[0]), "the track parks at a site: something must be reported"


# -- the batch's order by unit (FleetTracker._by_unit) ------------------------------------

_unit_id = st.text(alphabet=st.sampled_from("uU0129é\u4e2d\U0001f69a_-"), min_size=0, max_size=6)


def _by_unit_reference(
    unit_id: np.ndarray, t_us: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """What FleetTracker.feed did before the unit table: argsort the strings."""
    by_t = np.argsort(t_us, kind="stable")
    order = by_t[np.argsort(unit_id[by_t], kind="stable")]
    units = unit_id[order]
    bounds = np.flatnonzero(np.concatenate(([True], units[1:] != units[:-1], [True])))
    return order, bounds, units[bounds[:-1]].tolist()


@settings(max_examples=300, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.tuples(_unit_id, st.integers(0, 5)), min_size=1, max_size=40),
        min_size=1,
        max_size=6,
    ),
    big_endian=st.booleans(),
)
def test_the_order_by_unit_equals_sorting_the_unit_id_strings(
    batches: list[list[tuple[str, int]]], big_endian: bool
) -> None:
    """Units new in a later batch, ids that are prefixes of others, any code points, widths
    changing between batches, equal fix times: the order (stable), the groups and their ids
    equal an argsort of the strings."""
    fleet = FleetTracker(["a"])
    for rows in batches:
        unit_id = np.array([u for u, _ in rows])
        if big_endian:
            unit_id = unit_id.astype(unit_id.dtype.newbyteorder(">"))
        t_us = np.array([t for _, t in rows], dtype=np.int64)
        order, bounds, units = fleet._by_unit(unit_id, t_us)
        want = _by_unit_reference(unit_id, t_us)
        np.testing.assert_array_equal(order, want[0])
        np.testing.assert_array_equal(bounds, want[1])
        assert units == want[2]


def test_the_unit_table_starts_afresh_past_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracker_module, "_MAX_UNITS", 3)
    fleet = FleetTracker(["a"])
    t = np.zeros(2, dtype=np.int64)
    for pair in (["u1", "u2"], ["u3", "u4"], ["u5", "u1"], ["u2", "u6"]):
        unit_id = np.array(pair)
        units = fleet._by_unit(unit_id, t)[2]
        assert units == sorted(pair)
        assert len(fleet._unit_tables[2][2]) <= 3 + 2


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 12),
    n_sites=st.integers(0, 4),
    pairs=st.lists(st.tuples(st.integers(-2, 13), st.integers(-1, 5)), max_size=30),
    seed=st.integers(0, 2**16),
)
def test_ranked_pairs_equal_codes_then_a_stable_argsort_by_rank(
    n: int, n_sites: int, pairs: list[tuple[int, int]], seed: int
) -> None:
    """FleetTracker._ranked_pairs (compiled counting sort) is what feed did with numpy: the
    positions as registry codes, by the fix's rank in the batch order, a fix's pairs in their
    order; an out-of-range position raises SiteListMismatch, a fix index whatever numpy
    indexing did (IndexError, or a negative one counted from the end)."""
    sites = [f"s{i}" for i in range(n_sites)]
    fleet = FleetTracker(["x", *sites])
    fleet.use_sites(sites[::-1])  # codes differ from positions
    rank = np.random.default_rng(seed).permutation(n).astype(np.int64)
    pr = np.array(pairs, dtype=np.int64).reshape(-1, 2).T

    def reference() -> tuple[np.ndarray, np.ndarray]:
        p = fleet._to_codes(pr)
        r = rank[p[0]]
        o = np.argsort(r, kind="stable")
        return r[o], p[1][o]

    try:
        want = reference()
    except (SiteListMismatch, IndexError) as e:
        with pytest.raises(type(e)):
            fleet._ranked_pairs(pr, rank)
        return
    got = fleet._ranked_pairs(pr, rank)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
