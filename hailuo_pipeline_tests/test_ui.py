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

from hailuo_pipeline.local_servers import apt_install, free_port
from hailuo_pipeline.local_servers.dagster_dev import LocalDagsterDev
from hailuo_pipeline_tests.helpers import REPO_ROOT, hailuo, new_dagster_home, query, wait_for
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
    "--autoplay-policy=no-user-gesture-required",  # a take's video is played by the test, without a click
]
START_SECONDS = 180  # the webserver, the daemon and the code server start slowly on a busy 2-core machine
HTML_PROMPT = 'Already delivered <b>before</b> the UI opens <img src=x onerror="window.injected=1">'
SHOTS = [
    {"shot_id": "done", "prompt": HTML_PROMPT},
    {"shot_id": "tall", "prompt": "A portrait shot, delivered with done in one batch", "image": "images/tall.jpg"},
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
    """Two shots delivered in one batch (one of them portrait) and cost_report materialized headlessly, one fresh
    and one bad shot registered; then `dagster dev` on that instance with the emulator as fal."""
    root = tmp_path_factory.mktemp("ui")
    data, home = root / "data", new_dagster_home(root / "dagster_home")
    make_image(data / "images" / "tall.jpg", size=(432, 768), seed=5)
    write_shots(data, SHOTS)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HAILUO_", "DAGSTER_"))},
        **emulator_server.env(),
        "HAILUO_DATA_DIR": str(data),
        "DAGSTER_HOME": str(home),
        "FAL_KEY": "test-key",
        "HAILUO_FAL_POLL_INTERVAL_SECONDS": "0.3",
        # one setting for every command: the links the headless runs store open the server `hailuo ui` starts
        "HAILUO_REVIEW_URL": f"http://127.0.0.1:{free_port()}",
        "PYTHONPATH": str(REPO_ROOT),
    }
    prepare = (
        "from hailuo_pipeline.defs.headless import instance, materialize, report_asset, sync\n"
        "from hailuo_pipeline.settings import Settings\n"
        "materialize(['done', 'tall'])\n"
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
        yield {"url": server.url, "review": server.review_url, "data": data, "root": root, "home": home, "env": env}
    finally:
        assert server.stop(), "hailuo ui did not stop on SIGTERM; it had to be killed"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """One Chromium for the module (starting it costs about a second of both cores); a fresh page for each test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium_browser = playwright.chromium.launch(executable_path=str(chromium()), args=CHROMIUM_ARGS)
        yield chromium_browser
        chromium_browser.close()


@pytest.fixture
def page(dagster_ui, browser, request) -> Iterator:
    shots_dir = dagster_ui["root"] / "screenshots"
    shots_dir.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
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
    context.close()


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


def take_key(data: Path, shot: str, take: int = 1) -> str:
    ((key,),) = query(data, "SELECT request_key FROM requests WHERE shot_id = ? AND take = ?", [shot, take])
    return key


def assert_plays_and_seeks(video) -> None:
    """Enough data to play, its time advancing, and a seek that lands (the server answers byte ranges)."""
    video.evaluate("v => { v.muted = true; return v.play(); }")
    handle = video.element_handle()
    video.page.wait_for_function("v => v.readyState >= 3 && v.currentTime > 0.3 && !v.error", arg=handle)
    seek = "v => new Promise(done => { v.addEventListener('seeked', done, {once: true}); v.currentTime = 4; })"
    video.evaluate(seek)
    assert video.evaluate("v => [Math.round(v.currentTime), v.readyState >= 2, v.error]") == [4, True, None]


# a metadata row's value fits in the metadata table's scroll box: nothing hidden past its right edge
FITS = """row => { const table = row.closest('table'); let box = table.parentElement;
  while (box && getComputedStyle(box).overflowX === 'visible') box = box.parentElement;
  const right = box ? box.getBoundingClientRect().right : window.innerWidth;
  return table.getBoundingClientRect().right <= right + 1 }"""


def test_lineage_opens_as_one_graph_with_every_asset_named(page, dagster_ui):
    """Lineage opens on every asset, not on collapsed group boxes a newcomer must expand first."""
    open_page(page, f"{dagster_ui['url']}/asset-groups")
    nodes = page.get_by_text("Latest event")  # a row of each asset's node; a collapsed group has none
    nodes.first.wait_for()
    assert nodes.count() == 6, page.locator("body").inner_text()[:2000]


def test_cost_report_shows_the_spend_in_dollars_its_charts_and_tables_that_fit(page, dagster_ui):
    open_page(page, f"{dagster_ui['url']}/assets/cost_report")
    table = page.get_by_role("table").first
    assert "$0.38" in table.get_by_role("row").filter(has_text="spend_all_time_usd").inner_text()  # not 0.38
    latency = table.get_by_role("row").filter(has_text="latency_mean_seconds").inner_text().split()[-1]
    assert re.fullmatch(r"\d+(\.\d)?", latency), latency  # a tenth, not four decimals
    chart = table.get_by_role("row").filter(has_text="latency_chart")
    image = show_markdown_image(page, chart, "latency distribution")
    assert image.evaluate("i => i.naturalWidth") > 100
    page.keyboard.press("Escape")
    page.set_viewport_size({"width": 1280, "height": 1000})
    for name in ("spend_by_day", "spend_by_duration"):
        row = table.get_by_role("row").filter(has_text=name).first
        assert "$0." in row.inner_text() and row.evaluate(FITS), f"{name} is cut off at the right edge"


def test_a_shot_materialized_from_the_asset_page_shows_its_metadata_and_poster(page, dagster_ui):
    base = dagster_ui["url"]
    launch_partition(page, base, "hailuo_video", "fresh")
    wait_for_text(page, f"{base}/assets/hailuo_video?view=partitions&partition=fresh", "cost_usd")
    metadata = page.get_by_role("table").first
    assert "$0.19" in metadata.get_by_role("row").filter(has_text="cost_usd").inner_text()
    poster = show_markdown_image(page, metadata.get_by_role("row").filter(has_text="poster"), "fresh")
    assert poster.evaluate("i => [i.naturalWidth, i.complete]") == [192, True]
    # the video alone was selected; its inputs were validated and materialized in the same run
    wait_for_text(page, f"{base}/assets/source_image?view=partitions&partition=fresh", "manifest_row", seconds=30)
    # launched by the run queue: its step ran in the run worker itself, not in a second interpreter
    run_pids, step_pids = processes_of_the_run(dagster_ui["home"], "fresh")
    assert len(run_pids) == 1 and step_pids == run_pids, (run_pids, step_pids)


def test_the_watch_link_plays_the_take_and_approving_it_is_recorded(page, dagster_ui):
    """From the asset page, one click: the take's page, its video playing and seeking, and its verdict."""
    base, data = dagster_ui["url"], dagster_ui["data"]
    key = take_key(data, "fresh")
    open_page(page, f"{base}/assets/hailuo_video?view=partitions&partition=fresh")
    link = page.get_by_role("table").first.get_by_role("row").filter(has_text="watch").get_by_role("link").first
    assert link.get_attribute("href") == f"{dagster_ui['review']}/takes/{key}"
    with page.context.expect_page() as opened:  # Dagster opens URL metadata in a new tab
        link.click()
    take = opened.value
    take.wait_for_load_state("networkidle")
    assert_plays_and_seeks(take.locator("video"))
    facts = take.locator("dl").inner_text()
    assert "$0.19" in facts and "take 1" in facts
    ((run_id,),) = query(data, "SELECT run_id FROM requests WHERE request_key = ?", [key])
    assert take.get_by_role("link", name=run_id[:8]).get_attribute("href") == f"{base}/runs/{run_id}"
    take.get_by_role("button", name="Approve").click()
    take.wait_for_load_state("networkidle")
    assert "approved" in take.locator("dl").inner_text()
    assert query(data, "SELECT verdict FROM requests WHERE request_key = ?", [key]) == [("approve",)]
    take.close()  # approved_video is looked for in the last test, a sensor tick later


def test_a_take_rejected_on_its_page_is_retaken_once_and_shown_newest_first(page, dagster_ui, emulator_server):
    data, review = dagster_ui["data"], dagster_ui["review"]
    open_page(page, f"{review}/takes/{take_key(data, 'done')}")
    reject = page.locator("form").filter(has=page.get_by_role("button", name="Reject"))
    reject.get_by_placeholder("note").fill("too dark")
    reject.get_by_role("button", name="Reject").click()
    page.wait_for_load_state("networkidle")
    assert "rejected" in page.locator("dl").inner_text()
    submitted = emulator_server.state.stats()["submissions"]
    retake = hailuo(["materialize", "--retake-rejected", "--shot", "done"], dagster_ui["env"], dagster_ui["root"])
    output, _ = retake.communicate(timeout=180)
    assert retake.returncode == 0, output[-3000:]
    assert emulator_server.state.stats()["submissions"] == submitted + 1  # exactly one new take
    takes = "SELECT take, verdict FROM requests WHERE shot_id = 'done' AND status = 'succeeded' ORDER BY take"
    assert query(data, takes) == [(1, "reject"), (2, None)]
    assert query(data, "SELECT note FROM verdicts WHERE shot_id = 'done'") == [("too dark",)]
    open_page(page, f"{review}/shots/done")
    captions = page.locator("figcaption").all_inner_texts()
    assert [c.split(":")[0] for c in captions] == ["done, take 2", "done, take 1"], captions
    assert "rejected" in captions[1] and "no verdict" in captions[0]


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
    # and the failed partition's own events say it, not only "Run ... failed"
    open_page(page, f"{base}/assets/hailuo_video?view=events&partition=bad")
    page.get_by_text("not made: duration '7' is not offered. Fix: set duration to 6 or 10").first.wait_for()


def test_the_batch_page_plays_every_new_video_of_its_run(page, dagster_ui):
    from dagster import AssetKey, DagsterInstance

    data, review = dagster_ui["data"], dagster_ui["review"]
    ((run_id,),) = query(data, "SELECT DISTINCT run_id FROM requests WHERE shot_id IN ('done', 'tall') AND take = 1")
    with DagsterInstance.from_config(str(dagster_ui["home"])) as instance:  # the contact sheet's link
        sheets = instance.fetch_observations(AssetKey("hailuo_video"), limit=50).records
    watch = {
        r.asset_observation.metadata["watch"].value for r in sheets if "contact_sheet" in r.asset_observation.metadata
    }
    assert f"{review}/runs/{run_id}" in watch
    open_page(page, f"{review}/runs/{run_id}")
    assert "2 new video(s), $0.38" in page.locator("body").inner_text()
    captions = page.locator("figcaption").all_inner_texts()
    assert sorted(c.split(",")[0] for c in captions) == ["done", "tall"], captions
    page.wait_for_function(
        "() => [...document.querySelectorAll('video')].every(v => v.readyState >= 1 && v.duration > 5)"
    )
    assert page.locator("video").count() == 2


def test_a_forged_verdict_is_refused_and_a_prompt_holding_html_stays_text(page, dagster_ui):
    data, review = dagster_ui["data"], dagster_ui["review"]
    open_page(page, f"{review}/takes/{take_key(data, 'done')}")
    prompt = page.locator("dd.prompt")
    assert prompt.inner_text() == HTML_PROMPT and prompt.locator("*").count() == 0
    assert page.evaluate("() => window.injected") is None
    key = take_key(data, "tall")
    verdict_url = f"{review}/takes/{key}/verdict"
    open_page(page, f"{review}/takes/{key}")
    copied = page.locator("input[name=token]").first.input_value()
    recorded = query(data, "SELECT count(*) FROM verdicts")
    post = """([url, token]) => { const form = document.createElement('form'); form.method = 'post'; form.action = url;
      for (const [name, value] of Object.entries({token, verdict: 'reject'})) {
        const input = document.createElement('input'); input.name = name; input.value = value; form.appendChild(input);
      }
      document.body.appendChild(form); form.submit(); }"""
    for token in ("forged", copied):  # another site's page posting the form: made up, then copied from the page
        open_page(page, dagster_ui["url"])
        with page.expect_response(verdict_url) as answer:
            page.evaluate(post, [verdict_url, token])
        assert answer.value.status == 403
        assert "refused" in page.locator("body").inner_text()
    assert query(data, "SELECT count(*) FROM verdicts") == recorded


def test_the_static_review_page_keeps_a_takes_labels_together_beside_a_portrait_video(page, dagster_ui):
    from hailuo_pipeline.catalog.backends import open_catalog
    from hailuo_pipeline.review.page import write_review

    out, _ = write_review(
        open_catalog(dagster_ui["data"] / "catalog.duckdb"),
        dagster_ui["root"] / "review" / "index.html",
        dagster_ui["url"],
    )
    open_page(page, out.as_uri())
    section = page.locator("section#tall-take1")
    video = section.locator("video").bounding_box()
    labels = section.locator("dt")
    first, last = labels.first.bounding_box(), labels.last.bounding_box()
    assert video is not None and first is not None and last is not None
    assert video["height"] > video["width"]  # portrait
    assert first["x"] > video["x"] + video["width"]  # beside it
    assert last["y"] + last["height"] - first["y"] < 0.5 * video["height"], (first, last, video)  # together
    assert section.locator("video").get_attribute("poster").startswith("data:image/jpeg;base64,")


def test_the_sensors_registered_a_row_made_the_approved_video_and_kept_the_report_current(page, dagster_ui):
    """Looked for last, a sensor tick or more after what caused them. The row was appended to shots.csv with
    `dagster dev` running: only shots_manifest_sensor (on by default) can have made it a partition. The take
    approved on its page: approved_videos_sensor. The report: cost_report_automation, after the batches."""
    base, data = dagster_ui["url"], dagster_ui["data"]
    wait_for_text(page, f"{base}/assets/source_image?view=partitions", "added", seconds=150)
    wait_for_text(page, f"{base}/assets/approved_video?view=partitions&partition=fresh", "paid_by", seconds=120)
    paid_by = page.get_by_role("table").first.get_by_role("row").filter(has_text="paid_by").inner_text()
    ((request_id,),) = query(data, "SELECT request_id FROM requests WHERE shot_id = 'fresh'")
    assert f"fal request {request_id} ($0.19)" in paid_by, paid_by  # the take approved on its page
    ((spent,),) = query(data, "SELECT sum(cost_usd) FROM requests")
    assert spent == Decimal("0.76")  # done twice, tall, fresh; the stopped one cancelled at $0
    wait_for_text(page, f"{base}/assets/cost_report", "$0.76", seconds=120)
