"""The private PostgreSQL launcher: binaries lookup and the root/permissions rules."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from store.embedded import BINDIR_ENV, find_pg_bindir, open_embedded_postgres
from store.errors import EmbeddedPostgresError

pytestmark = pytest.mark.integration


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    """A /tmp directory (pytest's tmp_path is 0700 under a root-only parent)."""
    d = Path(tempfile.mkdtemp(prefix="fleetwatch-embedded-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_bindir_from_the_environment_must_hold_postgres(
    tmp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BINDIR_ENV, str(tmp_dir))
    with pytest.raises(EmbeddedPostgresError, match=BINDIR_ENV):
        find_pg_bindir()


def test_system_binaries_are_found() -> None:
    bindir = find_pg_bindir()
    assert (bindir / "postgres").is_file()
    assert (bindir / "initdb").is_file()


def test_a_base_dir_under_a_private_parent(tmp_dir: Path) -> None:
    """As root the server runs as 'nobody', who cannot enter a 0700 parent: refused with a
    message that says what to do.  As an ordinary user the owner can, and it starts."""
    private = tmp_dir / "private"
    private.mkdir(mode=0o700)
    if os.geteuid() == 0:
        with (
            pytest.raises(EmbeddedPostgresError, match=r"not reachable.*under /tmp"),
            open_embedded_postgres(private / "pg", fsync=False),
        ):
            pass
    else:
        with open_embedded_postgres(private / "pg", fsync=False) as pg:
            assert pg.running


def test_existing_cluster_is_reused_with_its_data(tmp_dir: Path) -> None:
    with (
        open_embedded_postgres(tmp_dir, fsync=False) as pg,
        psycopg.connect(pg.dsn, autocommit=True) as conn,
    ):
        conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    assert not pg.running
    with (
        open_embedded_postgres(tmp_dir, fsync=False) as again,
        psycopg.connect(again.dsn) as conn,
    ):
        assert conn.execute("SELECT x FROM kept").fetchall() == [(42,)]
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
