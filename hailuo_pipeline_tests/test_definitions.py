"""The code location loads the way `dagster dev` loads it, with the lineage and settings the UI shows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey

from hailuo_pipeline.defs.definitions import build_definitions
from hailuo_pipeline_tests.helpers import REPO_ROOT


@pytest.mark.slow
def test_workspace_yaml_loads_the_code_location():
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    result = subprocess.run(
        [dagster, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All code locations passed validation" in result.stderr + result.stdout


def test_lineage_kinds_pool_and_retry_policy():
    graph = build_definitions().resolve_asset_graph()
    video = graph.get(AssetKey("hailuo_video"))
    assert video.parent_keys == {AssetKey("source_image"), AssetKey("prompt")}
    assert graph.get(AssetKey("cost_report")).parent_keys == {AssetKey("hailuo_video")}
    assert {"fal", "video", "duckdb"} <= set(video.kinds)
    assets_def = graph.assets_def_for_key(AssetKey("hailuo_video"))
    assert assets_def.can_subset and assets_def.keys == {AssetKey("source_image"), AssetKey("prompt"), video.key}
    assert assets_def.op.pool == "fal"
    assert assets_def.op.retry_policy.max_retries == 3
    checks = {key.name for key in graph.asset_check_keys}
    assert checks == {
        "videos_match_requests",
        "costs_match_price_table",
        "no_paid_video_lost",
        "fal_usage_matches_ledger",
    }
