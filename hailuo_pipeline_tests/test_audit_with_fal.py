"""Auditing against fal's own records, through Dagster and the real fal_client against the emulator's Platform
APIs: ambiguous submits settled from fal's request history on the plain `hailuo materialize` (adopted, released,
or left to a person when fal's history cannot tell), and a lost result that fal's history still holds delivered."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from hailuo_pipeline.defs.headless import materialize
from hailuo_pipeline.fal.platform import AdminKeyMissing, PlatformClient, PlatformError
from hailuo_pipeline.model_limits import ENDPOINT_ID
from hailuo_pipeline.settings import Settings
from hailuo_pipeline_tests.helpers import query, reason
from hailuo_pipeline_tests.shots import write_shots

ONE = [{"shot_id": "s1", "prompt": "a harbour at dawn"}]


def rows(workspace) -> list[tuple]:
    return query(
        workspace, "SELECT status, request_id IS NOT NULL, cost_usd, reserved_usd FROM requests ORDER BY created_at"
    )


def test_a_submit_whose_answer_was_lost_is_found_in_fals_history_and_delivered_with_one_paid_job(workspace, emulator):
    write_shots(workspace, ONE)
    emulator.configure({"faults": {"cut_submit_answers": 1}})
    first = materialize()
    assert "s1" in first.failed and rows(workspace) == [("ambiguous", False, Decimal(0), Decimal("0.1900"))]
    again = materialize()  # the plain command: no flag, no person
    assert again.succeeded == ["s1"], again
    assert any("found in fal's request history" in note for note in again.notes), again.notes
    assert emulator.stats()["submissions"] == 1  # the job fal made for the lost answer: adopted, not repaid
    assert rows(workspace) == [("succeeded", True, Decimal("0.1900"), Decimal(0))]
    (adopted,) = query(workspace, "SELECT request_id FROM requests")
    assert adopted[0] in emulator.jobs


def test_a_submit_that_never_reached_fal_is_released_at_zero_then_paid_once(workspace, emulator, monkeypatch):
    monkeypatch.setenv("HAILUO_FAL_HISTORY_MARGIN_SECONDS", "0.01")
    write_shots(workspace, ONE)
    emulator.configure({"faults": {"lose_submits": 1}})
    first = materialize()
    assert "s1" in first.failed and emulator.stats()["submissions"] == 0
    assert rows(workspace) == [("ambiguous", False, Decimal(0), Decimal("0.1900"))]
    again = materialize()
    assert again.succeeded == ["s1"], again
    assert any("never reached fal" in note for note in again.notes), again.notes
    assert emulator.stats()["submissions"] == 1  # paid once, by the plain rerun
    released, paid = rows(workspace)
    assert released == ("failed", False, Decimal(0), Decimal(0)) and paid == ("succeeded", True, Decimal("0.1900"), 0)
    assert materialize().requested == []  # and never again


def test_a_job_of_no_row_sent_around_then_is_never_released_over(workspace, emulator, monkeypatch):
    """No job matches the submit's arguments, but fal's history holds one sent then that no row of the ledger
    claims (fal echoing the arguments otherwise would look like this): the money stays held, for a person."""
    monkeypatch.setenv("HAILUO_FAL_HISTORY_MARGIN_SECONDS", "0.01")
    write_shots(workspace, ONE)
    emulator.configure({"faults": {"lose_submits": 1}})
    materialize()
    stranger = bill_outside_the_ledger("somebody else's")
    again = materialize()
    assert again.requested == [] and emulator.stats()["submissions_by_prompt"].get("a harbour at dawn") is None
    (said,) = [note for note in again.notes if "belong to no row of the ledger" in note]
    assert stranger in said, said
    assert rows(workspace) == [("ambiguous", False, Decimal(0), Decimal("0.1900"))]


def test_before_fals_listing_has_had_time_the_submit_is_held_and_it_is_said_when(workspace, emulator):
    write_shots(workspace, ONE)
    emulator.configure({"faults": {"lose_submits": 1}})
    materialize()
    again = materialize()  # the default margin, 300 s, has not passed
    assert again.requested == [] and emulator.stats()["submissions"] == 0
    assert any("is settled from fal's request history after" in note for note in again.notes), again.notes
    assert rows(workspace) == [("ambiguous", False, Decimal(0), Decimal("0.1900"))]


def test_two_jobs_with_the_same_arguments_leave_it_ambiguous_naming_both(workspace, emulator, monkeypatch):
    monkeypatch.setenv("HAILUO_FAL_HISTORY_MARGIN_SECONDS", "0.01")
    write_shots(workspace, ONE)
    emulator.configure({"faults": {"cut_submit_answers": 1, "twin_submits": 1}})
    materialize()
    again = materialize()
    assert again.requested == [] and emulator.stats()["submissions"] == 2
    (said,) = [note for note in again.notes if "jobs with the arguments" in note]
    assert all(job in said for job in emulator.jobs), said
    assert rows(workspace) == [("ambiguous", False, Decimal(0), Decimal("0.1900"))]


def test_a_lost_result_that_fals_history_still_holds_is_delivered(workspace, emulator):
    write_shots(workspace, ONE)
    emulator.configure({"faults": {"by_prompt": {"a harbour at dawn": {"result_http": [404]}}}})
    first = materialize()
    assert "s1" in first.failed and rows(workspace) == [("lost", True, Decimal("0.1900"), Decimal(0))]
    again = materialize()
    assert again.succeeded == ["s1"], again
    assert any("still holds the video of lost request" in note for note in again.notes)
    assert emulator.stats()["submissions"] == 1
    assert rows(workspace) == [("succeeded", True, Decimal("0.1900"), Decimal(0))]
    (event,) = query(workspace, "SELECT detail FROM request_events WHERE detail LIKE 'recovered from fal%'")
    assert "/files/" in event[0]


def test_a_history_that_lies_or_breaks_settles_nothing_and_says_so(workspace, emulator, monkeypatch):
    """Malformed pages, and 5xx past the client's retries: nothing booked, nothing submitted, said in words."""
    monkeypatch.setenv("HAILUO_FAL_HISTORY_MARGIN_SECONDS", "0.01")
    write_shots(workspace, ONE)
    emulator.configure({"faults": {"lose_submits": 1}})
    materialize()
    emulator.configure({"faults": {"platform_malformed": 5}})
    again = materialize()
    assert again.requested == [] and emulator.stats()["submissions"] == 0
    assert any("not settled now" in note and "fal's answer" in note for note in again.notes), again.notes
    assert rows(workspace) == [("ambiguous", False, Decimal(0), Decimal("0.1900"))]


def platform(**changes) -> PlatformClient:
    client = Settings.from_env().platform()
    assert client is not None
    for name, value in changes.items():
        setattr(client, name, value)
    return client


def test_the_platform_client_pages_retries_and_keeps_keys_out_of_messages(workspace, emulator):
    write_shots(workspace, [{"shot_id": f"s{i}", "prompt": f"p{i}"} for i in range(5)])
    assert len(materialize().succeeded) == 5
    now = datetime.utcnow()
    emulator.configure({"faults": {"history_duplicate": True, "platform_http": [503, 429]}})
    client = platform(backoff_seconds=0.01)
    import hailuo_pipeline.fal.platform as module

    module.PAGE_LIMIT, limit = 2, module.PAGE_LIMIT
    try:
        items = client.requests(ENDPOINT_ID, now - timedelta(hours=1), now + timedelta(minutes=1), payloads=True)
    finally:
        module.PAGE_LIMIT = limit
    assert len(items) == 5 and len({i.request_id for i in items}) == 5  # paged, retried, each item once
    assert client.pricing([ENDPOINT_ID])[ENDPOINT_ID].unit_price == Decimal("0.19")
    usage = client.usage(now - timedelta(days=1), now + timedelta(days=1), ENDPOINT_ID)
    assert sum(line.cost for line in usage) == Decimal("0.95")
    with pytest.raises(AdminKeyMissing, match="FAL_ADMIN_KEY"):
        platform(admin_key="").usage(now, now, ENDPOINT_ID)
    with pytest.raises(PlatformError, match="refused the key") as refused:
        platform(admin_key="not-the-admin-key-123456").usage(now, now, ENDPOINT_ID)
    assert "not-the-admin-key-123456" not in str(refused.value)


def bill_outside_the_ledger(prompt: str) -> str:
    """A job fal bills that the pipeline never asked for (another tool on the same key): its request id."""
    import fal_client

    from hailuo_pipeline_tests.hostile import jpeg

    client = fal_client.SyncClient(key="test-key")
    image = fal_client.encode(jpeg(), "image/jpeg")
    handle = client.submit(ENDPOINT_ID, {"prompt": prompt, "image_url": image, "duration": "6"})
    handle.get()
    return handle.request_id


@pytest.mark.parametrize("backend", ["duckdb", "postgresql"])
def test_reconcile_checks_the_ledger_against_what_fal_billed_each_day(
    workspace, emulator, monkeypatch, capsys, request, backend
):
    from hailuo_pipeline.cli import main

    if backend == "postgresql":
        monkeypatch.setenv("HAILUO_CATALOG_URL", request.getfixturevalue("postgres_url"))
    write_shots(workspace, [{"shot_id": "s1", "prompt": "p1", "duration": "10"}, {"shot_id": "s2", "prompt": "p2"}])
    assert len(materialize().succeeded) == 2
    today = datetime.utcnow().date().isoformat()
    assert main(["reconcile", "--day", today]) == 0, capsys.readouterr()
    assert "fal billed $0.51, the ledger booked $0.51: they agree" in capsys.readouterr().out
    assert main(["report"]) == 0
    assert f"{today}: fal billed $0.51, the ledger booked $0.51: agree" in capsys.readouterr().out

    stranger = bill_outside_the_ledger("not ours")
    assert main(["reconcile", "--day", today]) == 1
    said = capsys.readouterr().err
    assert "a difference of $+0.19" in said and f"does not hold: {stranger}" in said, said

    monkeypatch.delenv("FAL_ADMIN_KEY")
    assert main(["reconcile"]) == 3  # today and yesterday, neither checkable
    said = capsys.readouterr().err
    assert said.count("not checked: FAL_ADMIN_KEY is not set") == 2, said


def test_reconcile_refuses_a_day_that_is_not_one(workspace, capsys):
    from hailuo_pipeline.cli import main

    with pytest.raises(SystemExit) as refused:
        main(["reconcile", "--day", "2026-13-01"])
    assert refused.value.code == 2 and "is not a day written YYYY-MM-DD" in capsys.readouterr().err


def test_a_day_the_ledger_booked_but_fal_did_not_bill_names_the_request():
    from hailuo_pipeline.catalog.reconcile import compare_day

    day = datetime(2026, 12, 1).date()
    result = compare_day(day, Decimal("0.19"), {"a": Decimal("0.19"), "b": Decimal("0.32")}, {"a": None})
    assert not result.agrees and result.booked_not_billed == ("b",) and result.billed_not_booked == ()
    assert "the ledger booked 1 request(s) fal did not bill that day: b" in result.said()
    assert compare_day(day, Decimal("0.51"), {"a": Decimal("0.19"), "b": Decimal("0.32")}, {"a": 1, "b": 1}).agrees


def prices(workspace) -> list[tuple]:
    sql = "SELECT duration_seconds, usd, source FROM prices WHERE effective_at IS NOT NULL ORDER BY 1"
    return query(workspace, sql)


def test_a_price_change_at_fal_is_picked_up_before_the_next_reservation_and_budgets_hold_at_it(
    workspace, emulator, monkeypatch
):
    emulator.configure({"account_price": {"unit_price": 0.25, "unit": "video", "currency": "USD"}})
    monkeypatch.setenv("HAILUO_TOTAL_BUDGET_USD", "0.45")  # two videos at the table's $0.19; one at fal's $0.25
    write_shots(workspace, [{"shot_id": "s1", "prompt": "p1"}, {"shot_id": "s2", "prompt": "p2"}])
    summary = materialize()
    assert len(summary.succeeded) == 1 and len(summary.failed) == 1, summary
    (refused,) = summary.failed
    assert "the total budget $0.45 would be exceeded" in reason(summary, refused)
    assert "this video costs $0.25" in reason(summary, refused)
    assert emulator.stats()["submissions"] == 1
    (six, ten) = prices(workspace)
    assert six[:2] == (6, Decimal("0.2500")) and "fal's pricing API" in six[2]
    assert ten[:2] == (10, Decimal("0.4211")) and ten[2].startswith("derived from fal's pricing API")
    charged = query(workspace, "SELECT r.cost_usd, p.source FROM requests r JOIN prices p USING (price_id)")
    assert charged == [(Decimal("0.2500"), six[2])]  # the dollar traces to the price row fal's price made


def test_a_per_second_price_and_an_unreachable_pricing_api(workspace, emulator):
    from hailuo_pipeline.catalog import pricing

    emulator.configure({"faults": {"platform_http": [403]}})  # fal's pricing refuses: the table's price, said once
    write_shots(workspace, [{"shot_id": "s1", "prompt": "p1"}])
    summary = materialize()
    assert summary.succeeded == ["s1"] and prices(workspace) == []  # the table's price, said in the run's log
    assert query(workspace, "SELECT cost_usd FROM requests") == [(Decimal("0.1900"),)]
    pricing._unreachable.clear()
    emulator.configure({"account_price": {"unit_price": 0.03, "unit": "second", "currency": "USD"}})
    write_shots(workspace, [{"shot_id": "s1", "prompt": "p1"}, {"shot_id": "s2", "prompt": "p2", "duration": "10"}])
    assert materialize().succeeded == ["s2"]
    assert [row[:2] for row in prices(workspace)] == [(6, Decimal("0.1800")), (10, Decimal("0.3000"))]
    assert query(workspace, "SELECT cost_usd FROM requests WHERE shot_id = 's2'") == [(Decimal("0.3000"),)]


@pytest.mark.parametrize("total_budget", [None, "0.70"], ids=["no budget", "a budget that cuts the batch"])
def test_a_dry_run_says_exactly_what_the_real_run_then_pays(workspace, emulator, monkeypatch, capsys, total_budget):
    import json

    from hailuo_pipeline.cli import main

    if total_budget:
        monkeypatch.setenv("HAILUO_TOTAL_BUDGET_USD", total_budget)
    write_shots(workspace, [{"shot_id": "done", "prompt": "delivered before"}])
    assert materialize().succeeded == ["done"]
    shots = [{"shot_id": "done", "prompt": "delivered before"}]
    # with a budget that cuts the batch, the shots cost alike: which of them the budget covers follows the order
    # their checks finish in; how many, and the dollars, do not
    long = "6" if total_budget else "10"
    shots += [{"shot_id": f"s{i}", "prompt": f"p{i}", "duration": long if i == 1 else "6"} for i in range(4)]
    write_shots(workspace, shots)
    capsys.readouterr()
    assert main(["materialize", "--dry-run", "--format", "json"]) == 0
    estimate = json.loads(capsys.readouterr().out)  # the notes went to stderr: stdout is the JSON alone
    assert emulator.stats()["submissions"] == 1  # the dry run sent nothing
    spent_before = query(workspace, "SELECT sum(cost_usd) FROM requests")[0][0]
    summary = materialize()
    paid = emulator.stats()["submissions"] - 1
    spent = query(workspace, "SELECT sum(cost_usd) FROM requests")[0][0] - spent_before
    assert len(estimate["pay"]) == paid == len(summary.succeeded) and Decimal(estimate["total_usd"]) == spent
    if total_budget:
        assert estimate["pay"] == {"s0": "0.1900", "s1": "0.1900"} and len(estimate["over_budget"]) == 2
        assert estimate["budgets"]["total"] == {"limit_usd": "0.70", "committed_usd": "0.19", "left_after_usd": "0.13"}
        assert len(summary.failed) == 2 and all("total budget" in reason(summary, s) for s in summary.failed)
    else:
        assert set(estimate["pay"]) == {"s0", "s1", "s2", "s3"} and estimate["total_usd"] == "0.8900"
    assert estimate["reuse"] == [] and "done" not in summary.requested  # a plain run leaves a delivered shot


def test_the_manifest_sensor_shows_what_the_pending_shots_would_cost(workspace, emulator):
    from dagster import DagsterInstance

    from hailuo_pipeline.defs.automation.sensors import shots_manifest_sensor
    from hailuo_pipeline_tests.helpers import tick_sensor

    write_shots(workspace, [{"shot_id": "a", "prompt": "p", "duration": "10"}, {"shot_id": "b", "prompt": "q"}])
    with DagsterInstance.get() as instance:
        result = tick_sensor(shots_manifest_sensor, instance)
    (observation,) = result.asset_events
    assert observation.asset_key.to_user_string() == "hailuo_video"
    assert observation.metadata["would_pay_usd"].value == "$0.51"
    assert observation.metadata["would_pay_videos"].value == 2
    assert "would cost $0.51" in (observation.description or "")
    assert emulator.stats()["submissions"] == 0


def test_the_orphan_sensor_settles_an_ambiguous_submit_and_resumes_it(workspace, emulator):
    """The default path that runs by itself: within a tick, the submit whose answer was lost is found in fal's
    history and a resume-only run (which never submits) is requested for it."""
    from dagster import DagsterInstance

    from hailuo_pipeline.defs.automation.sensors import orphaned_requests_sensor
    from hailuo_pipeline_tests.helpers import tick_sensor

    write_shots(workspace, ONE)
    emulator.configure({"faults": {"cut_submit_answers": 1}})
    materialize()
    with DagsterInstance.get() as instance:
        (run,) = tick_sensor(orphaned_requests_sensor, instance)
    assert run.run_config["ops"]["hailuo_shots"]["config"]["resume_only"] is True and run.partition_key == "s1"
    assert rows(workspace) == [("submitted", True, Decimal(0), Decimal("0.1900"))]
    assert emulator.stats()["submissions"] == 1
