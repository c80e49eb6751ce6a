"""Small helpers shared by tests: waiting on a condition, reading the catalog, running `hailuo`."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def wait_for(
    condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition", interval: float = 0.05
) -> Any:
    """Poll `condition` every `interval` seconds until it returns something truthy; fail the test after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def new_dagster_home(home: Path) -> Path:
    """An empty Dagster instance directory whose `dagster.yaml` opts out of usage statistics."""
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


def query(data_dir: Path, sql: str, params: list | None = None) -> list[tuple]:
    from hailuo_pipeline.catalog.store import Catalog

    with Catalog(data_dir / "catalog.duckdb").connect(read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()


def hailuo(args: list[str], env: dict[str, str], cwd: Path, *, stderr: int = subprocess.STDOUT) -> subprocess.Popen:
    """`hailuo ARGS` in a child process, from this checkout; stderr joins stdout unless told otherwise."""
    return subprocess.Popen(
        [sys.executable, "-m", "hailuo_pipeline.cli", *args],
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def reason(summary: Any, shot_id: str) -> str:
    """A failed shot's cause and fix as the command prints them; every failure must have both."""
    failure = summary.failed[shot_id]
    assert failure.cause and failure.fix, failure
    return f"{failure.cause}. Fix: {failure.fix}"


def tick_sensor(sensor: Any, instance: Any, cursor: str | None = None) -> Any:
    """One evaluation of `sensor`, its context entered and left as Dagster documents (a context left open
    leaves the instance set for later definition loads, which then fail once it is collected)."""
    from dagster import build_sensor_context

    from hailuo_pipeline.defs.definitions import build_definitions

    with build_sensor_context(instance=instance, cursor=cursor, resources=build_definitions().resources) as context:
        return sensor(context)


def tick_schedule(name: str, instance: Any, when: Any) -> Any:
    """One evaluation of the schedule `name` at `when` (a list of run requests, or a SkipReason)."""
    from dagster import SkipReason, build_schedule_context

    from hailuo_pipeline.defs.definitions import build_definitions

    defs = build_definitions()
    with build_schedule_context(instance=instance, scheduled_execution_time=when, resources=defs.resources) as context:
        result = defs.get_schedule_def(name)(context)
        return result if isinstance(result, SkipReason) else list(result)
