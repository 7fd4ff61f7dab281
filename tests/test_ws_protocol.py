"""The console protocol's parser: every field checked, one documented outcome for any input."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.ws_helpers import alert, route, stop
from ws.protocol import (
    MAX_COMMAND_BYTES,
    MAX_FRAME_BYTES,
    AcknowledgeCmd,
    BadFrame,
    CancelCmd,
    CommentCmd,
    PingCmd,
    ReassignCmd,
    Refused,
    ReorderCmd,
    ScopeAll,
    ScopeMine,
    ScopeRegion,
    ScopeVehicles,
    SubscribeCmd,
    TrackCmd,
    alert_json,
    dumps,
    parse_command,
    route_json,
    stop_json,
)


def parse(**msg: Any) -> Any:
    return parse_command(json.dumps(msg))


def test_every_command_parses_to_its_record() -> None:
    assert parse(type="acknowledge", id="1", alert_id="a", version=3) == AcknowledgeCmd(
        id="1", alert_id="a", version=3
    )
    assert parse(type="comment", id=2, alert_id="a", text="hi") == CommentCmd(
        id=2, alert_id="a", text="hi"
    )
    assert parse(type="reassign", id=3, stop_id="s", to_vehicle="V") == ReassignCmd(
        id=3, stop_id="s", to_vehicle="V"
    )
    assert parse(type="reorder", id=4, route_id="r", stop_ids=["a", "b"]) == ReorderCmd(
        id=4, route_id="r", stop_ids=("a", "b")
    )
    assert parse(type="cancel", id=5, stop_id="s", reason="closed") == CancelCmd(
        id=5, stop_id="s", reason="closed"
    )
    assert parse(type="track", id=6, vehicle_id="V") == TrackCmd(id=6, vehicle_id="V", minutes=60)
    assert parse(type="ping", id=7) == PingCmd(id=7)
    scopes = [
        ("all", ScopeAll()),
        ("mine", ScopeMine()),
        ({"vehicles": ["V1"]}, ScopeVehicles(vehicles=frozenset({"V1"}))),
        ({"region": [37, 55, 38, 56]}, ScopeRegion(min_lon=37, min_lat=55, max_lon=38, max_lat=56)),
    ]
    for raw, scope in scopes:
        assert parse(type="subscribe", id=8, scope=raw) == SubscribeCmd(id=8, scope=scope)


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        ({"type": "acknowledge", "id": 1, "alert_id": "a", "version": 0}, "version"),
        ({"type": "acknowledge", "id": 1, "alert_id": "a", "version": True}, "version"),
        ({"type": "acknowledge", "id": 1, "alert_id": "", "version": 1}, "alert_id"),
        ({"type": "comment", "id": 1, "alert_id": "a", "text": "x" * 2001}, "text"),
        ({"type": "cancel", "id": 1, "stop_id": "s", "reason": "x" * 501}, "reason"),
        ({"type": "reorder", "id": 1, "route_id": "r", "stop_ids": ["a", "a"]}, "stop_ids"),
        ({"type": "reorder", "id": 1, "route_id": "r", "stop_ids": []}, "stop_ids"),
        ({"type": "track", "id": 1, "vehicle_id": "V", "minutes": 0}, "minutes"),
        ({"type": "subscribe", "id": 1, "scope": {"region": [38, 55, 37, 56]}}, "scope"),
        ({"type": "subscribe", "id": 1, "scope": {"region": [1, 2, "x", 4]}}, "scope"),
        ({"type": "subscribe", "id": 1, "scope": "some"}, "scope"),
        ({"type": "ping", "id": "x" * 65}, "id"),
        ({"type": "ping", "id": None}, "id"),
    ],
)
def test_each_bad_field_is_refused_by_name(msg: dict[str, Any], field: str) -> None:
    with pytest.raises(Refused, match=field) as exc:
        parse_command(json.dumps(msg))
    assert exc.value.code == "invalid"


def test_size_limits_and_frames_that_close() -> None:
    big = json.dumps({"type": "ping", "id": 1, "pad": "x" * MAX_COMMAND_BYTES})
    with pytest.raises(Refused, match="bytes"):
        parse_command(big)
    with pytest.raises(BadFrame) as exc:
        parse_command("x" * (MAX_FRAME_BYTES + 1))
    assert exc.value.close_code == 1009
    with pytest.raises(BadFrame) as exc:
        parse_command("{nope")
    assert exc.value.close_code == 1007
    with pytest.raises(BadFrame) as exc:
        parse_command(b"\x00")
    assert exc.value.close_code == 1003
    with pytest.raises(Refused, match="unknown type") as r:
        parse_command('{"type": "dance", "id": "k"}')
    assert r.value.id == "k"  # the reply names the command when it can


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_any_frame_is_a_command_a_refusal_or_a_bad_frame(frame: str | bytes) -> None:
    with contextlib.suppress(Refused, BadFrame):
        parse_command(frame)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@given(
    st.sampled_from(
        ["acknowledge", "comment", "reassign", "reorder", "cancel", "subscribe", "track", "ping"]
    ),
    st.dictionaries(
        st.sampled_from(
            ["id", "alert_id", "version", "text", "stop_id", "to_vehicle", "route_id",
             "stop_ids", "reason", "scope", "vehicle_id", "minutes", "other"]
        ),
        json_values,
    ),
)  # fmt: skip
def test_any_fields_of_any_type_give_a_command_or_a_refusal(
    kind: str, fields: dict[str, Any]
) -> None:
    try:
        parse_command(json.dumps({"type": kind, **fields}))
    except Refused:
        pass
    except BadFrame as exc:  # only NaN/Infinity-bearing text could get here; json accepts it
        pytest.fail(f"unexpected bad frame {exc}")


def test_records_encode_to_json_without_nan_and_with_the_protocol_names() -> None:
    a = alert_json(alert(1))
    assert a["alert_id"] == a["id"]
    assert a["history"] == []
    assert a["title"] == alert(1).summary
    assert a["facts"]["eta"].endswith("Z")
    s = stop_json(stop("S0001", minutes_late=float("nan")))
    assert s["minutes_late"] is None
    assert s["window_start"].endswith("Z")
    r = route_json(route("V001", "S0001"), {})
    assert [x["stop_id"] for x in r["stops"]] == ["2026-11-23/S0001"]
    dumps({"a": a, "s": s, "r": r})  # allow_nan=False: would raise on NaN
