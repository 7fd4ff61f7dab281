"""The sans-I/O console hub: snapshots, seq, coalescing, bounded queues, resync, resume,
subscriptions; and the property that no interleaving loses an alert version."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ws_helpers import T0, ConsoleView, S, alert, pos, route, site, stop
from ws.hub import Hub, HubFull, HubLimits, UnknownSession, _Vehicle
from ws.protocol import ScopeMine, ScopeRegion, ScopeVehicles


def hub(**limits: object) -> Hub:
    return Hub(
        sites=[site(1, 37.6, 55.75), site(2, 38.6, 56.75)],
        limits=HubLimits(**limits),  # type: ignore[arg-type]
        vehicles_of=lambda user: frozenset({"V001"}) if user == "D01" else frozenset(),
    )


def read(h: Hub, sid: int, view: ConsoleView, now: int) -> list[dict[str, object]]:
    return [view.apply(t) for t in h.take(sid, now)]


def test_a_console_gets_a_snapshot_then_deltas_with_increasing_seq() -> None:
    h = hub()
    h.publish([alert(1), stop("S0001", "at_risk"), pos("V001", 0)], T0)
    sid = h.open_session(user="D01", role="dispatcher", after=None, now_us=T0)
    view = ConsoleView()
    first = read(h, sid, view, T0)
    assert [m["type"] for m in first] == ["snapshot"]
    snap = first[0]
    assert snap["seq"] == h.seq
    assert view.alerts == {alert(1).id: 1}
    assert snap["sites"][0]["state"] == "at_risk"  # type: ignore[index]
    assert view.vehicles["V001"]["state"] == "moving"
    h.publish([alert(1, 2), alert(2)], T0 + S)
    deltas = read(h, sid, view, T0 + S)
    assert [m["type"] for m in deltas] == ["alert", "alert"]
    assert view.alerts == {alert(1).id: 2, alert(2).id: 1}
    assert h.take(sid, T0 + S) == []


def test_positions_are_coalesced_to_one_frame_per_interval_with_the_newest_each() -> None:
    h = hub()
    sid = h.open_session(user="D01", role="dispatcher", after=None, now_us=T0)
    view = ConsoleView()
    read(h, sid, view, T0)
    h.publish([pos("V001", 0, lon=36.0)], T0)
    assert [m["type"] for m in read(h, sid, view, T0)] == ["positions"]  # the first at once
    for k in range(1, 10):  # nine rounds of two vehicles within 0.9 s (the interval less 10 %)
        h.publish([pos("V001", k / 11, lon=37.0 + k), pos("V002", k / 11)], T0 + k * S // 11)
        got = read(h, sid, view, T0 + k * S // 11)
        assert all(m["type"] != "positions" for m in got)  # not due yet
    got = read(h, sid, view, T0 + S)
    assert [m["type"] for m in got] == ["positions"]
    assert sorted(v["vehicle_id"] for v in got[0]["vehicles"]) == ["V001", "V002"]  # type: ignore[attr-defined]
    assert view.vehicles["V001"]["lon"] == 46.0  # the newest
    assert h.deadline_us(sid) is None  # nothing new
    h.publish([pos("V002", 1.5)], T0 + S + 1)  # due 0.9 s after the newest it got was published
    assert h.deadline_us(sid) == T0 + 9 * S // 11 + 9 * S // 10


def test_consoles_in_step_share_one_positions_frame() -> None:
    h = hub()
    sids = [h.open_session(user=f"u{k}", role="viewer", after=None, now_us=T0) for k in range(5)]
    for sid in sids:
        h.take(sid, T0)
    h.publish([pos(f"V{k:03d}", 1) for k in range(50)], T0 + S)
    frames = {h.take(sid, T0 + S)[0] for sid in sids}
    assert len(frames) == 1
    assert h.counts["position_frames_built"] == 1
    assert h.counts["position_frames_shared"] == 4


def test_a_console_that_stops_reading_gets_resync_and_a_snapshot_never_a_gap() -> None:
    h = hub(queue_messages=5)
    fast, slow = (
        h.open_session(user=u, role="dispatcher", after=None, now_us=T0) for u in ("a", "b")
    )
    vf, vs = ConsoleView(), ConsoleView()
    read(h, fast, vf, T0)
    read(h, slow, vs, T0)
    for n in range(1, 21):
        h.publish([alert(n)], T0 + n)
        read(h, fast, vf, T0 + n)  # the fast one keeps up; the slow one never reads
    assert h.statistics().queued_max <= 5
    got = read(h, slow, vs, T0 + 30)
    assert [m["type"] for m in got][:2] == ["resync", "snapshot"]
    assert vs.alerts == vf.alerts == {a.id: a.version for a in h.alerts.values()}
    assert h.counts["resyncs"] == 1
    assert h.counts["overflows"] >= 1


def test_resume_after_reconnect_replays_every_message_in_between() -> None:
    h = hub()
    sid = h.open_session(user="a", role="viewer", after=None, now_us=T0)
    view = ConsoleView()
    read(h, sid, view, T0)
    h.publish([alert(1)], T0)
    read(h, sid, view, T0)
    h.close_session(sid)
    h.publish([alert(2), alert(1, 2), stop("S0002", "late")], T0 + S)
    sid = h.open_session(user="a", role="viewer", after=view.last_seq, now_us=T0 + S)
    got = read(h, sid, view, T0 + S)
    assert [m["type"] for m in got] == ["alert", "alert", "stop"]
    assert view.alerts == {alert(1).id: 2, alert(2).id: 1}


@pytest.mark.parametrize("after", [-5, 10**9])
def test_resume_from_a_seq_too_old_or_unknown_is_a_resync(after: int) -> None:
    h = hub(replay_messages=3)
    h.publish([alert(n) for n in range(1, 10)], T0)
    sid = h.open_session(user="a", role="viewer", after=after, now_us=T0)
    got = [json.loads(t)["type"] for t in h.take(sid, T0)]
    assert got == ["resync", "snapshot"]


def test_subscriptions_narrow_deltas_and_snapshots() -> None:
    h = hub()
    h.publish([pos("V001", 0, 37.6, 55.75), pos("V002", 0, 38.6, 56.75)], T0)
    h.publish([stop("S0001", vehicle="V001"), stop("S0002", vehicle="V002")], T0)
    mine = h.open_session(user="D01", role="dispatcher", after=None, now_us=T0)
    vehicles = h.open_session(user="x", role="viewer", after=None, now_us=T0)
    region = h.open_session(user="y", role="viewer", after=None, now_us=T0)
    h.subscribe(mine, ScopeMine())
    h.subscribe(vehicles, ScopeVehicles(vehicles=frozenset({"V002"})))
    h.subscribe(region, ScopeRegion(min_lon=38, min_lat=56, max_lon=39, max_lat=57))
    snaps = {sid: json.loads(h.take(sid, T0)[0]) for sid in (mine, vehicles, region)}
    assert [v["vehicle_id"] for v in snaps[mine]["vehicles"]] == ["V001"]
    assert [v["vehicle_id"] for v in snaps[vehicles]["vehicles"]] == ["V002"]
    assert [v["vehicle_id"] for v in snaps[region]["vehicles"]] == ["V002"]
    assert [s["site_id"] for s in snaps[region]["sites"]] == ["S0002"]
    assert [s["site_id"] for s in snaps[mine]["stops"]] == ["S0001"]
    # an alert about S0001 (V001's stop) assigned to D02, one about S0002 assigned to D01
    h.publish([alert(1, assignee="D02"), alert(2, assignee="D01")], T0 + 1)
    got = {sid: [json.loads(t) for t in h.take(sid, T0 + 1)] for sid in (mine, vehicles, region)}
    assert sorted(m["alert"]["alert_id"] for m in got[mine]) == sorted(
        [alert(1).id, alert(2).id]
    )  # my vehicle's stop, and the one assigned to me
    assert [m["alert"]["alert_id"] for m in got[vehicles]] == [alert(2).id]
    assert [m["alert"]["alert_id"] for m in got[region]] == [alert(2).id]
    h.publish([pos("V001", 2, 37.7, 55.8), pos("V002", 2, 38.7, 56.8)], T0 + 2 * S)
    p = json.loads(h.take(vehicles, T0 + 2 * S)[0])
    assert [v["vehicle_id"] for v in p["vehicles"]] == ["V002"]


def test_vehicle_state_and_routes_and_status() -> None:
    h = hub()
    sid = h.open_session(user="a", role="viewer", after=None, now_us=T0)
    view = ConsoleView()
    read(h, sid, view, T0)
    from schedule.engine import DataDelayed
    from tests.ws_helpers import DATE

    h.publish([stop("S0001", vehicle="V001"), route("V001", "S0001")], T0)
    h.publish([DataDelayed(active=True, newest_fix_us=T0, at_us=T0)], T0)
    got = read(h, sid, view, T0)
    types = [m["type"] for m in got]
    assert types == ["stop", "route", "status", "positions"]  # the vehicle's route_id
    assert got[1]["route"]["stops"][0]["site_id"] == "S0001"  # type: ignore[index]
    assert got[2]["data_delayed"] is True
    h.publish([pos("V001", 1, 37.6, 55.75)], T0 + S)  # parked: speed 30 → moving
    read(h, sid, view, T0 + S)
    assert view.vehicles["V001"]["route_id"] == f"{DATE}/V001"
    from schedule.events import VisitStarted

    visit = VisitStarted(
        visit_id="v1", vehicle_id="V001", site_id="S0001", arrival_us=T0, confirmed_us=T0 + S
    )
    h.publish([visit], T0 + S)
    got = read(h, sid, view, T0 + 2 * S)
    assert [m["type"] for m in got] == ["vehicle", "positions"]
    assert got[0]["vehicle"]["state"] == "at_site"  # type: ignore[index]


def test_limits_and_unknown_sessions() -> None:
    h = hub(max_consoles=1)
    h.open_session(user="a", role="viewer", after=None, now_us=T0)
    with pytest.raises(HubFull):
        h.open_session(user="b", role="viewer", after=None, now_us=T0)
    with pytest.raises(UnknownSession):
        h.take(999, T0)
    with pytest.raises(ValueError, match="queue_messages"):
        HubLimits(queue_messages=0)


def test_bad_records_are_counted_and_the_rest_goes_on() -> None:
    h = hub()
    h.publish([pos("V001", 0, lon=float("nan")), object(), alert(1)], T0)
    assert h.counts["bad_records"] == 1
    assert alert(1).id in h.alerts


def test_an_old_or_repeated_alert_version_changes_nothing() -> None:
    h = hub()
    h.publish([alert(1, 3)], T0)
    seq = h.seq
    h.publish([alert(1, 2), alert(1, 3)], T0)
    assert h.seq == seq
    assert h.alerts[alert(1).id].version == 3


# -- the property -------------------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(1, 6), st.booleans()),
        st.tuples(st.just("read"), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("reconnect"), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("positions"), st.integers(0, 3), st.booleans()),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops=ops, queue=st.integers(1, 8), replay=st.integers(1, 30))
def test_no_interleaving_loses_an_alert_version(
    ops: list[tuple[str, int, bool]], queue: int, replay: int
) -> None:
    """Publishes, reads (fast or not at all), reconnects with ``after=`` (resume or resync),
    bursts of positions, in any order and with tiny bounds: after a final read, each console's
    alerts (snapshot + deltas) are exactly the hub's current versions, and every console saw
    strictly increasing seq."""
    h = hub(queue_messages=queue, replay_messages=replay)
    versions: dict[int, int] = {}
    views = [ConsoleView() for _ in range(3)]
    sids = [h.open_session(user=f"u{k}", role="viewer", after=None, now_us=T0) for k in range(3)]
    now = T0
    for op, n, flag in ops:
        now += S // 3
        if op == "publish":
            versions[n] = versions.get(n, 0) + 1
            status = "resolved" if flag else "open"
            h.publish([alert(n, versions[n], status=status)], now)  # type: ignore[arg-type]
        elif op == "read":
            if flag:
                read(h, sids[n], views[n], now)
        elif op == "reconnect":
            h.close_session(sids[n])
            if flag:  # a page reload: a fresh view, no after
                views[n] = ConsoleView()
                sids[n] = h.open_session(user=f"u{n}", role="viewer", after=None, now_us=now)
            else:
                views[n].last_seq = views[n].last_seq  # keep the fold, resume
                sids[n] = h.open_session(
                    user=f"u{n}", role="viewer", after=views[n].last_seq, now_us=now
                )
        else:
            h.publish([pos(f"V{k}", now / S) for k in range(n + 1)], now)
    expected = {a.id: a.version for a in h.alerts.values()}
    assert expected == {alert(n).id: v for n, v in versions.items()}
    for k in range(3):
        read(h, sids[k], views[k], now + 10 * S)
        assert views[k].alerts == expected


@given(
    lat=st.floats(allow_nan=True, allow_infinity=True),
    lon=st.floats(-180, 180),
    speed=st.floats(allow_nan=True),
    t=st.integers(0, 4_000_000_000_000_000),
    site=st.none() | st.text(max_size=8),
    vid=st.text(min_size=1, max_size=8),
)
def test_the_fast_vehicle_fragment_is_the_json_of_the_record(
    lat: float, lon: float, speed: float, t: int, site: str | None, vid: str
) -> None:
    from core.fixes import iso_utc
    from ws.hub import _Vehicle

    v = _Vehicle(vid, t_us=t, lat=lat, lon=lon, speed_kmh=speed, site_id=site, route_id="r/1")
    assert json.loads(v.fragment(iso_utc(t) if t else None)) == v.to_json()


def test_a_shared_positions_frame_is_never_stale_for_a_later_console() -> None:
    """Two consoles in step; the first takes the round's frame, then a vehicle's route changes
    (no new position): the second console's frame must carry the route, not the cached one."""
    from tests.ws_helpers import DATE

    h = hub()
    a, b = (h.open_session(user=u, role="viewer", after=None, now_us=T0) for u in ("a", "b"))
    va, vb = ConsoleView(), ConsoleView()
    read(h, a, va, T0)
    read(h, b, vb, T0)
    h.publish([pos("V001", 1)], T0 + S)
    read(h, a, va, T0 + S)
    h.publish([route("V001", "S0001")], T0 + S)
    read(h, b, vb, T0 + S)
    assert vb.vehicles["V001"]["route_id"] == f"{DATE}/V001"
    read(h, a, va, T0 + 2 * S)
    assert va.vehicles["V001"]["route_id"] == f"{DATE}/V001"


def test_only_the_newest_two_service_days_stay_in_snapshots() -> None:
    """A service that runs for weeks must not send every day's stops in each snapshot."""
    import dataclasses

    h = hub()
    days = ["2026-11-23", "2026-11-24", "2026-11-25"]
    for d in days:
        h.publish(
            [
                dataclasses.replace(stop("S0001"), service_date=d, stop_id=f"{d}/S0001"),
                dataclasses.replace(alert(1), id=f"stop/{d}/S0001"),
            ],
            T0,
        )
    assert sorted(h.stops) == [f"{d}/S0001" for d in days[1:]]
    assert sorted(h.alerts) == [f"stop/{d}/S0001" for d in days[1:]]
    late = dataclasses.replace(stop("S0001", "missed"), service_date=days[0], stop_id="x")
    seq = h.seq
    h.publish([late], T0)
    assert h.seq == seq + 1  # still news for the consoles
    assert "x" not in h.stops
    sid = h.open_session(user="a", role="viewer", after=None, now_us=T0)
    snap = json.loads(h.take(sid, T0)[0])
    assert {s["service_date"] for s in snap["stops"]} == set(days[1:])
    assert snap["sites"][0]["state"] == "at_risk"  # the newest day's stop of the site


def test_positions_go_last_even_when_the_shared_frame_is_older_than_a_queued_alert() -> None:
    """Console a takes the round's positions frame; alerts come; console b (in step with a)
    takes: b's alerts come first and its positions after them, under a seq above theirs (the
    shared frame, older than the alerts, is not reused: that would put the 300 KB frame in
    front of the alerts or break the seq order)."""
    h = hub()
    a, b = (h.open_session(user=u, role="viewer", after=None, now_us=T0) for u in ("a", "b"))
    va, vb = ConsoleView(), ConsoleView()
    read(h, a, va, T0)
    read(h, b, vb, T0)
    h.publish([pos(f"V{k:03d}", 1) for k in range(20)], T0 + S)
    got_a = read(h, a, va, T0 + S)
    assert [m["type"] for m in got_a] == ["positions"]
    h.publish([alert(n) for n in range(1, 4)], T0 + S)
    got_b = read(h, b, vb, T0 + S)  # ConsoleView asserts the seq order
    assert [m["type"] for m in got_b] == ["alert", "alert", "alert", "positions"]
    assert got_b[-1]["vehicles"] == got_a[0]["vehicles"]
    assert got_b[-1]["seq"] > got_a[0]["seq"]  # type: ignore[operator]
    # a third console in b's state shares b's frame, not a's
    c = h.open_session(user="c", role="viewer", after=None, now_us=T0)
    h.take(c, T0)  # (its snapshot: its cursor is now the newest; no positions due)
    assert h.counts["position_frames_built"] == 2
    # with replies queued (no seq) the positions still come last
    h.publish([pos("V001", 2)], T0 + 2 * S)
    h.reply(b, '{"type":"reply","id":1,"ok":true,"result":{}}')
    h.publish([alert(9)], T0 + 2 * S)
    assert [m["type"] for m in read(h, b, vb, T0 + 2 * S)] == ["reply", "alert", "positions"]


# -- vehicle fragments made lazily -----------------------------------------------------------


class _EagerHub(Hub):
    """The hub as it was: each vehicle's fragment rendered at every position change."""

    def _touch_position(self, v: _Vehicle) -> None:
        super()._touch_position(v)
        v.frag = self._vehicle_frag(v)


vehicle_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("pos"), st.integers(0, 3), st.floats(36, 38), st.sampled_from([0.0, 3.0, 40.0])
        ),
        st.tuples(st.just("route"), st.integers(0, 3), st.just(0.0), st.just(0.0)),
        st.tuples(st.just("silent"), st.integers(0, 3), st.booleans(), st.just(0.0)),
        st.tuples(st.just("read"), st.integers(0, 1), st.just(0.0), st.just(0.0)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops=vehicle_ops)
def test_a_lazily_made_fragment_is_the_one_made_at_the_change(
    ops: list[tuple[str, int, float, float]],
) -> None:
    """Fragments rendered when a frame first needs them (not at every position) give the same
    frames as rendering at each change, whatever changes (position, speed -> state, route,
    silence) and reads interleave."""
    from schedule.stop_events import VehicleCondition, VehiclePosition
    from tests.ws_helpers import DATE

    hubs = (hub(), _EagerHub(sites=[], vehicles_of=lambda _u: frozenset()))
    hubs[1].sites = hubs[0].sites
    sids = [[h.open_session(user=f"u{k}", role="viewer", after=None, now_us=T0) for k in (0, 1)]
            for h in hubs]  # fmt: skip
    now = T0
    for op, k, x, y in ops:
        now += S // 4
        vid = f"V{k:03d}"
        rec: list[object] = []
        if op == "pos":
            rec = [VehiclePosition(vehicle_id=vid, t_us=now, lon=x, lat=55.7, speed_kmh=y)]
        elif op == "route":
            rec = [route(vid, "S0001")]
        elif op == "silent":
            rec = [VehicleCondition(
                vehicle_id=vid, service_date=DATE, kind="gps_silent", active=bool(x),
                since_us=now, at_us=now, minutes=1.0, detail="", cause="tick",
            )]  # fmt: skip
        if rec:
            for h in hubs:
                h.publish(rec, now)
        else:
            lazy, eager = (h.take(s[k], now) for h, s in zip(hubs, sids, strict=True))
            assert lazy == eager
    for k in (0, 1):
        assert hubs[0].take(sids[0][k], now + 5 * S) == hubs[1].take(sids[1][k], now + 5 * S)
