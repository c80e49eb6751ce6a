"""When to poll next: about every second, backing off, plus polls aimed at the expected finish.

Requests in one batch tend to take about as long as each other. Each finished request tells us its
duration lies between its last "still running" poll and its first "finished" poll; intersecting the
recent windows and polling in their middle (a bisection, one halving per request) lets later requests
be seen finishing within a fraction of a second, without polling more often than about once a second.
When durations vary a little, the typical window is used; when they vary a lot, polls that land early
are simply followed by the regular schedule.

Before any request has finished there is no window. The requests of a batch then share the work: their
schedules start at staggered phases, so that together they poll every interval / C seconds, and when one
of them sees its request finish, the requests that have been running at least as long poll at once.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque

MIN_WINDOW_SECONDS = 0.1
GOLDEN_RATIO_FRACTION = 0.6180339887  # successive multiples mod 1 spread evenly over [0, 1)


class CompletionEstimate:
    """What a batch's finished requests tell the others; one per batch, used from one event loop."""

    def __init__(self, remember: int = 16) -> None:
        self._spans: deque[tuple[float, float]] = deque(maxlen=remember)
        self._schedules = 0
        self._news: asyncio.Event | None = None
        self._news_loop: asyncio.AbstractEventLoop | None = None
        self.last_finished_running = 0.0  # the newest finished request's last "still running" poll

    @property
    def news(self) -> asyncio.Event:
        """Set (then replaced) each time a request is seen finished. One per event loop: a terminated
        run cancels its requests from a second loop, and an asyncio.Event belongs to one."""
        loop = asyncio.get_running_loop()
        if self._news is None or self._news_loop is not loop:
            self._news, self._news_loop = asyncio.Event(), loop
        return self._news

    def next_phase(self) -> float:
        """A phase in [0, 1) for the next schedule, spread evenly over the schedules so far."""
        self._schedules += 1
        return (self._schedules * GOLDEN_RATIO_FRACTION) % 1.0

    def observe(self, last_running: float, first_finished: float) -> None:
        self._spans.append((last_running, first_finished))
        self.last_finished_running = last_running
        if self._news is not None:  # wake those waiting; the next wait gets a fresh event
            news, self._news = self._news, None
            news.set()

    def window(self) -> tuple[float, float] | None:
        if not self._spans:
            return None
        lower = max(a for a, _ in self._spans)
        upper = min(b for _, b in self._spans)
        if lower < upper:
            return lower, upper
        # durations differ a little: aim between the typical last-running and first-finished polls
        lower, upper = statistics.median(a for a, _ in self._spans), statistics.median(b for _, b in self._spans)
        return (lower, upper) if lower < upper else None


class PollSchedule:
    """One request's polling clock, measured from its submit."""

    def __init__(
        self, first: float, backoff: float, longest: float, estimate: CompletionEstimate, since: float | None
    ) -> None:
        # the first wait is staggered between half and one and a half intervals (see the module's note)
        self.interval = first * (0.5 + estimate.next_phase())
        self.first = first
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
        window = self.estimate.window() if self.since is not None else None
        elapsed = self.elapsed()
        if window is not None and elapsed < window[1]:
            lower, upper = max(window[0], elapsed), window[1]
            target = upper if upper - lower <= MIN_WINDOW_SECONDS else (lower + upper) / 2
            return max(0.02, min(self.interval, target - elapsed))
        wait = self.interval  # the regular schedule backs off only while it is the one in use
        self.interval = min(max(self.interval, self.first) * self.backoff, self.longest)
        return wait

    async def sleep(self) -> None:
        """Wait until the next poll is due, or less: when another request of the batch is seen finished
        after running no longer than this one has, poll now."""
        deadline = time.monotonic() + self.next_wait()
        while (left := deadline - time.monotonic()) > 0:
            news = self.estimate.news
            try:
                async with asyncio.timeout(left):
                    await news.wait()
            except TimeoutError:
                return
            if self.since is not None and self.elapsed() >= self.estimate.last_finished_running:
                return
