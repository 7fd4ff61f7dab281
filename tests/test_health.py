"""Health as pure functions of one reading, and the one-line-per-state-change log policy."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwatch.health import (
    DEP_TRANSITIONS,
    DependencyLog,
    DepInput,
    DepState,
    HealthInputs,
    HealthLimits,
    evaluate_liveness,
    evaluate_readiness,
)

LIMITS = HealthLimits(probe_interval_s=2, max_probe_age_s=10, max_commit_age_s=30,
                      max_engine_lag_s=30, stall_s=300)  # fmt: skip


def reading(**kw: object) -> HealthInputs:
    base: dict[str, object] = {
        "now_s": 1000.0, "database_ok": True, "database_checked_s": 999.0,
        "broker_connected": True,
    }  # fmt: skip
    base.update(kw)
    return HealthInputs(**base)  # type: ignore[arg-type]


def test_all_well_is_ready_and_live() -> None:
    assert evaluate_readiness(reading(), LIMITS).ok
    assert evaluate_liveness(reading(), LIMITS).ok


@pytest.mark.parametrize(
    ("kw", "failing"),
    [
        ({"database_ok": False, "database_error": "refused"}, "database"),
        ({"database_ok": None, "database_checked_s": None}, "database"),
        ({"database_checked_s": 980.0}, "database"),  # the probe itself is stuck
        ({"writer_store_up": False}, "database"),
        ({"broker_connected": False}, "broker"),
        ({"unacked_messages": 5, "last_commit_age_s": 31.0}, "commits"),
        ({"engine_lag_s": 45.0}, "engine"),
    ],
)
def test_each_failure_names_its_check(kw: dict[str, object], failing: str) -> None:
    report = evaluate_readiness(reading(**kw), LIMITS)
    assert not report.ok
    assert [k for k, c in report.checks.items() if not c.ok] == [failing]
    assert report.as_json()["status"] == "fail"


def test_an_idle_service_is_ready_however_old_its_last_commit() -> None:
    assert evaluate_readiness(reading(unacked_messages=0, last_commit_age_s=86400.0), LIMITS).ok


def test_liveness_fails_only_for_a_wedged_pipeline_not_for_an_outage() -> None:
    outage = reading(database_ok=False, unacked_messages=100, last_commit_age_s=3600.0)
    assert evaluate_liveness(outage, LIMITS).ok
    wedged = reading(unacked_messages=100, last_commit_age_s=301.0)
    assert not evaluate_liveness(wedged, LIMITS).ok


def test_the_transition_table_is_total() -> None:
    assert set(DEP_TRANSITIONS) == {(s, i) for s in DepState for i in DepInput}


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


@given(st.lists(st.booleans(), max_size=60))
def test_one_line_per_state_change_whatever_the_retry_cadence(outcomes: list[bool]) -> None:
    clock = Clock()
    logger = logging.getLogger("test.health.deplog")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        dep = DependencyLog("database", "FLEETWATCH_DATABASE_URL", clock=clock, logger=logger)
        for ok in outcomes:
            clock.t += 1
            if ok:
                dep.ok("probe")
            else:
                dep.failed("probe", "refused", 2.0)
    finally:
        logger.removeHandler(handler)
    changes = sum(1 for a, b in zip([None, *outcomes], outcomes, strict=False) if a != b)
    assert len(records) == changes == dep.changes
    assert all(r.levelno == logging.WARNING for r in records if "unavailable" in r.getMessage())
