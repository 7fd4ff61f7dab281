"""Shared fixtures.  The broker and database fixtures start private processes (see
tests/support/); integration tests never skip silently when those cannot start: they fail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support.day import MatchedDay, matched_day

pytest_plugins = ["tests.support.pg", "tests.support.broker"]

REAL_TRACKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-tracks"

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def real_tracks() -> Path:
    """The real receiver logs in ../shared/data/real-tracks (written by others)."""
    if not REAL_TRACKS.is_dir():
        pytest.fail(f"real tracks not found at {REAL_TRACKS}: the repo expects ../shared beside it")
    return REAL_TRACKS


@pytest.fixture(scope="session")
def simulated_day(tmp_path_factory: pytest.TempPathFactory) -> MatchedDay:
    """A simulated day decoded and matched (tests/support/day.py), made once per run."""
    return matched_day(tmp_path_factory.mktemp("matched-day"))
