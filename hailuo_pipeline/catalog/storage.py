"""What the pipeline needs from a database: one interface, one implementation per backend
(`duckdb_ledger.DuckDBCatalog`, embedded, the default; `postgres_ledger.PostgresCatalog`, shared).

Everything the ledger decides is computed in Python from rows read in the same transaction (see
`ledger.py` and `decisions.py`); a backend only reads and writes rows. `transaction(decides=True)` marks a
transaction that makes a money decision (a claim, a reservation against a budget): a backend whose
transactions do not already serialise must serialise those (DuckDB's single writer does by itself;
PostgreSQL takes an advisory lock that every other writing transaction shares).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from hailuo_pipeline.catalog.rows import RequestRow, Status, VideoRow
from hailuo_pipeline.catalog.schema import Dialect
from hailuo_pipeline.errors import HailuoError

if TYPE_CHECKING:
    import pandas as pd


class LedgerTransaction(Protocol):
    def now(self) -> datetime:
        """The database's clock (UTC, no zone): leases, heartbeats and "today" are read from it."""
        ...

    def requests(
        self,
        *,
        request_key: str | None = None,
        fingerprint: str | None = None,
        shot_id: str | None = None,
        statuses: Sequence[Status] | None = None,
        completed_since: datetime | None = None,
        request_ids: Sequence[str] | None = None,
    ) -> list[RequestRow]:
        """Matching rows, newest first (all of them when no filter is given)."""
        ...

    def standing_rows(self) -> list[RequestRow]:
        """For planning at scale: the rows the judge depends on, newest first: every row in flight, and per
        shot and set of inputs (fingerprint) its latest row and its latest delivered one."""
        ...

    def requested_shots(self) -> set[str]:
        """The shots with any request."""
        ...

    def verdicts_since(self, after: datetime | None) -> list[tuple[str, int, str, str | None, datetime]]:
        """Verdicts given after `after` (all: None), oldest first: (shot, take, verdict, note, when)."""
        ...

    def add_verdict(self, row: RequestRow, verdict: str, note: str | None, at: datetime) -> None:
        """A verdict on a delivered take, kept as history; the take's latest verdict set on its row."""
        ...

    def store_usage(self, day: date, endpoint: str, line: Mapping[str, Any] | None, fetched_at: datetime) -> None:
        """fal's billed usage of `endpoint` on `day` (None: fal billed nothing), replacing what was stored."""
        ...

    def usage_cost(self, day: date, endpoint: str) -> Decimal | None:
        """fal's billed cost stored for the day, or None when it was never fetched."""
        ...

    def booked_on(self, day: date) -> dict[str, tuple[str, Decimal]]:
        """The requests booked as paid on `day`, by when fal finished them: fal id -> (shot, cost)."""
        ...

    def set_billed_at(self, ended: Mapping[str, datetime]) -> None:
        """When fal finished each of these requests (by fal id), from its request history."""
        ...

    def insert_request(self, values: dict[str, Any]) -> None: ...

    def update_request(self, request_key: str, values: dict[str, Any]) -> None: ...

    def record_submits(self, request_ids: Mapping[str, str], at: datetime, details: Sequence[str]) -> set[str]:
        """Many rows submitted at `at` (key -> fal's id), each with its event (`details`, in the same order), in
        a fixed number of statements; the keys that had a row."""
        ...

    def add_polls(self, request_key: str, polls: int) -> None: ...

    def renew_leases(self, request_keys: Sequence[str], owner: str, now: datetime) -> None: ...

    def release_leases(self, owner: str, statuses: Sequence[Status]) -> None: ...

    def add_event(self, request_key: str, status: Status, at: datetime, detail: str | None) -> None: ...

    def committed_usd(self, day: date) -> tuple[Decimal, Decimal]:
        """Spent plus reserved: in all, and on one UTC day."""
        ...

    def insert_price(
        self, price_id: str, endpoint: str, duration: int, usd: Decimal, at: datetime, source: str
    ) -> None:
        """A price taking effect at `at`, with where it came from."""
        ...

    def price(self, endpoint: str, duration_seconds: int, at: datetime) -> tuple[str, Decimal] | None:
        """The price in effect on `day`: its id and amount."""
        ...

    def video(self, *, request_key: str | None = None, request_id: str | None = None) -> VideoRow | None: ...

    def insert_video(self, video: VideoRow, recorded_at: datetime) -> None: ...

    def result(self, request_key: str) -> dict[str, Any] | None: ...


class LedgerStore(Protocol):
    def transaction(
        self, *, read_only: bool = False, decides: bool = False
    ) -> AbstractContextManager[LedgerTransaction]:
        """One short transaction, committed when the block ends (rolled back on an error, or when
        `read_only`)."""
        ...


class CatalogDatabase(LedgerStore, Protocol):
    """The ledger's store plus what the reports, audits and the shots table read and write."""

    dialect: Dialect
    location: str  # where it is, for messages: a path, or a URL without its password

    def read(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """One read-only query in SQL both backends speak (`?` marks), as a frame: for reports."""
        ...

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The same, as plain rows: for what runs in the code server and in runs that make videos, which do
        without pandas."""
        ...

    def upsert_shots(self, incoming: Sequence[tuple[Any, ...]], now: datetime) -> list[str]:
        """Insert or update the manifest's rows (plain values in the order of `registry.SHOT_COLUMNS`) in one
        transaction; the ids of registered shots whose content hash changed."""
        ...


class CatalogUnavailableError(HailuoError, RuntimeError):
    """The catalog's database cannot be reached or opened; the message says which one (redacted) and why."""
