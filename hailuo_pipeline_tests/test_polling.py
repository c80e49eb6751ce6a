"""The poll schedule: about a second apart, backing off, and aimed at the finish a batch has shown."""

from __future__ import annotations

import time

import pytest

from hailuo_pipeline.fal.polling import CompletionEstimate, PollSchedule


def schedule(estimate: CompletionEstimate, elapsed: float | None) -> PollSchedule:
    since = None if elapsed is None else time.monotonic() - elapsed
    return PollSchedule(first=1.0, backoff=1.25, longest=5.0, estimate=estimate, since=since)


def test_without_history_it_backs_off_from_one_second_to_five():
    plan = schedule(CompletionEstimate(), 0.0)
    waits = [plan.next_wait() for _ in range(12)]
    assert waits[:3] == pytest.approx([1.0, 1.25, 1.5625])
    assert max(waits) == 5.0 and waits[-1] == 5.0


def test_aims_at_the_middle_of_the_window_finished_requests_agree_on():
    estimate = CompletionEstimate()
    estimate.observe(3.8, 5.8)
    estimate.observe(4.6, 6.0)  # windows intersect in (4.6, 5.8)
    assert estimate.window() == (4.6, 5.8)
    plan = schedule(estimate, elapsed=4.0)
    assert plan.next_wait() == pytest.approx(1.0, abs=0.02)  # the regular second comes first
    plan = schedule(estimate, elapsed=4.8)
    assert plan.next_wait() == pytest.approx((4.8 + 5.8) / 2 - 4.8, abs=0.02)


def test_a_narrow_window_aims_at_its_end_and_a_late_request_falls_back():
    estimate = CompletionEstimate()
    estimate.observe(4.95, 5.02)
    assert schedule(estimate, elapsed=4.5).next_wait() == pytest.approx(0.52, abs=0.02)
    late = schedule(estimate, elapsed=6.0)
    assert late.next_wait() == 1.0 and late.next_wait() == 1.25


def test_durations_that_disagree_use_the_typical_window_and_resumed_requests_ignore_it():
    estimate = CompletionEstimate()
    for running, finished in [(4.0, 5.0), (6.0, 7.0), (5.0, 6.0)]:
        estimate.observe(running, finished)
    assert estimate.window() == (5.0, 6.0)
    assert schedule(estimate, elapsed=None).next_wait() == 1.0
