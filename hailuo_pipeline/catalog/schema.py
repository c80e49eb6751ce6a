"""The catalog schema, versioned, for both backends. Opening a catalog applies any missing migration in place.

The migrations are written once, in SQL that DuckDB and PostgreSQL both speak; the few expressions that
differ are placeholders filled from a `Dialect`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from hailuo_pipeline.catalog.migrations import LATER_MIGRATIONS

Run = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]  # execute one statement (? marks), rows back


@dataclass(frozen=True)
class Dialect:
    name: str
    month: str  # created_at's month as 'YYYY-MM'
    shared_indexes: str  # migration 4: what a database shared by many writers needs
    present_request_ids: str  # migration 5: the rows an index on request_id covers


DUCKDB = Dialect(
    name="duckdb",
    month="strftime(created_at, '%Y-%m')",
    # one writer at a time per file already keeps claims apart; DuckDB has no partial indexes
    shared_indexes="SELECT 1;",
    present_request_ids="",  # no partial indexes; a unique index lets NULLs repeat
)
POSTGRESQL = Dialect(
    name="postgresql",
    month="to_char(created_at, 'YYYY-MM')",
    shared_indexes="""
        CREATE UNIQUE INDEX requests_one_live_claim ON requests (fingerprint)
            WHERE status IN ('reserved', 'submitted', 'in_queue', 'in_progress', 'completed');
        CREATE INDEX requests_shot ON requests (shot_id);
        CREATE INDEX requests_live ON requests (status)
            WHERE status IN ('reserved', 'submitted', 'in_queue', 'in_progress', 'completed');
        CREATE INDEX request_events_occurred ON request_events (occurred_at);
        CREATE INDEX videos_request_key ON videos (request_key);
    """,
    present_request_ids="WHERE request_id IS NOT NULL",
)

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "tables: prices, shots, requests, request_events, videos",
        """
        CREATE TABLE prices (
            price_id VARCHAR PRIMARY KEY,
            endpoint VARCHAR NOT NULL,
            duration_seconds INTEGER NOT NULL,
            usd DECIMAL(12, 4) NOT NULL,
            effective_from DATE NOT NULL,
            source VARCHAR
        );
        CREATE TABLE shots (
            shot_id VARCHAR PRIMARY KEY,
            image VARCHAR,
            prompt VARCHAR,
            duration_seconds VARCHAR,
            prompt_optimizer VARCHAR,
            manifest_row INTEGER,
            content_sha256 VARCHAR,
            registered_at TIMESTAMP,
            updated_at TIMESTAMP
        );
        CREATE TABLE requests (
            request_key VARCHAR PRIMARY KEY,
            request_id VARCHAR,
            shot_id VARCHAR NOT NULL,
            take INTEGER NOT NULL,
            fingerprint VARCHAR NOT NULL,
            endpoint VARCHAR NOT NULL,
            arguments_json VARCHAR,
            duration_seconds INTEGER NOT NULL,
            status VARCHAR NOT NULL,
            run_id VARCHAR,
            partition_key VARCHAR,
            owner VARCHAR,
            heartbeat_at TIMESTAMP,
            created_at TIMESTAMP NOT NULL,
            submitted_at TIMESTAMP,
            started_at TIMESTAMP,
            completed_at TIMESTAMP,
            queue_seconds FLOAT8,
            inference_seconds FLOAT8,
            wall_seconds FLOAT8,
            price_id VARCHAR,
            price_usd DECIMAL(12, 4),
            reserved_usd DECIMAL(12, 4) NOT NULL DEFAULT 0,
            cost_usd DECIMAL(12, 4) NOT NULL DEFAULT 0,
            video_url VARCHAR,
            result_json VARCHAR,
            error_type VARCHAR,
            error_message VARCHAR,
            possible_double_charge BOOLEAN NOT NULL DEFAULT false,
            possibly_charged BOOLEAN NOT NULL DEFAULT false,
            polls INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 1
        );
        CREATE INDEX requests_fingerprint ON requests (fingerprint);
        CREATE TABLE request_events (
            request_key VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            occurred_at TIMESTAMP NOT NULL,
            detail VARCHAR
        );
        CREATE TABLE videos (
            request_id VARCHAR PRIMARY KEY,
            request_key VARCHAR NOT NULL,
            shot_id VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            sha256 VARCHAR NOT NULL,
            bytes BIGINT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            fps FLOAT8 NOT NULL,
            frames INTEGER NOT NULL,
            duration_seconds FLOAT8 NOT NULL,
            source_url VARCHAR,
            recorded_at TIMESTAMP NOT NULL
        );
        """,
    ),
    (
        2,
        "views: spend by day, month, shot and run; failed and cancelled requests; latency percentiles",
        """
        CREATE VIEW spend_by_day AS
            SELECT CAST(created_at AS DATE) AS day,
                   count(*) AS requests,
                   count(*) FILTER (WHERE status = 'succeeded' OR status = 'completed') AS succeeded,
                   count(*) FILTER (WHERE status = 'failed') AS failed,
                   count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
                   sum(cost_usd) AS spend_usd,
                   sum(reserved_usd) AS reserved_usd
            FROM requests GROUP BY 1 ORDER BY 1;
        CREATE VIEW spend_by_month AS
            SELECT {month} AS month, count(*) AS requests,
                   sum(cost_usd) AS spend_usd, sum(reserved_usd) AS reserved_usd
            FROM requests GROUP BY 1 ORDER BY 1;
        CREATE VIEW spend_by_shot AS
            SELECT shot_id, count(*) AS requests, max(take) AS takes,
                   count(*) FILTER (WHERE status = 'succeeded') AS videos, sum(cost_usd) AS spend_usd
            FROM requests GROUP BY 1 ORDER BY 1;
        CREATE VIEW spend_by_run AS
            SELECT run_id, min(created_at) AS first_request_at, count(*) AS requests,
                   sum(cost_usd) AS spend_usd
            FROM requests GROUP BY 1 ORDER BY 2;
        CREATE VIEW failed_requests AS
            SELECT request_key, request_id, shot_id, status, error_type, error_message,
                   possible_double_charge, possibly_charged, created_at, completed_at
            FROM requests WHERE status IN ('failed', 'ambiguous') ORDER BY created_at;
        CREATE VIEW cancelled_requests AS
            SELECT request_key, request_id, shot_id, created_at, completed_at, cost_usd
            FROM requests WHERE status = 'cancelled' ORDER BY created_at;
        CREATE VIEW latency_percentiles AS
            SELECT count(*) AS requests,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY queue_seconds) AS queue_p50,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY queue_seconds) AS queue_p95,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY inference_seconds) AS inference_p50,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY inference_seconds) AS inference_p95,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY wall_seconds) AS wall_p50,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY wall_seconds) AS wall_p95
            FROM requests WHERE status IN ('succeeded', 'completed');
        """,
    ),
    (
        3,
        "requests.permanent_failure (fal refused these inputs for good); lost requests (paid, result gone)",
        """
        ALTER TABLE requests ADD COLUMN permanent_failure BOOLEAN DEFAULT false;
        DROP VIEW spend_by_day;
        CREATE VIEW spend_by_day AS
            SELECT CAST(created_at AS DATE) AS day,
                   count(*) AS requests,
                   count(*) FILTER (WHERE status = 'succeeded' OR status = 'completed') AS succeeded,
                   count(*) FILTER (WHERE status = 'failed') AS failed,
                   count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
                   count(*) FILTER (WHERE status = 'lost') AS lost,
                   sum(cost_usd) AS spend_usd,
                   coalesce(sum(cost_usd) FILTER (WHERE status = 'lost'), 0) AS lost_usd,
                   sum(reserved_usd) AS reserved_usd
            FROM requests GROUP BY 1 ORDER BY 1;
        CREATE VIEW lost_requests AS
            SELECT request_key, request_id, shot_id, take, cost_usd, error_type, error_message,
                   created_at, completed_at
            FROM requests WHERE status = 'lost' ORDER BY completed_at;
        """,
    ),
    (
        4,
        "indexes for a catalog shared by many writers (PostgreSQL): one live claim per fingerprint",
        "{shared_indexes}",
    ),
    *LATER_MIGRATIONS,
]

LATEST_VERSION = MIGRATIONS[-1][0]


def rendered(dialect: Dialect) -> list[tuple[int, str, str]]:
    """The migrations in `dialect`'s words."""
    return [
        (
            number,
            description,
            sql.replace("{month}", dialect.month)
            .replace("{shared_indexes}", dialect.shared_indexes)
            .replace("{present_request_ids}", dialect.present_request_ids),
        )
        for number, description, sql in MIGRATIONS
    ]


def current_version(run: Run) -> int:
    exists = run(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = 'schema_version' AND table_schema = current_schema()",
        [],
    )
    if not exists or not exists[0][0]:
        return 0
    row = run("SELECT coalesce(max(version), 0) FROM schema_version", [])
    return int(row[0][0]) if row else 0


def apply_migrations(run: Run, dialect: Dialect, target: int = LATEST_VERSION) -> int:
    """Apply the missing migrations up to `target` and seed the price table, inside the caller's transaction
    (which keeps concurrent migrators apart); returns the version."""
    version = current_version(run)
    if version < target:
        run(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMP)",
            [],
        )
        for number, description, sql in rendered(dialect):
            if version < number <= target:
                for statement in filter(str.strip, sql.split(";")):
                    run(statement, [])
                run(
                    "INSERT INTO schema_version VALUES (?, ?, ?)",
                    [number, description, datetime.now(UTC).replace(tzinfo=None)],
                )
        version = target
    if version >= 1 and _price_rows_missing(run):
        seed_prices(run)
    return version


@cache
def published_prices() -> tuple[dict[str, str], ...]:
    text = resources.files("hailuo_pipeline.catalog").joinpath("prices.csv").read_text()
    return tuple(csv.DictReader(text.splitlines()))


def _price_rows_missing(run: Run) -> bool:
    row = run("SELECT count(*) FROM prices", [])
    return (row[0][0] if row else 0) < len(published_prices())


def seed_prices(run: Run) -> None:
    """Insert the published prices that the catalog does not have yet; never rewrite a price."""
    for row in published_prices():
        run(
            "INSERT INTO prices SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM prices WHERE price_id = ?)",
            [
                row["price_id"],
                row["endpoint"],
                int(row["duration_seconds"]),
                Decimal(row["usd"]),
                date.fromisoformat(row["effective_from"]),
                row["source"],
                row["price_id"],
            ],
        )
