"""Short DuckDB transactions that survive the single-writer file lock.

DuckDB lets one process open the file read-write at a time. Each catalog operation is one short
transaction; a process keeps its connection for a moment after a transaction (opening costs ~15 ms,
a transaction ~1 ms). A process that finds the file locked says so by touching a sidecar file
(`<catalog>.waiting`) while it retries; the holder, after `max_hold_seconds` at a stretch, steps aside
as soon as it sees that, so the others get their turn, and keeps the connection while nobody waits (each
step aside costs a close, a checkpoint and a reopen). No connection is held while waiting on fal.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from hailuo_pipeline.catalog.schema import DUCKDB, LATEST_VERSION, apply_migrations
from hailuo_pipeline.errors import HailuoError


def migrate(conn: duckdb.DuckDBPyConnection, target: int = LATEST_VERSION) -> int:
    """Bring the catalog file to `target`, a transaction per version (DuckDB builds no index over rows updated
    in the same transaction); returns the version."""

    def run(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        result = conn.execute(sql, list(params))
        return result.fetchall() if result.description else []

    version = -1
    for step in range(1, target + 1):
        conn.execute("BEGIN TRANSACTION")
        try:
            version = apply_migrations(run, DUCKDB, step)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if version >= target:
            break
    return version


class CatalogBusyError(HailuoError, RuntimeError):
    """The catalog stayed locked by other processes for longer than the patience allowed."""


class NetworkCatalogError(HailuoError, RuntimeError):
    """The embedded catalog sits on a network filesystem, where DuckDB's lock does not keep machines apart."""


# DuckDB's file lock holds between processes of one machine; over these, two machines could both write
NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre", "gpfs"}


def filesystem_type(path: Path, mounts: str | None = None) -> str:
    """The type of the filesystem holding `path`, from the mount table (the longest matching mount point)."""
    if mounts is None:
        table = Path("/proc/mounts")
        mounts = table.read_text() if table.exists() else ""
    target, best, kind = str(path), "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def refuse_network_filesystem(path: Path, mounts: str | None = None) -> None:
    kind = filesystem_type(path, mounts)
    if kind in NETWORK_FILESYSTEMS or kind.startswith("fuse.s3") or kind.startswith("fuse.sshfs"):
        raise NetworkCatalogError(
            f"the catalog {path} is on a network filesystem ({kind}): DuckDB's lock does not keep two machines "
            "from writing it at once, so the ledger could pay twice. Keep catalog.duckdb on a local disk, or set "
            "HAILUO_CATALOG_URL to a PostgreSQL database for runs on many machines (docs/deploy.md)"
        )


@dataclass
class _Held:
    conn: duckdb.DuckDBPyConnection
    opened_at: float
    last_used: float
    opened_ns: int  # wall clock, to compare with the waiting sidecar's mtime
    closer: threading.Timer | None = None


_locks: dict[str, threading.RLock] = {}
_held: dict[str, _Held] = {}
_guard = threading.Lock()
_local_checked: set[str] = set()  # catalog files found on a local filesystem


def _release(path: str) -> None:
    """Close the process's connection to `path`, if it holds one (call with the path's lock held)."""
    held = _held.pop(path, None)
    if held is not None:
        if held.closer is not None:
            held.closer.cancel()
        held.conn.close()


def _close_all_at_exit() -> None:
    """Close lingering connections before the interpreter tears down, and wait out any close a timer
    thread has begun: DuckDB still closing in a daemon thread when finalisation starts aborts the process
    ("terminate called ... FATAL: exception not rethrown"). Every close happens under its path's lock."""
    with _guard:
        locks = list(_locks.items())
    for path, lock in locks:
        with lock:
            _release(path)


atexit.register(_close_all_at_exit)


def _lock_for(path: str) -> threading.RLock:
    with _guard:
        return _locks.setdefault(path, threading.RLock())


def _is_lock_conflict(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflict" in text or "being used by another process" in text


class Catalog:
    def __init__(
        self,
        path: Path | str,
        patience_seconds: float = 120.0,
        linger_seconds: float = 0.05,
        max_hold_seconds: float = 0.25,
        max_hold_unasked_seconds: float = 5.0,
    ) -> None:
        self.path = str(Path(path).resolve())
        self.waiting_path = self.path + ".waiting"
        self.max_hold_unasked_seconds = max_hold_unasked_seconds  # in case a waiter cannot touch the sidecar
        self.patience_seconds = patience_seconds
        self.linger_seconds = linger_seconds
        self.max_hold_seconds = max_hold_seconds
        self._lock = _lock_for(self.path)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """One short transaction, committed (or rolled back when `read_only`) before it returns."""
        with self._lock:
            held = self._checkout()
            conn = held.conn
            conn.execute("BEGIN TRANSACTION")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("ROLLBACK" if read_only else "COMMIT")
            held.last_used = time.monotonic()
            if self._should_step_aside(held):
                _release(self.path)
                time.sleep(0.02)  # step aside: other processes are retrying for the lock
            elif held.closer is None:
                self._schedule_close(held, self.linger_seconds)

    def _should_step_aside(self, held: _Held) -> bool:
        holding = held.last_used - held.opened_at
        if holding <= self.max_hold_seconds:
            return False
        if holding > self.max_hold_unasked_seconds:
            return True
        try:
            return os.stat(self.waiting_path).st_mtime_ns >= held.opened_ns
        except OSError:
            return False

    def _say_waiting(self) -> None:
        with contextlib.suppress(OSError):  # the holder still steps aside after max_hold_unasked_seconds
            Path(self.waiting_path).touch(mode=0o600)

    def close(self) -> None:
        with self._lock:
            _release(self.path)

    def _checkout(self) -> _Held:
        held = _held.get(self.path)
        if held is not None:
            return held
        conn = self._open()
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        now = time.monotonic()
        held = _held[self.path] = _Held(conn, now, now, time.time_ns())
        return held

    def _schedule_close(self, held: _Held, delay: float) -> None:
        """One timer per held connection: it closes the connection once idle for `linger_seconds`,
        or re-arms itself for the rest of that time (cheaper than a new timer per transaction)."""

        def close_if_idle() -> None:
            with self._lock:
                if _held.get(self.path) is not held:
                    return
                idle = time.monotonic() - held.last_used
                if idle >= self.linger_seconds * 0.9:
                    _release(self.path)
                else:
                    self._schedule_close(held, self.linger_seconds - idle)

        held.closer = threading.Timer(delay, close_if_idle)
        held.closer.daemon = True
        held.closer.start()

    def _create_if_missing(self) -> None:
        """A new catalog file appears whole: made under a temporary name, then linked into place, which
        fails if another process got there first. Processes racing to create it with DuckDB itself could
        leave an empty file that every later open refuses as "not a valid DuckDB database"."""
        path = Path(self.path)
        if self.path not in _local_checked:  # once per file and process: reopening is frequent
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            refuse_network_filesystem(path)
            _local_checked.add(self.path)
        if path.exists():
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.new")
        duckdb.connect(str(fresh)).close()
        fresh.chmod(0o600)  # every dollar and prompt: the owner's only
        try:
            os.link(fresh, path)
        except FileExistsError:
            pass  # another process created it first; theirs is as good
        finally:
            fresh.unlink(missing_ok=True)

    def _open(self) -> duckdb.DuckDBPyConnection:
        self._create_if_missing()
        deadline = time.monotonic() + self.patience_seconds
        delay = 0.005
        while True:
            try:
                return duckdb.connect(self.path)
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                if not _is_lock_conflict(exc):
                    raise
                self._say_waiting()
                if time.monotonic() > deadline:
                    raise CatalogBusyError(
                        f"catalog {self.path} stayed locked for {self.patience_seconds:.0f} s: {exc}"
                    ) from exc
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 0.05)
