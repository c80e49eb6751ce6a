"""Where the pipeline keeps its files, read from the environment when asked (never at import)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "HAILUO_DATA_DIR"


def data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, "data")).expanduser().resolve()


def manifest_path() -> Path:
    return data_dir() / "shots.csv"


def videos_dir() -> Path:
    return data_dir() / "videos"


def catalog_path() -> Path:
    return data_dir() / "catalog.duckdb"


def budget_usd_from_env(name: str) -> float | None:
    """HAILUO_DAILY_BUDGET_USD / HAILUO_TOTAL_BUDGET_USD; unset or empty means no limit."""
    value = os.environ.get(name, "").strip()
    return float(value) if value else None


DAILY_BUDGET_ENV = "HAILUO_DAILY_BUDGET_USD"
TOTAL_BUDGET_ENV = "HAILUO_TOTAL_BUDGET_USD"
