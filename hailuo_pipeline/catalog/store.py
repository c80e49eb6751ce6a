"""Short DuckDB transactions that survive the single-writer file lock.

DuckDB lets one process open the file read-write at a time, so every catalog operation opens,
commits and closes within milliseconds, retrying with jitter while another process holds the lock.
No connection is ever held while waiting on fal.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from hailuo_pipeline.catalog.schema import migrate

_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


class CatalogBusyError(RuntimeError):
    """The catalog stayed locked by other processes for longer than the patience allowed."""


def _lock_for(path: str) -> threading.Lock:
    with _process_locks_guard:
        return _process_locks.setdefault(path, threading.Lock())


def _is_lock_conflict(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflict" in text or "being used by another process" in text


class Catalog:
    def __init__(self, path: Path | str, patience_seconds: float = 120.0) -> None:
        self.path = str(Path(path).resolve()) if str(path) != ":memory:" else ":memory:"
        self.patience_seconds = patience_seconds
        self._lock = _lock_for(self.path)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """One short transaction: opened, migrated on first use, committed, closed."""
        with self._lock:
            conn = self._open()
            try:
                migrate(conn)
                conn.execute("BEGIN TRANSACTION")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                if read_only:
                    conn.execute("ROLLBACK")
                else:
                    conn.execute("COMMIT")
            finally:
                conn.close()

    def _open(self) -> duckdb.DuckDBPyConnection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.patience_seconds
        delay = 0.01
        while True:
            try:
                return duckdb.connect(self.path)
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                if not _is_lock_conflict(exc) or time.monotonic() > deadline:
                    if _is_lock_conflict(exc):
                        raise CatalogBusyError(
                            f"catalog {self.path} stayed locked for {self.patience_seconds:.0f} s: {exc}"
                        ) from exc
                    raise
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 0.5)

    def query_df(self, sql: str, params: list | None = None):  # -> pandas.DataFrame
        with self.connect(read_only=True) as conn:
            return conn.execute(sql, params or []).df()
