"""The catalog's shots table: the manifest's rows, upserted in one statement, with edits detected."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from hailuo_pipeline.catalog.rows import utcnow
from hailuo_pipeline.catalog.store import Catalog
from hailuo_pipeline.redact import redact
from hailuo_pipeline.shots.manifest import Manifest


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
                "image": redact(s.image),  # a URL's credentials are not kept
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
