"""PostgreSQL storage: raw fixes (time-partitioned), dead letters, the unit registry.

See docs/store.md for the schema, partitioning, retention and environment variables.
"""

from store.errors import (
    EmbeddedPostgresError,
    MigrationError,
    StoreError,
    StoreUnavailable,
    StoreWriteError,
)
from store.pg_store import Store, StoreStatistics, WriteResult, open_store
from store.units import UnitRow

__all__ = [
    "EmbeddedPostgresError",
    "MigrationError",
    "Store",
    "StoreError",
    "StoreStatistics",
    "StoreUnavailable",
    "StoreWriteError",
    "UnitRow",
    "WriteResult",
    "open_store",
]
