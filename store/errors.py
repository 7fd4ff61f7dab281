"""Store exceptions, split by whose move it is next.

:class:`StoreUnavailable` means "the database is not there right now": the caller keeps the data
(does not acknowledge the broker), backs off and retries.  :class:`StoreWriteError` means the
database refused *this* data: retrying the same batch will fail the same way, so the caller must
not loop on it.  Everything else in the store is our own bug and raises loudly.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or dropped the connection; retry later.

    Wraps :class:`psycopg.OperationalError` (and the pool's timeout, a subclass of it).
    Nothing of the failed call was committed.
    """


class StoreWriteError(StoreError):
    """The database rejected the data of one call (not retryable as is); nothing was committed."""


class MigrationError(StoreError):
    """The migrations on disk and the ones recorded in the database disagree."""


class EmbeddedPostgresError(StoreError):
    """A private PostgreSQL server could not be created, started or stopped."""
