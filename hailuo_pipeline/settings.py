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
