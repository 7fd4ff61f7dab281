"""Which fixes layout a new database gets (issue 13), as a pure function of server facts.

The I/O side (reading the facts from real servers: installed-not-preloaded, preloaded, not
installed) is tested in tests/test_store_timescale.py; here every combination of facts.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store.partitions import (
    TimescaleDBFacts,
    TimescaleDBUnavailable,
    decide_layout,
    preload_has_timescaledb,
    suggested_preload,
)

NOT_INSTALLED = TimescaleDBFacts(available_version=None, created_version=None, preload="")
UNLOADED = TimescaleDBFacts(available_version="2.28.3", created_version=None, preload="")
PRELOADED = TimescaleDBFacts(
    available_version="2.28.3", created_version=None, preload="timescaledb"
)


@pytest.mark.parametrize(
    ("preload", "has"),
    [
        ("timescaledb", True),
        ("pg_stat_statements, timescaledb", True),
        ('"timescaledb",auto_explain', True),
        ("$libdir/timescaledb", True),
        ("$libdir/timescaledb.so", True),
        ("", False),
        ("pg_stat_statements", False),
        ("timescaledb-2.28.3", False),  # a versioned module is not the loader
        ("timescaledb_toolkit", False),
    ],
)
def test_preload_list_parsing(preload: str, has: bool) -> None:
    assert preload_has_timescaledb(preload) is has


def test_the_suggested_line_keeps_the_libraries_already_preloaded() -> None:
    assert suggested_preload("") == "shared_preload_libraries = 'timescaledb'"
    assert suggested_preload(None) == "shared_preload_libraries = 'timescaledb'"
    assert suggested_preload("pg_stat_statements, auto_explain") == (
        "shared_preload_libraries = 'pg_stat_statements,auto_explain,timescaledb'"
    )


@pytest.mark.parametrize(
    ("facts", "auto", "fallback"),
    [
        (NOT_INSTALLED, "native", False),  # nothing to fall back from: no warning
        (UNLOADED, "native", True),
        (PRELOADED, "timescaledb", False),
        # created in this database, preload list unreadable (not a superuser): trust it
        (
            TimescaleDBFacts(available_version="2.28.3", created_version="2.28.3", preload=None),
            "timescaledb",
            False,
        ),
        # created, but the server now says it is not preloaded: using it would end the session
        (
            TimescaleDBFacts(available_version="2.28.3", created_version="2.28.3", preload=""),
            "native",
            True,
        ),
        # installed, preload unreadable, not created: cannot know, so do not risk it
        (
            TimescaleDBFacts(available_version="2.28.3", created_version=None, preload=None),
            "native",
            True,
        ),
    ],
)
def test_auto_decides_from_the_facts(facts: TimescaleDBFacts, auto: str, fallback: bool) -> None:
    decision = decide_layout("auto", facts)
    assert (decision.layout, decision.fallback) == (auto, fallback)
    assert decide_layout("native", facts).layout == "native"
    if auto == "timescaledb":
        assert decide_layout("timescaledb", facts).layout == "timescaledb"
    else:
        with pytest.raises(TimescaleDBUnavailable):
            decide_layout("timescaledb", facts)


def test_the_fallback_line_names_the_setting_to_change() -> None:
    reason = decide_layout("auto", UNLOADED).reason
    assert "TimescaleDB 2.28.3 is installed but not preloaded" in reason
    assert "add shared_preload_libraries = 'timescaledb' to postgresql.conf" in reason
    assert "native day partitions" in reason


@pytest.mark.parametrize(
    ("facts", "says"),
    [
        (UNLOADED, "add shared_preload_libraries = 'timescaledb' to postgresql.conf and restart"),
        (NOT_INSTALLED, "not installed on this PostgreSQL server; install TimescaleDB"),
        (
            TimescaleDBFacts(available_version=None, created_version=None, preload="timescaledb"),
            "extension files are missing",
        ),
    ],
)
def test_timescaledb_asked_but_unusable_says_what_to_do(facts: TimescaleDBFacts, says: str) -> None:
    with pytest.raises(TimescaleDBUnavailable) as err:
        decide_layout("timescaledb", facts)
    assert says in str(err.value)
    assert "\n" not in str(err.value), "one line"
    assert str(err.value).startswith("partitioning=timescaledb: ")


def test_unknown_partitioning_is_refused() -> None:
    with pytest.raises(ValueError, match="auto, native or timescaledb"):
        decide_layout("hypertable", PRELOADED)  # type: ignore[arg-type]


versions = st.one_of(st.none(), st.sampled_from(["2.28.3", "2.17.0"]))
preloads = st.one_of(
    st.none(), st.sampled_from(["", "timescaledb", "pg_stat_statements", "a,timescaledb"])
)
facts_st = st.builds(
    TimescaleDBFacts, available_version=versions, created_version=versions, preload=preloads
)


@given(facts=facts_st)
def test_auto_never_raises_and_agrees_with_an_explicit_request(facts: TimescaleDBFacts) -> None:
    """auto = timescaledb exactly when an explicit timescaledb request would succeed; a
    hypertable is only chosen when the server is not known to lack the preload."""
    auto = decide_layout("auto", facts)
    try:
        explicit = decide_layout("timescaledb", facts).layout
    except TimescaleDBUnavailable:
        explicit = "native"
    assert auto.layout == explicit
    if auto.layout == "timescaledb":
        assert facts.preloaded is not False
        assert (facts.available_version or facts.created_version) is not None
    assert "\n" not in auto.reason
