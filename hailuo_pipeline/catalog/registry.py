"""The catalog's shots table: the manifest's rows, upserted in one statement, with edits detected."""

from __future__ import annotations

from dataclasses import dataclass, field

from hailuo_pipeline.catalog.rows import utcnow
from hailuo_pipeline.catalog.storage import CatalogDatabase
from hailuo_pipeline.redact import redact
from hailuo_pipeline.shots.manifest import Manifest

SHOT_COLUMNS = ["shot_id", "image", "prompt", "duration_seconds", "prompt_optimizer", "manifest_row", "content_sha256"]
# Both read a table `incoming` with SHOT_COLUMNS, which each backend fills its own fast way.
CHANGED_SHOTS = (
    "SELECT i.shot_id FROM incoming i JOIN shots s ON s.shot_id = i.shot_id WHERE s.content_sha256 <> i.content_sha256"
)
UPSERT_SHOTS = (
    "INSERT INTO shots SELECT i.shot_id, i.image, i.prompt, i.duration_seconds, i.prompt_optimizer, "
    "i.manifest_row, i.content_sha256, ?, ? FROM incoming i "
    "ON CONFLICT (shot_id) DO UPDATE SET image = excluded.image, prompt = excluded.prompt, "
    "duration_seconds = excluded.duration_seconds, prompt_optimizer = excluded.prompt_optimizer, "
    "manifest_row = excluded.manifest_row, updated_at = CASE WHEN shots.content_sha256 = "
    "excluded.content_sha256 THEN shots.updated_at ELSE excluded.updated_at END, "
    "content_sha256 = excluded.content_sha256"
)


@dataclass
class SyncPlan:
    new: list[str] = field(default_factory=list)  # shot ids that are not partitions yet
    changed: list[str] = field(default_factory=list)  # registered shots whose image path or prompt changed


def record_shots(catalog: CatalogDatabase, manifest: Manifest, existing_partitions: set[str]) -> SyncPlan:
    """Upsert the manifest into the catalog's shots table in one statement; report what is new or edited."""
    plan = SyncPlan(new=[s for s in manifest.shots if s not in existing_partitions])
    if not manifest.shots:
        return plan
    incoming = [
        (
            s.shot_id,
            redact(s.image),  # a URL's credentials are not kept
            s.prompt,
            s.duration,
            s.prompt_optimizer,
            s.row,
            s.content_hash(),
        )
        for s in manifest.shots.values()
    ]
    changed = catalog.upsert_shots(incoming, utcnow())
    plan.changed = [c for c in changed if c in existing_partitions]
    return plan
