"""Ordered schema migrations, applied at start.

Each ``migrations/NNNN_name.sql`` runs once, in its own transaction, and is recorded in
``schema_migrations`` with a checksum.  A session advisory lock makes two processes starting
together take turns: the second one waits, then finds nothing left to do.  Editing a migration
that a database has already applied is refused (:class:`MigrationError`): add a new one instead.

The layout of ``fixes`` (native day partitions or a TimescaleDB hypertable) is decided here,
once, before the first pending migration runs: :func:`store.partitions.resolve_layout` reads
facts that cannot end the session and resolves ``partitioning="auto"``; the migrations see the
result as ``current_setting('fleetwatch.partitioning')`` = ``native`` or ``timescaledb`` and
never probe TimescaleDB themselves (issue 13: ``CREATE EXTENSION`` on a server that does not
preload it ends the backend with FATAL).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from typing import Any

import psycopg
from psycopg import sql

from store.errors import MigrationError
from store.partitions import Partitioning, resolve_layout

#: pg_advisory_lock key: "fleetwatch.migrate" hashed once, fixed forever.
MIGRATION_LOCK_KEY = 0x666C_6D67  # "flmg"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

#: Checksums of earlier texts of a migration that create the same schema, accepted as applied.
#: 0001 was changed (issue 13) to obey the layout the runner decided instead of trying
#: ``CREATE EXTENSION`` itself; a database it migrated before has the same tables.
EQUIVALENT_CHECKSUMS: dict[int, frozenset[str]] = {
    1: frozenset({"c477555da44b35461d8eba735e8f1891171e9684d85ca71493037c99a32ec159"}),
}

__all__ = ["EQUIVALENT_CHECKSUMS", "Migration", "Partitioning", "apply_migrations"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    """The migrations shipped in ``store/migrations``, ordered; refuses gaps and duplicates."""
    root = directory if directory is not None else resources.files("store") / "migrations"
    found: list[Migration] = []
    for entry in root.iterdir():
        m = _NAME.match(entry.name)
        if m is None:
            if entry.name.endswith(".sql"):
                raise MigrationError(f"migration file {entry.name!r} is not named NNNN_name.sql")
            continue
        found.append(Migration(version=int(m[1]), name=m[2], sql=entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    check_sequence(found)
    return found


def check_sequence(migrations: Sequence[Migration]) -> None:
    """Versions must be 1, 2, 3, ... in order: a gap means a file was lost in a merge."""
    for expected, mig in enumerate(migrations, start=1):
        if mig.version != expected:
            raise MigrationError(
                f"migration versions must run 1, 2, 3, ... without gaps or duplicates; "
                f"expected {expected:04d}, found {mig.version:04d}_{mig.name}"
            )


async def apply_migrations(
    conn: psycopg.AsyncConnection[Any],
    migrations: Sequence[Migration] | None = None,
    *,
    partitioning: Partitioning = "auto",
    lock_timeout_s: float = 120.0,
) -> list[int]:
    """Apply the pending migrations; returns the versions applied by this call.

    *conn* must be in autocommit mode (each migration gets its own transaction).
    *partitioning* chooses the fixes layout when the fixes table is first created; ``auto`` is
    resolved (and logged) only when some migration is pending.  Raises
    :class:`store.partitions.TimescaleDBUnavailable` for ``timescaledb`` on a server that
    cannot give a hypertable, before anything is created.
    """
    if not conn.autocommit:
        raise ValueError("apply_migrations needs an autocommit connection")
    todo = list(migrations) if migrations is not None else load_migrations()
    check_sequence(todo)
    await conn.execute(
        sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout_s * 1000)}ms"))
    )
    await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    try:
        await conn.execute("RESET lock_timeout")
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        cur = await conn.execute("SELECT version, name, checksum FROM schema_migrations")
        applied = {int(v): (str(n), str(c)) for v, n, c in await cur.fetchall()}
        known = {m.version for m in todo}
        unknown = sorted(set(applied) - known)
        if unknown:
            raise MigrationError(
                f"the database has migrations {unknown} that this code does not know: "
                "it was migrated by a newer fleetwatch; upgrade this one"
            )
        done: list[int] = []
        resolved: str | None = None
        for mig in todo:
            if mig.version in applied:
                name, checksum = applied[mig.version]
                if checksum != mig.checksum and checksum not in EQUIVALENT_CHECKSUMS.get(
                    mig.version, frozenset()
                ):
                    raise MigrationError(
                        f"migration {mig.version:04d}_{mig.name} was edited after it was applied "
                        f"(as {name!r}); never edit an applied migration, add a new one"
                    )
                continue
            if resolved is None:
                resolved = (await resolve_layout(conn, partitioning)).layout
            async with conn.transaction():
                await conn.execute(
                    "SELECT set_config('fleetwatch.partitioning', %s, true)", (resolved,)
                )
                await conn.execute(mig.sql.encode())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (mig.version, mig.name, mig.checksum),
                )
            done.append(mig.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
