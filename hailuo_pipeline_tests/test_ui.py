"""The Dagster UI as a user meets it: `dagster dev` on a temporary instance, the fal emulator, and the
system's Chromium driven by Playwright, through the UI only. Screenshots of a failing step are saved under
the test's temporary directory (the path is printed)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path

import pytest

from hailuo_pipeline.local_servers import apt_install
from hailuo_pipeline.local_servers.dagster_dev import LocalDagsterDev
from hailuo_pipeline_tests.helpers import REPO_ROOT, new_dagster_home, query, wait_for
from hailuo_pipeline_tests.shots import make_image, write_shots

pytestmark = [pytest.mark.slow, pytest.mark.ui, pytest.mark.xdist_group("ui")]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # this machine refuses outside connections: do not try them
    "--disable-component-update",
    "--disable-sync",
]
START_SECONDS = 180  # the webserver, the daemon and the code server start slowly on a busy 2-core machine
SHOTS = [
    {"shot_id": "done", "prompt": "Already delivered before the UI opens"},
    {"shot_id": "fresh", "prompt": "A shot materialized from the asset page"},
    {"shot_id": "bad", "prompt": "A shot with a duration the model does not offer", "duration": "7"},
    {"shot_id": "stopped", "prompt": "A shot whose run is terminated while fal has its request"},
]


def chromium() -> Path:
    """Debian's Chromium, installed with apt-get when missing (Playwright's own download cannot work here)."""
    if not CHROMIUM.exists():
        apt_install("chromium")
    if not CHROMIUM.exists():
        raise RuntimeError("no Chromium: install Debian's chromium package (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory, emulator_server) -> Iterator[dict]:
    """One shot delivered and cost_report materialized headlessly, one fresh and one bad shot registered;
    then `dagster dev` on that instance with the emulator as fal."""
    root = tmp_path_factory.mktemp("ui")
    data, home = root / "data", new_dagster_home(root / "dagster_home")
    write_shots(data, SHOTS)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HAILUO_", "DAGSTER_"))},
        **emulator_server.env(),
        "HAILUO_DATA_DIR": str(data),
        "DAGSTER_HOME": str(home),
        "FAL_KEY": "test-key",
        "HAILUO_FAL_POLL_INTERVAL_SECONDS": "0.3",
        "PYTHONPATH": str(REPO_ROOT),
    }
    prepare = (
        "from hailuo_pipeline.defs.headless import instance, materialize, report_asset, sync\n"
        "from hailuo_pipeline.settings import Settings\n"
        "materialize(['done'])\n"
        "with instance(Settings.from_env()) as d:\n"
        "    report_asset(d, Settings.from_env())\n"
    )
    subprocess.run([sys.executable, "-c", prepare], env=env, cwd=REPO_ROOT, check=True, capture_output=True)
    # started as from a script's background job, which ignores Ctrl-C (an ignored signal survives exec):
    # `hailuo ui` must still stop on SIGTERM, as the teardown checks
    interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        server = LocalDagsterDev(env, REPO_ROOT, root / "dagster-dev.log").start(START_SECONDS)
    finally:
        signal.signal(signal.SIGINT, interrupt)
    # a row added while the UI is open, for the sensor test (the last one): the sensor ticks every 30 s,
    # so it is added now and looked for after the other tests, instead of waited for
    make_image(data / "images" / "added.jpg", seed=9)
    with (data / "shots.csv").open("a") as manifest:
        manifest.write("added,images/added.jpg,A row added while the UI is open,6,true\n")
    try:
        yield {"url": server.url, "data": data, "root": root, "home": home}
    finally:
        assert server.stop(), "hailuo ui did not stop on SIGTERM; it had to be killed"


@pytest.fixture
def page(dagster_ui, request) -> Iterator:
    from playwright.sync_api import sync_playwright

    shots_dir = dagster_ui["root"] / "screenshots"
    shots_dir.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium()), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(60_000)
        # Dagster's one-time community dialog, on localhost only, is not shown once dismissed in the browser
        # (local storage `communityNux`): dismissed before any page loads, so it never covers another dialog
        page.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
        # should it open all the same, it is dismissed whenever it appears, before any action (typed text would
        # otherwise land in its e-mail field)
        page.add_locator_handler(
            page.get_by_text("Join the Dagster community"), lambda: page.get_by_role("button", name="Skip").click()
        )
        yield page
        report = getattr(request.node, "rep_call", None)  # set by conftest's pytest_runtest_makereport
        if report is not None and report.failed:
            where = shots_dir / f"{request.node.name}.png"
            page.screenshot(path=str(where), full_page=True)
            print(f"screenshot of the failure: {where}")
        browser.close()


def processes_of_the_run(home: Path, partition: str) -> tuple[set[int], set[int]]:
    """The process ids that wrote the run's own events and its step's events, for the run of `partition`."""
    from dagster import DagsterEventType, DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs(RunsFilter(tags={"dagster/partition": partition}))
        events = [record.dagster_event for record in instance.all_logs(run.run_id) if record.dagster_event]
    run_events = {DagsterEventType.RUN_START, DagsterEventType.RUN_SUCCESS}
    step_events = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}
    return (
        {event.pid for event in events if event.event_type in run_events and event.pid is not None},
        {event.pid for event in events if event.event_type in step_events and event.pid is not None},
    )


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")


def launch_partition(page, base: str, asset: str, shot: str) -> None:
    """The asset page's "Materialize…" dialog, one partition chosen, launched; waits for Dagster's "Launched
    run" notice, and tries the dialog once more when it does not come (a pick the picker did not register)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(2):
        open_page(page, f"{base}/assets/{asset}")
        page.get_by_role("button", name="Materialize…").first.click()
        page.get_by_text("Select a partition or create one").click()
        page.keyboard.type(shot)
        page.get_by_text(shot, exact=True).locator("visible=true").last.click()  # the picker's item
        page.keyboard.press("Escape")
        page.get_by_role("button", name=re.compile(r"^Launch (backfill|1 run)$")).click()
        try:
            page.get_by_text(re.compile(r"Launched run|Created backfill")).first.wait_for(timeout=30_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"the dialog did not launch a run of {asset} for {shot} (twice)")


def show_markdown_image(page, row, name: str):
    """A Markdown image of a metadata row: shown in the row, or behind its "[Show Markdown]" link."""
    inline = row.get_by_role("img", name=name)
    if inline.count():
        return inline.first
    row.get_by_text("[Show Markdown]").click()
    return page.get_by_role("dialog").get_by_role("img", name=name)


def wait_for_text(page, url: str, text: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while True:
        open_page(page, url)
        if page.get_by_text(text).count():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} did not appear at {url} within {seconds:.0f} s")
        page.wait_for_timeout(1000)


def test_cost_report_shows_the_spend_and_its_charts(page, dagster_ui):
    open_page(page, f"{dagster_ui['url']}/assets/cost_report")
    table = page.get_by_role("table").first
    row = table.get_by_role("row").filter(has_text="spend_all_time_usd")
    assert "0.19" in row.inner_text()
    chart = table.get_by_role("row").filter(has_text="latency_chart")
    image = show_markdown_image(page, chart, "latency distribution")
    assert image.evaluate("i => i.naturalWidth") > 100


def test_a_shot_materialized_from_the_asset_page_shows_its_metadata_and_poster(page, dagster_ui):
    base = dagster_ui["url"]
    launch_partition(page, base, "hailuo_video", "fresh")
    wait_for_text(page, f"{base}/assets/hailuo_video?view=partitions&partition=fresh", "cost_usd")
    metadata = page.get_by_role("table").first
    assert "0.19" in metadata.get_by_role("row").filter(has_text="cost_usd").inner_text()
    poster = show_markdown_image(page, metadata.get_by_role("row").filter(has_text="poster"), "fresh")
    assert poster.evaluate("i => [i.naturalWidth, i.complete]") == [192, True]
    # the video alone was selected; its inputs were validated and materialized in the same run
    wait_for_text(page, f"{base}/assets/source_image?view=partitions&partition=fresh", "manifest_row", seconds=30)
    # launched by the run queue: its step ran in the run worker itself, not in a second interpreter
    run_pids, step_pids = processes_of_the_run(dagster_ui["home"], "fresh")
    assert len(run_pids) == 1 and step_pids == run_pids, (run_pids, step_pids)


def test_a_run_terminated_in_dagster_cancels_its_request_at_fal(page, dagster_ui, emulator_server):
    """Dagster terminates a launched run by interrupting the run worker, where its step runs: the batch
    cancels what fal still has, and records it cancelled at $0."""
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    state = emulator_server.state
    latency = asdict(state.config.latency)
    state.configure({"latency": {"queue_seconds": 300.0}})
    try:
        submitted = state.stats()["submissions"]
        launch_partition(page, dagster_ui["url"], "hailuo_video", "stopped")
        wait_for(lambda: state.stats()["submissions"] > submitted, timeout=120, what="the shot's request at fal")
        with DagsterInstance.from_config(str(dagster_ui["home"])) as instance:
            (run,) = instance.get_runs(RunsFilter(tags={"dagster/partition": "stopped"}))
            assert instance.run_launcher.terminate(run.run_id)
            wait_for(
                lambda: getattr(instance.get_run_by_id(run.run_id), "status", None) == DagsterRunStatus.CANCELED,
                timeout=60,
                what="the run to end cancelled",
            )
    finally:
        state.configure({"latency": latency})
    (request,) = query(
        dagster_ui["data"], "SELECT request_id, status, cost_usd FROM requests WHERE shot_id = 'stopped'"
    )
    assert request[1:] == ("cancelled", Decimal("0")), request
    assert request[0] in state.stats()["cancelled"]


def test_a_bad_shot_is_refused_with_its_fix_first(page, dagster_ui):
    base = dagster_ui["url"]
    launch_partition(page, base, "hailuo_video", "bad")
    partition = f"{base}/assets/hailuo_video?view=partitions&partition=bad"
    wait_for_text(page, partition, "Failed (1)", seconds=180)  # the shot's partition shows its failed run
    page.locator("a[href*='/runs/']").first.click()
    page.get_by_text("STEP_FAILURE").first.wait_for()
    page.screenshot(path=str(dagster_ui["root"] / "screenshots" / "refusal.png"), full_page=True)
    text = page.locator("body").inner_text()
    failure = text[text.find("STEP_FAILURE") :]
    refusal = failure.find("duration '7' is not offered")
    assert 0 <= refusal < 200, failure[:1500]  # the failure's first words: the shot's cause
    assert "Fix: set duration to 6 or 10" in failure[refusal : refusal + 300], failure[:1500]
    # Dagster prints its stack trace under every step failure; the shot's cause and fix come before it
    assert failure.find("Stack Trace") > failure.find("Fix: set duration"), failure[:1500]


def test_a_new_manifest_row_is_registered_by_the_sensor(page, dagster_ui):
    """The row was appended to shots.csv after the instance was prepared, with `dagster dev` running: only
    shots_manifest_sensor (on by default) can have made it a partition."""
    wait_for_text(page, f"{dagster_ui['url']}/assets/source_image?view=partitions", "added", seconds=150)
