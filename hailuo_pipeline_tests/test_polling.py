"""The poll schedule: about a second apart, backing off, and aimed at the finish a batch has shown."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from hailuo_pipeline.fal.polling import CompletionEstimate, PollSchedule


def schedule(estimate: CompletionEstimate, elapsed: float | None) -> PollSchedule:
    since = None if elapsed is None else time.monotonic() - elapsed
    return PollSchedule(first=1.0, backoff=1.25, longest=5.0, estimate=estimate, since=since)


def test_without_history_it_backs_off_from_about_one_second_to_five():
    plan = schedule(CompletionEstimate(), 0.0)
    waits = [plan.next_wait() for _ in range(12)]
    first = waits[0]
    assert 0.5 <= first < 1.5
    assert waits[1:3] == pytest.approx([max(first, 1.0) * 1.25, max(first, 1.0) * 1.25**2])
    assert max(waits) == 5.0 and waits[-1] == 5.0


def test_a_batch_staggers_its_first_polls_over_the_interval():
    estimate = CompletionEstimate()
    firsts = sorted(schedule(estimate, 0.0).next_wait() for _ in range(16))
    assert firsts[0] >= 0.5 and firsts[-1] < 1.5
    assert max(b - a for a, b in itertools.pairwise(firsts)) < 0.15  # 16 polls spread over 1 s


async def wake_scenario(estimate: CompletionEstimate) -> tuple[bool, bool]:
    older = PollSchedule(first=60.0, backoff=1.25, longest=60.0, estimate=estimate, since=time.monotonic() - 5.0)
    younger = PollSchedule(first=60.0, backoff=1.25, longest=60.0, estimate=estimate, since=time.monotonic())
    waits = [asyncio.create_task(older.sleep()), asyncio.create_task(younger.sleep())]
    started, _ = await asyncio.wait(waits, timeout=0.05)  # both are 60 s waits: this lets them start waiting
    assert not started
    estimate.observe(4.0, 4.5)  # a request of the batch finished after running between 4 and 4.5 s
    done, _ = await asyncio.wait(waits, timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        task.result()  # a wait that failed is not a wake-up
    woke = (waits[0] in done, waits[1].done())
    for task in waits:
        task.cancel()
    return woke


def test_a_finished_request_wakes_those_running_as_long_but_not_younger_ones():
    assert asyncio.run(wake_scenario(CompletionEstimate())) == (True, False)


def test_the_estimate_serves_the_second_event_loop_of_a_terminated_run():
    """A terminated run cancels its requests from a second event loop, with the same estimate."""
    estimate = CompletionEstimate()

    async def terminated() -> bool:
        waiting = asyncio.create_task(
            PollSchedule(first=60.0, backoff=1.25, longest=60.0, estimate=estimate, since=time.monotonic()).sleep()
        )
        await asyncio.wait([waiting], timeout=0.05)  # it is waiting when the loop ends under it
        return waiting.done()

    assert asyncio.run(terminated()) is False
    assert asyncio.run(wake_scenario(estimate)) == (True, False)


def test_aims_at_the_middle_of_the_window_finished_requests_agree_on():
    estimate = CompletionEstimate()
    estimate.observe(3.8, 5.8)
    estimate.observe(4.6, 6.0)  # windows intersect in (4.6, 5.8)
    assert estimate.window() == (4.6, 5.8)
    plan = schedule(estimate, elapsed=4.0)
    regular = plan.interval
    assert regular < 1.2 and plan.next_wait() == pytest.approx(regular, abs=0.02)  # the regular poll comes first
    plan = schedule(estimate, elapsed=4.8)
    assert plan.next_wait() == pytest.approx((4.8 + 5.8) / 2 - 4.8, abs=0.02)


def test_a_narrow_window_aims_at_its_end_and_a_late_request_falls_back():
    estimate = CompletionEstimate()
    estimate.observe(4.95, 5.02)
    assert schedule(estimate, elapsed=4.5).next_wait() == pytest.approx(0.52, abs=0.02)
    late = schedule(estimate, elapsed=6.0)
    first = late.next_wait()
    assert 0.5 <= first < 1.5 and late.next_wait() == pytest.approx(max(first, 1.0) * 1.25)


def test_durations_that_disagree_use_the_typical_window_and_resumed_requests_ignore_it():
    estimate = CompletionEstimate()
    for running, finished in [(4.0, 5.0), (6.0, 7.0), (5.0, 6.0)]:
        estimate.observe(running, finished)
    assert estimate.window() == (5.0, 6.0)
    resumed = schedule(estimate, elapsed=None)
    regular = resumed.interval
    assert resumed.next_wait() == regular  # the regular schedule, not the window
