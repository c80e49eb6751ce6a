"""Every setting the pipeline reads from the environment: read in one place, when asked (never at import),
each default written once, here."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from hailuo_pipeline.catalog.decisions import LEASE_SECONDS
from hailuo_pipeline.errors import HailuoError
from hailuo_pipeline.fal.platform import DEFAULT_PLATFORM_URL, PlatformClient
from hailuo_pipeline.fetch_policy import queue_host_entry

DEFAULT_CONCURRENCY = 16  # shots in flight at once in one step (HAILUO_CONCURRENCY; a run's config may say otherwise)
# Shots per run for `hailuo materialize`, the sensors and the sweep: None, one run per batch. A run boundary
# drains fal's queue of this batch's requests and pays Dagster's run start again; one step handles any
# number of shots (each its own partition materialization, logged as it is delivered).
SHOTS_PER_RUN: int | None = None

_ENVIRONMENT = {
    "data_dir": "HAILUO_DATA_DIR",
    "daily_budget_usd": "HAILUO_DAILY_BUDGET_USD",
    "total_budget_usd": "HAILUO_TOTAL_BUDGET_USD",
    "sweep_cron": "HAILUO_SWEEP_CRON",
    "submit_timeout_seconds": "HAILUO_FAL_SUBMIT_TIMEOUT_SECONDS",
    "poll_interval_seconds": "HAILUO_FAL_POLL_INTERVAL_SECONDS",
    "retry_delay_seconds": "HAILUO_RETRY_DELAY_SECONDS",
    "lease_seconds": "HAILUO_LEASE_SECONDS",
    "download_deadline_seconds": "HAILUO_DOWNLOAD_DEADLINE_SECONDS",
    "history_margin_seconds": "HAILUO_FAL_HISTORY_MARGIN_SECONDS",
    "fal_platform_url": "HAILUO_FAL_PLATFORM_URL",
    "fal_admin_key": "FAL_ADMIN_KEY",
    "fal_key": "FAL_KEY",
    "review_url": "HAILUO_REVIEW_URL",
    "dagster_url": "HAILUO_DAGSTER_URL",
    "allowed_private_hosts": "HAILUO_ALLOWED_PRIVATE_HOSTS",
    "fal_queue_host": "FAL_QUEUE_RUN_HOST",  # fal_client's own variable: the host the key is sent to
    "catalog_url": "HAILUO_CATALOG_URL",
    "video_store": "HAILUO_VIDEO_STORE",
    "catalog_snapshot": "HAILUO_CATALOG_SNAPSHOT",
    "max_in_flight": "HAILUO_MAX_IN_FLIGHT",
    "concurrency": "HAILUO_CONCURRENCY",
}
_TEXT = {
    "sweep_cron",
    "allowed_private_hosts",
    "fal_queue_host",
    "catalog_url",
    "video_store",
    "catalog_snapshot",
    "fal_platform_url",
    "fal_admin_key",
    "fal_key",
    "review_url",
    "dagster_url",
}
_MAY_BE_ZERO = {"daily_budget_usd", "total_budget_usd"}  # a budget of $0 spends nothing; a timeout of 0 is a mistake
_FORMER_NAMES = {"allowed_private_hosts": "HAILUO_ALLOWED_PRIVATE_IMAGE_HOSTS"}  # read when the new one is unset


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    daily_budget_usd: float | None = None  # no limit
    total_budget_usd: float | None = None
    sweep_cron: str = "0 3 * * *"
    submit_timeout_seconds: float = 30.0
    poll_interval_seconds: float = 1.0
    retry_delay_seconds: float = 10.0
    lease_seconds: float = LEASE_SECONDS
    download_deadline_seconds: float = 120.0  # every attempt at downloading one paid video, together
    # how long fal's request history may take to show a request: an ambiguous submit missing from it for this
    # long after it was sent never reached fal
    history_margin_seconds: float = 300.0
    fal_platform_url: str = DEFAULT_PLATFORM_URL  # fal's Platform APIs (configuration, trusted like the queue host)
    fal_admin_key: str = field(default="", repr=False)  # fal's usage API needs an admin key; never logged
    fal_key: str = field(default="", repr=False)  # for the Platform APIs; the queue's reaches Dagster as EnvVar
    review_url: str = "http://127.0.0.1:3001"  # where the review server listens and the `watch` links point
    dagster_url: str = "http://127.0.0.1:3000"  # where the review server links runs (hailuo ui sets it)
    # comma-separated hosts (or host:port) that fetched URLs, images and fal's videos alike, may use although
    # they are loopback or private ("*": any); the fal host below is allowed too
    allowed_private_hosts: str = ""
    fal_queue_host: str = ""  # FAL_QUEUE_RUN_HOST as fal_client reads it (empty: fal's own)
    catalog_url: str = ""  # postgresql://... for the shared catalog; empty: catalog.duckdb in the data directory
    video_store: str = ""  # s3://bucket/prefix (or another fsspec URL); empty: videos/ in the data directory
    catalog_snapshot: str = ""  # shared mode: where the DuckDB snapshot goes (path or URL); empty: catalog_path
    max_in_flight: int | None = None  # requests at fal at once over every run and process (your fal account's limit)
    concurrency: int = DEFAULT_CONCURRENCY

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Unset or empty variables keep the default; a value that does not parse names its variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for setting in fields(cls):
            raw = environ.get(_ENVIRONMENT[setting.name], "").strip()
            if not raw and setting.name in _FORMER_NAMES:
                raw = environ.get(_FORMER_NAMES[setting.name], "").strip()
            if not raw:
                continue
            if setting.name == "data_dir":
                values[setting.name] = Path(raw)
            elif setting.name in _TEXT:
                values[setting.name] = raw
            elif setting.name in ("max_in_flight", "concurrency"):
                if not raw.isdigit() or int(raw) < 1:
                    raise SettingError(f"{_ENVIRONMENT[setting.name]}={raw!r} is not a whole number of at least 1")
                values[setting.name] = int(raw)
            else:
                try:
                    number = float(raw)
                except ValueError:
                    raise SettingError(f"{_ENVIRONMENT[setting.name]}={raw!r} is not a number") from None
                positive = setting.name not in _MAY_BE_ZERO
                if not math.isfinite(number) or number < 0 or (positive and number == 0):
                    floor = "more than 0" if positive else "0 or more"
                    raise SettingError(f"{_ENVIRONMENT[setting.name]}={raw!r} must be a finite number, {floor}")
                values[setting.name] = number
        settings = cls(**values)  # type: ignore[arg-type]
        return replace(settings, data_dir=settings.data_dir.expanduser().resolve())

    def platform(self) -> PlatformClient | None:
        """fal's Platform APIs with FAL_KEY (and FAL_ADMIN_KEY for usage, when set); None without a key."""
        return PlatformClient(self.fal_platform_url, self.fal_key, self.fal_admin_key) if self.fal_key else None

    @property
    def fetch_hosts(self) -> str:
        """The fetch policy's allowed hosts: the setting's, and the fal host fal_client is pointed at."""
        return ",".join(filter(None, [self.allowed_private_hosts, queue_host_entry(self.fal_queue_host)]))

    @property
    def manifest_path(self) -> Path:
        return self.data_dir / "shots.csv"

    @property
    def videos_dir(self) -> Path:
        return self.data_dir / "videos"

    @property
    def catalog_path(self) -> Path:
        """The embedded catalog; in the shared mode, the DuckDB snapshot of the shared one."""
        return self.data_dir / "catalog.duckdb"

    @property
    def catalog_location(self) -> str:
        """Where the ledger lives: the PostgreSQL URL when shared, else the embedded file."""
        return self.catalog_url or str(self.catalog_path)

    @property
    def snapshot_location(self) -> str:
        return self.catalog_snapshot or str(self.catalog_path)

    @property
    def video_location(self) -> str:
        return self.video_store or str(self.videos_dir)

    @property
    def default_dagster_home(self) -> Path:
        return self.data_dir / "dagster_home"


class SettingError(HailuoError, ValueError):
    """An environment variable holds a value that cannot be used."""
