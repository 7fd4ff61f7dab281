"""`fleetwatch loadtest` rides through a database outage: its stored-row counter pauses while
the (real, private) PostgreSQL is stopped and resumes when it is back, with one line each way."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg
import pytest

from fleetwatch.cmd_loadtest import OutageTolerantCounter
from simulators.loadtest import LoadTestError
from store.embedded import EmbeddedPostgres
from tests.support.pg import fresh_database

pytestmark = pytest.mark.integration


@pytest.fixture
def private_dsn(private_pg_server: EmbeddedPostgres) -> Iterator[str]:
    yield from fresh_database(private_pg_server.dsn)


def make_fixes_table(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS fixes (unit_id text, t timestamptz)")
        conn.execute(
            "INSERT INTO fixes SELECT 'lt-' || g, now() FROM generate_series(1, %s) g", (rows,)
        )


def test_counts_pause_during_an_outage_and_resume_after(
    private_pg_server: EmbeddedPostgres, private_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    make_fixes_table(private_dsn, 10)
    counter = OutageTolerantCounter(private_dsn, "lt-")
    try:
        assert counter.count() == 10
        caplog.set_level(logging.INFO, logger="fleetwatch.health")
        private_pg_server.stop()
        assert counter.count() == 10  # no exception: the last count, paused
        assert counter.count() == 10
        private_pg_server.start()
        make_fixes_table(private_dsn, 5)
        assert counter.count() == 15
    finally:
        counter.close()
    assert counter.outages == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # down once, back once
    assert warnings[0].startswith("database unavailable: count stored fixes failed")


def test_a_database_without_the_schema_is_named_as_such(private_dsn: str) -> None:
    with pytest.raises(LoadTestError, match="no fixes table"):
        OutageTolerantCounter(private_dsn, "lt-")
