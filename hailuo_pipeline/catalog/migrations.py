"""The catalog's migrations from version 5 on, in SQL both backends speak (placeholders filled by `schema.Dialect`):
what auditing against fal's records and reviewing takes added to the ledger."""

from __future__ import annotations

LATER_MIGRATIONS: list[tuple[int, str, str]] = [
    (
        5,
        "one fal job, one row: rows of earlier versions repeating another row's request id become ambiguous",
        """
        UPDATE requests SET
            status = 'ambiguous',
            error_type = 'ambiguous',
            error_message = 'fal answered with request id ' || request_id || ', which an earlier row already '
                || 'holds: a replayed or false answer, so the job this submit created cannot be seen',
            possible_double_charge = true,
            reserved_usd = coalesce(price_usd, 0),
            cost_usd = 0,
            owner = NULL,
            request_id = NULL
        WHERE request_key IN (
            SELECT later.request_key FROM requests later JOIN requests earlier
                ON earlier.request_id = later.request_id
                AND (earlier.created_at < later.created_at
                     OR (earlier.created_at = later.created_at AND earlier.request_key < later.request_key))
        );
        """,
    ),
    (
        6,
        "request ids unique: a unique index (a migration of its own: DuckDB indexes no rows updated in the same "
        "transaction)",
        "CREATE UNIQUE INDEX requests_request_id ON requests (request_id) {present_request_ids};",
    ),
    (
        7,
        "auditing against fal: the digest of the arguments each submit sent (matched with fal's request history), "
        "and whether fal's history was asked for a lost result",
        """
        ALTER TABLE requests ADD COLUMN arguments_sha256 VARCHAR;
        ALTER TABLE requests ADD COLUMN history_checked BOOLEAN DEFAULT false;
        """,
    ),
    (
        8,
        "fal's billed usage per UTC day (fal_usage), and when fal finished each request it billed (billed_at)",
        """
        CREATE TABLE fal_usage (
            day DATE NOT NULL,
            endpoint VARCHAR NOT NULL,
            unit VARCHAR NOT NULL,
            quantity DECIMAL(18, 4) NOT NULL,
            unit_price DECIMAL(12, 4) NOT NULL,
            cost_usd DECIMAL(12, 4) NOT NULL,
            currency VARCHAR NOT NULL,
            fetched_at TIMESTAMP NOT NULL,
            PRIMARY KEY (day, endpoint)
        );
        ALTER TABLE requests ADD COLUMN billed_at TIMESTAMP;
        """,
    ),
    (
        9,
        "prices.effective_at: the moment a price took effect (fal's pricing may change one during a day)",
        "ALTER TABLE prices ADD COLUMN effective_at TIMESTAMP;",
    ),
    (
        10,
        "verdicts on delivered takes (approve, reject, withdraw), kept as history; requests.verdict: a take's latest",
        """
        CREATE TABLE verdicts (
            request_key VARCHAR NOT NULL,
            shot_id VARCHAR NOT NULL,
            take INTEGER NOT NULL,
            verdict VARCHAR NOT NULL,
            note VARCHAR,
            decided_at TIMESTAMP NOT NULL
        );
        ALTER TABLE requests ADD COLUMN verdict VARCHAR;
        """,
    ),
]
