"""PostgreSQL fixtures: a private throwaway server, a fresh database per test, an open Store.

- ``pg_server`` (session): a private :class:`EmbeddedPostgres` in a fresh /tmp directory
  (``fsync=off``: a throwaway test server, never the service's setting), or, when
  ``$FLEETWATCH_TEST_DATABASE_URL`` is set, that server (the tests then need the right to
  CREATE DATABASE there and must not stop it).
- ``pg_dsn`` (function): a new empty database (``CREATE DATABASE … TEMPLATE template0``) on it,
  dropped after the test.
- ``store`` (function, async): a :class:`store.Store` opened on ``pg_dsn`` (migrated).
- ``private_pg_server`` (function): a dedicated server for tests that stop or kill it.
- ``anyio_backend``: asyncio only (async tests are marked ``@pytest.mark.anyio``).

A server that cannot start makes these fixtures *fail* with the reason, never skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from store import Store
from store.embedded import EmbeddedPostgres, open_embedded_postgres
from store.errors import EmbeddedPostgresError

TEST_DATABASE_ENV = "FLEETWATCH_TEST_DATABASE_URL"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalPostgres:
    """A server the tests were given and must not stop: only its DSN is used."""

    dsn: str


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def _open_private_server(*, prefix: str) -> Iterator[EmbeddedPostgres]:
    base = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with contextlib.ExitStack() as stack:
            try:
                pg = stack.enter_context(open_embedded_postgres(base, fsync=False))
            except EmbeddedPostgresError as e:
                pytest.fail(f"cannot start a private PostgreSQL for the tests: {e}", pytrace=False)
            yield pg
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres | ExternalPostgres]:
    url = os.environ.get(TEST_DATABASE_ENV)
    if url:
        try:
            with psycopg.connect(url, connect_timeout=10) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as e:
            pytest.fail(f"${TEST_DATABASE_ENV} is set but unusable: {e}", pytrace=False)
        yield ExternalPostgres(dsn=url)
        return
    yield from _open_private_server(prefix="fleetwatch-pg-session-")


@pytest.fixture
def private_pg_server() -> Iterator[EmbeddedPostgres]:
    """A server of the test's own, which it may stop, kill and restart."""
    yield from _open_private_server(prefix="fleetwatch-pg-private-")


@pytest.fixture
def pg_dsn(pg_server: EmbeddedPostgres | ExternalPostgres) -> Iterator[str]:
    yield from fresh_database(pg_server.dsn)


def fresh_database(admin_dsn: str) -> Iterator[str]:
    """Create an empty database on the server of *admin_dsn*, yield its DSN, drop it."""
    name = f"fw_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield make_conninfo(admin_dsn, dbname=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[Store]:
    s = await Store.open(pg_dsn, partitioning="native")
    try:
        yield s
    finally:
        await s.aclose()
