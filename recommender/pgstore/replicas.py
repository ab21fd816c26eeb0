"""Where a store's reads go: a streaming standby that is up to date, else the primary.

Queries only read, so they can be served by read replicas (streaming standbys made with
``pg_basebackup -R``); writes always go to the primary. Before it is used, a replica must answer
within ``connect_timeout`` and have replayed the primary's write-ahead log to within
``max_lag_bytes`` (bytes are measured, not seconds: an idle primary writes nothing, so a time
since the last replayed transaction grows while the standby is in fact current). A replica that
is down or lagging is skipped with a warning, and the primary answers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from .dsn import mask_dsn

__all__ = ["DEFAULT_MAX_LAG_BYTES", "ReadRouting"]

logger = logging.getLogger(__name__)

#: 16 MiB of write-ahead log: one WAL segment.
DEFAULT_MAX_LAG_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class ReadRouting:
    """The primary's DSN, the replicas' DSNs in order of preference, and the bounds."""

    primary: str
    replicas: Sequence[str] = ()
    max_lag_bytes: int = DEFAULT_MAX_LAG_BYTES
    connect_timeout: float = 2.0

    def read_dsn(self) -> str:
        """The DSN reads should use now (the first usable replica, else the primary)."""
        if not self.replicas:
            return self.primary
        try:
            with self._connect(self.primary) as conn:
                row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        except psycopg.Error as err:
            logger.warning(
                "cannot ask the primary %s for its position (%s); reading from it anyway",
                mask_dsn(self.primary),
                mask_dsn(str(err).strip()),
            )
            return self.primary
        assert row is not None
        for dsn in self.replicas:
            lag = self._lag(dsn, str(row[0]))
            if lag is not None and lag <= self.max_lag_bytes:
                return dsn
            if lag is not None:
                logger.warning(
                    "replica %s lags the primary by %d bytes (bound %d): skipped",
                    mask_dsn(dsn),
                    lag,
                    self.max_lag_bytes,
                )
        return self.primary

    def _lag(self, dsn: str, primary_lsn: str) -> int | None:
        """Bytes of the primary's log the replica has not replayed; ``None`` if it is down."""
        try:
            with self._connect(dsn) as conn:
                row = conn.execute(
                    "SELECT pg_is_in_recovery(), "
                    "pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())",
                    (primary_lsn,),
                ).fetchone()
        except psycopg.Error as err:
            logger.warning(
                "replica %s is unavailable (%s): skipped", mask_dsn(dsn), mask_dsn(str(err).strip())
            )
            return None
        assert row is not None
        in_recovery, lag = row
        if not in_recovery:  # promoted, or a primary given as a replica: it has every write
            return 0
        return max(0, int(lag)) if lag is not None else None

    def _connect(self, dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(
            dsn, autocommit=True, connect_timeout=max(1, round(self.connect_timeout))
        )
