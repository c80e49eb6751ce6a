"""When to poll next: about every second, backing off, plus one poll timed for the expected finish.

Requests in one batch take about as long as each other. Learning that duration from the requests that
already finished lets one poll land just after a request should finish, instead of up to a whole
interval later, without polling more often.
"""

from __future__ import annotations

import statistics
import time


class CompletionEstimate:
    def __init__(self) -> None:
        self._spans: list[tuple[float, float]] = []  # (last poll still running, first poll finished), seconds

    def observe(self, last_running: float, first_finished: float) -> None:
        self._spans.append((last_running, first_finished))

    def expected_seconds(self) -> float | None:
        if not self._spans:
            return None
        lower = max(a for a, _ in self._spans)
        upper = min(b for _, b in self._spans)
        if lower < upper:  # every duration seen so far fits one window: aim just inside it
            return lower + min(0.05, (upper - lower) / 2)
        return statistics.median((a + b) / 2 for a, b in self._spans)


class PollSchedule:
    """One request's polling clock, measured from its submit."""

    def __init__(
        self, first: float, backoff: float, longest: float, estimate: CompletionEstimate, since: float | None
    ) -> None:
        self.interval = first
        self.backoff = backoff
        self.longest = longest
        self.estimate = estimate
        self.since = since  # monotonic time of the submit; None for a resumed request
        self.last_running = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.since if self.since is not None else 0.0

    def still_running(self) -> None:
        self.last_running = self.elapsed()

    def finished(self) -> None:
        if self.since is not None:
            self.estimate.observe(self.last_running, self.elapsed())

    def next_wait(self) -> float:
        wait = self.interval
        self.interval = min(self.interval * self.backoff, self.longest)
        expected = self.estimate.expected_seconds() if self.since is not None else None
        if expected is not None:
            elapsed = self.elapsed()
            if elapsed < expected < elapsed + wait:
                return expected - elapsed
        return wait
