"""Registering shots: the manifest's rows become partitions and catalog rows; edits are detected."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from dagster import AssetKey, RunRequest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from hailuo_pipeline.catalog.rows import utcnow
from hailuo_pipeline.catalog.store import Catalog
from hailuo_pipeline.shots.manifest import Manifest
from hailuo_pipeline.shots.validation import quick_problem


@dataclass
class SyncPlan:
    new: list[str] = field(default_factory=list)  # shot ids that are not partitions yet
    changed: list[str] = field(default_factory=list)  # registered shots whose image path or prompt changed


def record_shots(catalog: Catalog, manifest: Manifest, existing_partitions: set[str]) -> SyncPlan:
    """Upsert the manifest into the catalog's shots table in one statement; report what is new or edited."""
    plan = SyncPlan(new=[s for s in manifest.shots if s not in existing_partitions])
    if not manifest.shots:
        return plan
    now = utcnow()
    incoming = pd.DataFrame(
        [
            {
                "shot_id": s.shot_id,
                "image": s.image,
                "prompt": s.prompt,
                "duration_seconds": s.duration,
                "prompt_optimizer": s.prompt_optimizer,
                "manifest_row": s.row,
                "content_sha256": s.content_hash(),
            }
            for s in manifest.shots.values()
        ]
    )
    with catalog.connect() as conn:
        conn.register("incoming", incoming)
        changed = conn.execute(
            "SELECT i.shot_id FROM incoming i JOIN shots s USING (shot_id) WHERE s.content_sha256 <> i.content_sha256"
        ).fetchall()
        conn.execute(
            "INSERT INTO shots SELECT i.shot_id, i.image, i.prompt, i.duration_seconds, i.prompt_optimizer, "
            "i.manifest_row, i.content_sha256, $now, $now FROM incoming i "
            "ON CONFLICT (shot_id) DO UPDATE SET image = excluded.image, prompt = excluded.prompt, "
            "duration_seconds = excluded.duration_seconds, prompt_optimizer = excluded.prompt_optimizer, "
            "manifest_row = excluded.manifest_row, updated_at = CASE WHEN shots.content_sha256 = "
            "excluded.content_sha256 THEN shots.updated_at ELSE excluded.updated_at END, "
            "content_sha256 = excluded.content_sha256",
            {"now": now},
        )
        conn.unregister("incoming")
    plan.changed = [c[0] for c in changed if c[0] in existing_partitions]
    return plan


def partition_ranges(ordered: list[str], selected: list[str], max_size: int) -> list[tuple[str, str]]:
    """Split `selected` into contiguous ranges of the partition order, at most `max_size` long."""
    wanted = set(selected)
    ranges: list[tuple[str, str]] = []
    start = end = None
    size = 0
    for key in ordered:
        if key in wanted and start is not None and size < max_size:
            end, size = key, size + 1
            continue
        if start is not None:
            ranges.append((start, end))
            start = end = None
        if key in wanted:
            start = end = key
            size = 1
    if start is not None:
        ranges.append((start, end))
    return ranges


def range_run_requests(
    ranges: list[tuple[str, str]], assets: list[AssetKey], key_prefix: str, run_config: dict | None = None
) -> list[RunRequest]:
    requests = []
    for start, end in ranges:
        if start == end:
            requests.append(
                RunRequest(
                    run_key=f"{key_prefix}:{start}", asset_selection=assets, partition_key=start, run_config=run_config
                )
            )
        else:
            requests.append(
                RunRequest(
                    run_key=f"{key_prefix}:{start}..{end}",
                    asset_selection=assets,
                    tags=range_tags(start, end),
                    run_config=run_config,
                )
            )
    return requests


def plan_shot_runs(ordered: list[str], shot_ids: list[str], manifest: Manifest, max_size: int) -> list[tuple[str, str]]:
    """Partition ranges for runs of inputs + video. A shot failing the cheap checks gets a run of its
    own: it will be refused, and a batch's run then stays green for the good shots."""
    doubtful = [s for s in shot_ids if s in manifest.shots and quick_problem(manifest.shots[s])]
    good = [s for s in shot_ids if s not in doubtful]
    return partition_ranges(ordered, good, max_size) + partition_ranges(ordered, doubtful, 1)


def range_tags(start: str, end: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}
