"""Dagster resources: fal, the shots' data directory, the catalog and the budget. Each hands the core
plain objects (FalSettings, a RequestLedger, a Budget), so the core never sees Dagster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from dagster import ConfigurableResource, Failure
from dagster_duckdb import DuckDBResource
from pydantic import Field

from hailuo_pipeline.catalog.backends import is_shared, open_catalog
from hailuo_pipeline.catalog.decisions import LEASE_SECONDS
from hailuo_pipeline.catalog.ledger import RequestLedger
from hailuo_pipeline.catalog.rows import Budget
from hailuo_pipeline.catalog.storage import CatalogDatabase
from hailuo_pipeline.catalog.store import Catalog
from hailuo_pipeline.fal.config import FalSettings
from hailuo_pipeline.fetch_policy import FetchPolicy
from hailuo_pipeline.settings import DEFAULT_CONCURRENCY
from hailuo_pipeline.shots.manifest import Manifest, ManifestError, Shot, read_manifest
from hailuo_pipeline.shots.remote import RemotePolicy
from hailuo_pipeline.video.store import VideoStore, open_video_store

_FAL_DEFAULTS = FalSettings(key="")


class FalResource(ConfigurableResource):
    """fal's queue API through fal_client; see `fal/config.py` for what the pipeline does with it."""

    key: str = Field(description="fal API key; set from EnvVar('FAL_KEY'). Never logged or stored.")
    endpoint_id: str = Field(default=_FAL_DEFAULTS.endpoint_id, description="fal endpoint id of the model")
    submit_timeout_seconds: float = Field(
        default=_FAL_DEFAULTS.submit_timeout_seconds,
        description="How long to wait for fal to answer a submit (longer: ambiguous, never replayed)",
    )
    poll_interval_seconds: float = Field(
        default=_FAL_DEFAULTS.poll_interval_seconds, description="First wait between status polls"
    )
    concurrency: int = Field(
        default=DEFAULT_CONCURRENCY,
        description="Shots in flight at once in one step, unless its run's config says otherwise. HAILUO_CONCURRENCY",
    )
    max_in_flight: int | None = Field(
        default=None,
        description="Requests queued or running at fal at once over every run and process (your fal account's "
        "concurrency limit), enforced by the ledger; none: each run's `concurrency` only. HAILUO_MAX_IN_FLIGHT",
    )

    allowed_private_hosts: str = Field(
        default="",
        description="Comma-separated hosts (or host:port) that fal's video URLs may use although they are loopback "
        "or private ('*': any). HAILUO_ALLOWED_PRIVATE_HOSTS, plus FAL_QUEUE_RUN_HOST's host",
    )

    download_deadline_seconds: float = Field(
        default=_FAL_DEFAULTS.download_deadline_seconds,
        description="Every attempt at downloading one paid video, together (HAILUO_DOWNLOAD_DEADLINE_SECONDS)",
    )

    def settings(self) -> FalSettings:
        return FalSettings(
            key=self.key,
            endpoint_id=self.endpoint_id,
            submit_timeout_seconds=self.submit_timeout_seconds,
            poll_interval_seconds=self.poll_interval_seconds,
            fetch=FetchPolicy.allowing(self.allowed_private_hosts),
            download_deadline_seconds=self.download_deadline_seconds,
        )


class ShotsResource(ConfigurableResource):
    """The data directory: `shots.csv`, the images it names, and `videos/`."""

    data_dir: str = Field(description="Directory holding shots.csv; videos land in its videos/ folder by default")
    video_store: str = Field(
        default="",
        description="Where videos are kept when not in data_dir/videos: an object-store URL such as "
        "s3://bucket/prefix (credentials from the standard AWS environment or profile); set from "
        "EnvVar('HAILUO_VIDEO_STORE')",
    )
    allowed_private_hosts: str = Field(
        default="",
        description="Comma-separated hosts (or host:port) that image URLs may use although they are loopback or "
        "private ('*': any). HAILUO_ALLOWED_PRIVATE_HOSTS, plus FAL_QUEUE_RUN_HOST's host",
    )

    def remote_images(self) -> RemotePolicy:
        return RemotePolicy.allowing(self.allowed_private_hosts)

    @property
    def manifest_path(self) -> Path:
        return Path(self.data_dir) / "shots.csv"

    def videos(self) -> VideoStore:
        return open_video_store(self.video_store or Path(self.data_dir) / "videos")

    def manifest(self) -> Manifest:
        try:
            return read_manifest(self.manifest_path)
        except ManifestError as exc:
            raise Failure(description=str(exc), allow_retries=False) from exc

    def select(self, shot_ids: list[str]) -> tuple[dict[str, Shot], dict[str, str]]:
        """The named shots from the manifest, and why any of them cannot be found there."""
        manifest = self.manifest()
        row_errors = {e.shot_id: str(e) for e in manifest.errors}
        missing = {
            s: row_errors.get(
                s,
                f"shot {s!r} has no row in {self.manifest_path} (a partition added in the UI, or a row since "
                "deleted); the manifest decides which shots exist",
            )
            for s in shot_ids
            if s not in manifest.shots
        }
        return {s: manifest.shots[s] for s in shot_ids if s in manifest.shots}, missing


class CatalogResource(DuckDBResource):
    """The catalog: the embedded DuckDB file at `database`, or, when `url` names a PostgreSQL database, the
    shared ledger there (and `database` is its DuckDB snapshot). `get_connection()` gives short, migrated,
    lock-tolerant transactions on the DuckDB file."""

    url: str = Field(
        default="",
        description="postgresql://user@host/db?schema=hailuo for a ledger shared by runs on many machines; "
        "set from EnvVar('HAILUO_CATALOG_URL'). Empty: the embedded DuckDB file",
    )
    lease_seconds: float = Field(
        default=LEASE_SECONDS,
        description="A request whose process stopped heart-beating this long ago is an orphan (resumed by id), "
        "or, before fal answered its submit, ambiguous",
    )

    @property
    def shared(self) -> bool:
        return is_shared(self.url)

    def catalog(self) -> CatalogDatabase:
        return open_catalog(self.url or self.database)

    def ledger(self) -> RequestLedger:
        return RequestLedger(self.catalog(), lease_seconds=self.lease_seconds)

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with Catalog(self.database).connect() as conn:
            yield conn


class BudgetResource(ConfigurableResource):
    """Spending limits in USD, enforced by reserving each video's price before it is submitted."""

    daily_usd: float | None = Field(default=None, description="Limit per UTC day; None for no limit")
    total_usd: float | None = Field(default=None, description="Limit over the catalog's lifetime; None for none")

    def budget(self) -> Budget:
        return Budget.from_usd(self.daily_usd, self.total_usd)
