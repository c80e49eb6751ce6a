"""The README's main command: `hailuo demo`, offline on its own emulator, and its refusal to spend."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from hailuo_pipeline_tests.helpers import hailuo, query
from hailuo_pipeline_tests.shots import make_image


def clean_env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FAL_KEY", "FAL_QUEUE_RUN_HOST", "SSL_CERT_FILE")}
    env["HAILUO_DATA_DIR"] = str(data)
    env.pop("DAGSTER_HOME", None)
    return env


def run_hailuo(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    child = hailuo(args, env, cwd, stderr=subprocess.PIPE)
    stdout, stderr = child.communicate(timeout=300)
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


@pytest.mark.slow
def test_demo_runs_offline_and_leaves_playable_videos(tmp_path):
    data = tmp_path / "data"
    result = run_hailuo(["demo"], clean_env(data), tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "3 of 3 shot(s) delivered" in result.stdout
    assert "all time $0.70" in result.stdout
    videos = query(data, "SELECT shot_id, duration_seconds FROM videos ORDER BY shot_id")
    assert [(s, round(d)) for s, d in videos] == [("city-night", 6), ("forest-path", 10), ("harbour-dawn", 6)]
    assert (data / "dagster_home" / "dagster.yaml").read_text().count("default_limit") == 1
    with DagsterInstance.from_config(str(data / "dagster_home")) as instance:
        report = instance.get_latest_materialization_event(AssetKey("cost_report"))
        assert report is not None  # not "Never materialized"
        metadata = report.asset_materialization.metadata
        assert metadata["spend_all_time_usd"].value == "$0.70" and metadata["requests"].value == 3
        days = [row.data["day"] for row in metadata["spend_by_day"].value.records]
        assert all(len(day) == 10 for day in days), days  # 2026-11-29, not 2026-11-29 00:00:00
        spend = [row.data["spend"] for row in metadata["spend_by_day"].value.records]
        assert spend == ["$0.70"], spend  # dollars with cents in the tables too
        assert metadata["latency_mean_seconds"].value == round(metadata["latency_mean_seconds"].value, 1)
        for chart in ("spend_per_day_chart", "latency_chart"):  # drawn, small, rendered by the UI as images
            text = metadata[chart].value
            assert text.startswith("![") and "data:image/png;base64," in text
            png = base64.b64decode(text.split("base64,", 1)[1].rstrip(")"))
            assert png.startswith(b"\x89PNG") and len(png) < 30_000


def test_demo_refuses_to_spend_when_a_key_is_set(tmp_path):
    env = {**clean_env(tmp_path / "data"), "FAL_KEY": "a-real-looking-key"}
    result = run_hailuo(["demo"], env, tmp_path)
    assert result.returncode == 2
    assert "--live" in result.stderr and "$0.70" in result.stderr
    assert not (tmp_path / "data" / "catalog.duckdb").exists()


@pytest.mark.slow
def test_sync_names_bad_rows(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "shots.csv").write_text("shot_id,image,prompt\nok,a.jpg,p\n../x,b.jpg,p\nok,c.jpg,p\n")
    result = run_hailuo(["sync"], clean_env(data), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "row 3" in result.stderr and "row 4" in result.stderr
    assert "1 shot(s) in the manifest: 1 new, 0 edited, 2 bad row(s)" in result.stdout  # the first "ok" is kept


@pytest.mark.slow
def test_sync_prune_removes_partitions_with_no_row_never_requested(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    make_image(data / "images" / "a.jpg")
    (data / "shots.csv").write_text("shot_id,image,prompt\na,images/a.jpg,p\n")
    env = clean_env(data)
    assert run_hailuo(["sync"], env, tmp_path).returncode == 0
    with DagsterInstance.from_config(str(data / "dagster_home")) as instance:
        instance.add_dynamic_partitions("shots", ["stray"])
    told = run_hailuo(["sync"], env, tmp_path)
    assert "1 partition(s) have no row in shots.csv and were never requested: stray" in told.stdout
    assert "hailuo sync --prune" in told.stdout
    pruned = run_hailuo(["sync", "--prune"], env, tmp_path)
    assert "removed 1 partition(s) with no row, never requested: stray" in pruned.stdout, pruned.stdout
    with DagsterInstance.from_config(str(data / "dagster_home")) as instance:
        assert instance.get_dynamic_partitions("shots") == ["a"]


def test_hailuo_ui_is_dagster_dev_on_the_commands_instance_as_the_same_code_location(tmp_path, monkeypatch):
    import tomllib

    import yaml

    from hailuo_pipeline.defs.headless import MALLOC_ARENAS, PLANNED_EVENTS_PER_RANGE, dagster_dev_command
    from hailuo_pipeline.settings import Settings

    monkeypatch.setenv("HAILUO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv(PLANNED_EVENTS_PER_RANGE, raising=False)
    monkeypatch.delenv(MALLOC_ARENAS, raising=False)
    command, env = dagster_dev_command(Settings.from_env(), "127.0.0.1", 3123)
    home = tmp_path / "data" / "dagster_home"
    assert env["DAGSTER_HOME"] == str(home) and (home / "dagster.yaml").exists()
    assert command[1:4] == ["-m", "dagster", "dev"] and command[-4:] == ["-h", "127.0.0.1", "-p", "3123"]
    (location,) = yaml.safe_load(Path(command[command.index("-w") + 1]).read_text())["load_from"]
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"]["dagster"]
    # the same location as `dagster dev` in the repo root: sensors' on/off state is kept per location
    assert location["python_module"] == {
        "module_name": project["module_name"],
        "location_name": project["code_location_name"],
    }
    assert env[PLANNED_EVENTS_PER_RANGE] == "true" and env[MALLOC_ARENAS] == "2"
    monkeypatch.setenv(PLANNED_EVENTS_PER_RANGE, "false")  # a value the user set is theirs
    monkeypatch.setenv(MALLOC_ARENAS, "8")
    env = dagster_dev_command(Settings.from_env(), "127.0.0.1", 3123)[1]
    assert env[PLANNED_EVENTS_PER_RANGE] == "false" and env[MALLOC_ARENAS] == "8"


@pytest.mark.slow
def test_hailuo_ui_offline_serves_runs_on_an_emulator_that_ends_with_dagster_dev(tmp_path):
    """`hailuo ui --offline` starts the emulator, then becomes `dagster dev` (exec). The emulator answers the
    pipeline at the address it gave, outlives the exec, and ends when the process it became ends."""
    import json
    import sys

    from hailuo_pipeline_tests.helpers import REPO_ROOT, new_dagster_home, wait_for
    from hailuo_pipeline_tests.shots import write_shots

    data = tmp_path / "data"
    script = (
        "import json, os, sys\n"
        "from pathlib import Path\n"
        "from hailuo_pipeline.local_servers.emulator import start_offline_fal\n"
        f"print(json.dumps(start_offline_fal(Path({str(data / 'emulator')!r}))), flush=True)\n"
        "os.execv(sys.executable, [sys.executable, '-c', 'import sys; sys.stdin.readline()'])\n"
    )
    became = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**clean_env(data), "PYTHONPATH": str(REPO_ROOT)},
    )
    assert became.stdout is not None and became.stdin is not None
    offline = json.loads(became.stdout.readline())
    (emulator,) = Path(f"/proc/{became.pid}/task/{became.pid}/children").read_text().split()
    try:
        write_shots(data, [{"shot_id": "s1", "prompt": "made offline"}])
        env = {**clean_env(data), **offline, "DAGSTER_HOME": str(new_dagster_home(tmp_path / "home"))}
        env["HAILUO_FAL_POLL_INTERVAL_SECONDS"] = "0.2"
        result = run_hailuo(["materialize"], env, tmp_path)
        assert result.returncode == 0 and "1 of 1 shot(s) delivered" in result.stdout, result.stdout + result.stderr
        assert Path(f"/proc/{emulator}").exists()
    finally:
        became.stdin.close()
        became.wait(timeout=30)
    wait_for(lambda: stat_state(emulator) == "Z", what="the emulator to end")


def stat_state(pid: str) -> str:
    """A process's state letter; "Z" once it has ended (reaped or not by its new parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
