"""Migrations against a real database: once each, in order, atomically, safe to race."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from store.errors import MigrationError
from store.migrate import EQUIVALENT_CHECKSUMS, Migration, apply_migrations, load_migrations

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)


def recorded(dsn: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(int(v), str(n)) for v, n in rows.fetchall()]


SYNTHETIC = [
    Migration(version=1, name="create_a", sql="CREATE TABLE a (x integer);"),
    # only works after 0001: applying out of order would fail
    Migration(
        version=2,
        name="alter_a",
        sql="ALTER TABLE a ADD COLUMN y text; INSERT INTO a VALUES (1, '%s');",
    ),
    Migration(version=3, name="create_b", sql="CREATE TABLE b AS SELECT x, y FROM a;"),
]


async def test_shipped_migrations_apply_once(pg_dsn: str) -> None:
    shipped = load_migrations()
    async with await connect(pg_dsn) as conn:
        assert await apply_migrations(conn) == [m.version for m in shipped]
        assert await apply_migrations(conn) == []
    assert recorded(pg_dsn) == [(m.version, m.name) for m in shipped]
    with psycopg.connect(pg_dsn) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
    assert {"fixes_default", "dead_letters", "units", "schema_migrations"} <= tables


async def test_migrations_apply_in_order_and_resume(pg_dsn: str) -> None:
    async with await connect(pg_dsn) as conn:
        assert await apply_migrations(conn, SYNTHETIC[:1]) == [1]
        assert await apply_migrations(conn, SYNTHETIC) == [2, 3]
        cur = await conn.execute("SELECT x, y FROM b")
        assert await cur.fetchall() == [(1, "%s")], "SQL is sent as is, '%' included"
    assert recorded(pg_dsn) == [(1, "create_a"), (2, "alter_a"), (3, "create_b")]


async def test_a_failing_migration_leaves_no_trace(pg_dsn: str) -> None:
    broken = [
        *SYNTHETIC[:1],
        Migration(version=2, name="bad", sql="CREATE TABLE c (x int); SELEC 1;"),
    ]
    async with await connect(pg_dsn) as conn:
        with pytest.raises(psycopg.errors.SyntaxError):
            await apply_migrations(conn, broken)
        cur = await conn.execute("SELECT to_regclass('c') IS NULL")
        assert await cur.fetchone() == (True,)
    assert recorded(pg_dsn) == [(1, "create_a")]


async def test_an_edited_migration_is_refused(pg_dsn: str) -> None:
    async with await connect(pg_dsn) as conn:
        await apply_migrations(conn, SYNTHETIC[:1])
        edited = [Migration(version=1, name="create_a", sql="CREATE TABLE a (x bigint);")]
        with pytest.raises(MigrationError, match="edited after it was applied"):
            await apply_migrations(conn, edited)


async def test_a_database_from_a_newer_release_is_refused(pg_dsn: str) -> None:
    async with await connect(pg_dsn) as conn:
        await apply_migrations(conn, SYNTHETIC)
        with pytest.raises(MigrationError, match="newer fleetwatch"):
            await apply_migrations(conn, SYNTHETIC[:2])


async def test_two_processes_starting_together_take_turns(pg_dsn: str) -> None:
    shipped = load_migrations()
    conns = [await connect(pg_dsn) for _ in range(4)]
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(apply_migrations(c), name=f"migrate-{i}")
                for i, c in enumerate(conns)
            ]
    finally:
        for c in conns:
            await c.close()
    applied = sorted(v for t in tasks for v in t.result())
    assert applied == [m.version for m in shipped], "each migration applied by exactly one"
    assert recorded(pg_dsn) == [(m.version, m.name) for m in shipped]


async def test_a_database_migrated_by_the_earlier_0001_text_is_accepted(pg_dsn: str) -> None:
    """0001 changed for issue 13 without changing the schema it creates; a database that
    recorded the earlier checksum starts normally (any other edit is still refused)."""
    shipped = load_migrations()
    (old,) = EQUIVALENT_CHECKSUMS[1]
    async with await connect(pg_dsn) as conn:
        await apply_migrations(conn, partitioning="native")
        await conn.execute("UPDATE schema_migrations SET checksum = %s WHERE version = 1", (old,))
        assert await apply_migrations(conn) == []
        await conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
        with pytest.raises(MigrationError, match="edited after it was applied"):
            await apply_migrations(conn)
    assert recorded(pg_dsn) == [(m.version, m.name) for m in shipped]


async def test_0001_refuses_an_undecided_layout(pg_dsn: str) -> None:
    """Run outside the runner (no decided layout), 0001 stops instead of probing TimescaleDB."""
    (first,) = [m for m in load_migrations() if m.version == 1]
    async with await connect(pg_dsn) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="not native or timescaledb"):
            await conn.execute(first.sql.encode())
