"""One shot -> at most one paid request -> one verified video, resumable after any failure.

The ledger decides; this module only follows its decision. Before anything else, an attempt at a shot takes over the
shot's orphans (requests fal has that no live process follows) and delivers them by id: a resume never submits. Then
it reuses a verified video, waits for a live concurrent attempt, refuses an ambiguous submit or inputs fal refused
for good, or submits once. Every request it follows is leased to it (renewed every few seconds) and released when it
stops, so a crash leaves orphans that the next attempt, the nightly sweep or the orphan sensor resumes.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

import fal_client
import httpx

from hailuo_pipeline.catalog.decisions import ClaimKind, describe_lease, host_name
from hailuo_pipeline.catalog.ledger import BudgetExceededError, Claim, NoPriceError, RequestLedger
from hailuo_pipeline.catalog.rows import NewRequest, RequestRow, Status, utcnow
from hailuo_pipeline.fal.config import FalSettings
from hailuo_pipeline.fal.hooks import watch_status_calls
from hailuo_pipeline.fal.replies import VideoEntry
from hailuo_pipeline.generation.delivery import Delivery
from hailuo_pipeline.generation.errors import (
    PermanentShotFailure,
    ShotFailure,
    failure_for_held_shot,
    fix_for_budget,
)
from hailuo_pipeline.generation.follow import RequestFollower
from hailuo_pipeline.generation.leases import Leases
from hailuo_pipeline.generation.log import RunLog
from hailuo_pipeline.generation.outcome import GenerationOptions, ShotOutcome
from hailuo_pipeline.generation.settle import prices_from_fal
from hailuo_pipeline.generation.slots import FalSlot, RoomAtFal
from hailuo_pipeline.generation.submit import SubmittedIds, fingerprint, ledger_arguments, sent_arguments, submit
from hailuo_pipeline.redact import describe_error, redact
from hailuo_pipeline.shots.manifest import Shot
from hailuo_pipeline.shots.validation import ShotInputError, ShotRequest, validate_shot
from hailuo_pipeline.video.store import VideoStore

NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
DETAILED_LOG_SHOTS = 8
SUMMARY_SECONDS = 15.0


class ShotGenerator:
    def __init__(
        self,
        fal: FalSettings,
        ledger: RequestLedger,
        videos: VideoStore,
        log: RunLog,
        *,
        run_id: str | None,
        options: GenerationOptions,
    ) -> None:
        self.fal = fal
        self.ledger = ledger
        self.videos = videos
        self.log = log
        self.run_id = run_id
        self.options = options
        self.owner = f"{host_name()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leases = Leases(ledger, self.owner, log)
        self.submitted_ids = SubmittedIds(ledger)
        self.in_flight: dict[str, tuple[str, str]] = {}  # request_key -> (fal id, shot id), for cancelling
        self._client: fal_client.AsyncClient | None = None
        self._follower: RequestFollower | None = None
        self._delivery: Delivery | None = None
        self._http: httpx.AsyncClient | None = None
        self._leases: asyncio.Task[None] | None = None
        self._sweep: asyncio.Task[None] | None = None
        self.room = RoomAtFal()
        self._unsettled: set[str] | None = None  # a batch's shots with requests in flight when it started

    async def __aenter__(self) -> ShotGenerator:
        self._client = self.fal.client()
        await watch_status_calls(self._client)
        # redirects are followed by hand, each checked by the fetch policy; the delivery's deadline bounds the rest
        self._http = httpx.AsyncClient(timeout=30.0, follow_redirects=False)
        self._follower = RequestFollower(self.fal, self._client, self.ledger, self.log)
        self._delivery = Delivery(self.fal, self._http, self.ledger, self.videos, self.log)
        self._leases = asyncio.create_task(self.leases.renew_forever())
        # partial downloads of killed processes: cleaned beside the batch, not before its first submit
        self._sweep = asyncio.create_task(asyncio.to_thread(self.videos.sweep_abandoned))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._leases is not None:
            self._leases.cancel()
        if self._sweep is not None:
            try:
                await self._sweep
            except OSError as error:
                self.log.warning(f"removing partial downloads of stopped processes failed ({describe_error(error)})")
        # whatever is unfinished becomes an orphan now, not when the lease runs out
        await asyncio.to_thread(self.ledger.release, self.owner)
        if self._http is not None:
            await self._http.aclose()

    @property
    def client(self) -> fal_client.AsyncClient:
        assert self._client is not None, "use ShotGenerator as an async context manager"
        return self._client

    @property
    def follower(self) -> RequestFollower:
        assert self._follower is not None, "use ShotGenerator as an async context manager"
        return self._follower

    @property
    def delivery(self) -> Delivery:
        assert self._delivery is not None, "use ShotGenerator as an async context manager"
        return self._delivery

    # -- batches ---------------------------------------------------------------------------
    async def generate_many(
        self,
        shots: list[Shot],
        concurrency: int,
        on_done: Callable[[ShotOutcome], None] | None = None,
        on_valid: Callable[[ShotRequest], None] | None = None,
    ) -> list[ShotOutcome]:
        """Each shot validated, then paid for once and delivered, `concurrency` at a time. `on_valid`
        hears of each shot that passed validation (before its request), `on_done` of each outcome."""
        gate, ahead = asyncio.Semaphore(max(1, concurrency)), asyncio.Semaphore(max(1, concurrency))
        self.follower.detailed_logs = len(shots) <= DETAILED_LOG_SHOTS
        finished: list[ShotOutcome] = []
        # one read, not a transaction per shot: only these shots may have orphans (README: Cost safety)
        self._unsettled = await asyncio.to_thread(self.ledger.shots_in_flight)
        if not self.options.resume_only:  # before the first reservation: reserve at the account's real price
            for said in await asyncio.to_thread(prices_from_fal, self.ledger, self.fal.endpoint_id):
                self.log.info(said)

        async def one(shot: Shot) -> ShotOutcome:
            async with FalSlot(gate, ahead, self.room) as slot:
                outcome = await self.generate(shot, on_valid, slot)
            finished.append(outcome)
            if on_done is not None:
                on_done(outcome)
            return outcome

        async def summarize() -> None:
            while True:
                await asyncio.sleep(SUMMARY_SECONDS)
                failed = sum(1 for o in finished if o.failure is not None)
                self.log.info(
                    f"progress: {sum(1 for o in finished if o.ok)} of {len(shots)} shot(s) delivered, {failed} "
                    f"failed, {len(self.in_flight)} request(s) at fal"
                )

        summary = None if self.follower.detailed_logs else asyncio.create_task(summarize())
        try:
            # a task group, not gather: a cancelled batch returns only once every shot has stopped
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(shot)) for shot in shots]
            return [task.result() for task in tasks]
        finally:
            if summary is not None:
                summary.cancel()

    async def generate(
        self, shot: Shot, on_valid: Callable[[ShotRequest], None] | None = None, slot: FalSlot | None = None
    ) -> ShotOutcome:
        started = time.monotonic()
        outcome = ShotOutcome(shot.shot_id)
        try:
            unsettled = self._unsettled is None or shot.shot_id in self._unsettled
            if unsettled and await self._resume_left_behind(shot.shot_id, outcome, slot):
                pass  # the paid video an earlier run left behind is this attempt's video
            elif self.options.resume_only:
                outcome.skipped = "no request left behind to resume"
            else:
                try:
                    request = await asyncio.to_thread(validate_shot, shot, self.options.remote_images)
                except ShotInputError as exc:
                    raise PermanentShotFailure(shot.shot_id, exc.problem, exc.fix, exc.bad_input) from exc
                if on_valid is not None:
                    on_valid(request)
                await self._generate(request, outcome, slot)
        except ShotFailure as failure:
            outcome.failure = failure
        except Exception as exc:  # the one boundary: a surprise in one shot is that shot's failure, not the batch's
            outcome.failure = PermanentShotFailure(
                shot.shot_id,
                f"an unexpected error stopped it ({describe_error(exc)})",
                "a request already at fal is kept in the ledger and resumed by its id; if this repeats, "
                "report it with the run's log",
            )
        outcome.seconds = time.monotonic() - started
        return outcome

    # -- one shot --------------------------------------------------------------------------
    async def _resume_left_behind(self, shot_id: str, outcome: ShotOutcome, slot: FalSlot | None) -> bool:
        """Take over and deliver the shot's orphans, oldest first. True when one was delivered."""
        orphans = await asyncio.to_thread(self.ledger.take_over_orphans, shot_id, self.owner)
        failure: ShotFailure | None = None
        for row in orphans:
            self.log.info(
                f"{shot_id}: resuming fal request {row.request_id} ({row.status.value}) left behind by an earlier "
                "run; nothing is submitted"
            )
            try:
                with self.leases.hold(row):
                    await self._see_through(row, outcome, slot=slot)
                outcome.resumed = True
            except ShotFailure as exc:
                failure = exc
        if failure is not None and not outcome.ok:
            raise failure
        return outcome.ok

    async def _generate(self, request: ShotRequest, outcome: ShotOutcome, slot: FalSlot | None) -> None:
        arguments = ledger_arguments(request)
        image_url, digest = await asyncio.to_thread(sent_arguments, self.fal, request)
        new = NewRequest(
            shot_id=request.shot_id,
            fingerprint=fingerprint(request.shot_id, self.fal.endpoint_id, arguments),
            endpoint=self.fal.endpoint_id,
            arguments={**arguments, "image": redact(request.shot.image)},
            duration_seconds=request.duration,
            run_id=self.run_id,
            partition_key=request.shot_id,
            owner=self.owner,
            arguments_sha256=digest,
        )
        if slot is not None:
            await slot.take()
        claim = await self._claim(new)
        row = claim.row
        assert row is not None
        outcome.request = row
        if claim.kind is ClaimKind.REUSE and claim.video is not None:
            video = claim.video
            if await asyncio.to_thread(self.videos.holds, video.path, video.sha256, video.bytes):
                self.log.info(f"{request.shot_id}: reusing verified video {video.path} (no request)")
                outcome.video, outcome.reused = video, True
                return
            self.log.warning(f"{request.shot_id}: {video.path} is missing or changed; fetching it again")
            outcome.video, outcome.request, outcome.poster = await self.delivery.deliver(row, None)
            return
        if claim.kind in (ClaimKind.AMBIGUOUS, ClaimKind.LOST, ClaimKind.REFUSED):
            raise failure_for_held_shot(request.shot_id, claim.kind, row)
        with self.leases.hold(row):
            submitted_at = None
            if claim.kind is ClaimKind.SUBMIT:
                request_id, submitted_at = await submit(
                    self.fal, self.client, self.submitted_ids, request, row, image_url
                )
                self.log.info(f"{request.shot_id}: submitted fal request {request_id}")
                row = replace(row, request_id=request_id, status=Status.SUBMITTED)
            else:
                self.log.info(f"{request.shot_id}: resuming fal request {row.request_id} ({row.status.value})")
            await self._see_through(row, outcome, submitted_at, slot)

    async def _claim(self, new: NewRequest) -> Claim:
        """The ledger's decision; while another live process submits or follows this very request, wait
        for it (it delivers, and this attempt reuses its video) or for its lease to run out; while the total
        limit of requests at fal is reached, wait for room."""
        wait, told = 0.5, False
        while True:
            claim = await self._claim_once(new)
            if claim.kind is ClaimKind.FULL:
                async with self.room.turn:
                    while claim.kind is ClaimKind.FULL:
                        await self.room.wait()
                        claim = await self._claim_once(new)
            if claim.kind is not ClaimKind.WAIT:
                return claim
            assert claim.row is not None
            if not told:
                lease = describe_lease(claim.row, utcnow(), self.ledger.lease_seconds)
                self.log.info(
                    f"{new.shot_id}: request {claim.row.request_id or claim.row.request_key} "
                    f"({claim.row.status.value}) is {lease}; waiting for it to deliver, or for the lease to end "
                    "and taking the request over then (nothing is submitted)"
                )
                told = True
            await asyncio.sleep(wait)
            wait = min(wait * 1.5, 5.0)

    async def _claim_once(self, new: NewRequest) -> Claim:
        options = self.options
        try:
            return await asyncio.to_thread(
                self.ledger.claim, new, options.budget, options.claims, options.max_in_flight
            )
        except BudgetExceededError as exc:
            raise PermanentShotFailure(new.shot_id, str(exc), fix_for_budget(exc.limit)) from exc
        except NoPriceError as exc:
            raise PermanentShotFailure(new.shot_id, str(exc), "add a row for it to the prices table") from exc

    async def _see_through(
        self, row: RequestRow, outcome: ShotOutcome, submitted_at: float | None = None, slot: FalSlot | None = None
    ) -> None:
        """Follow a request fal has (leased to this generator) until its video is delivered and recorded.
        The shot's place at fal is given back the moment fal reports the job finished: the next shot is sent
        while this one's result is fetched and recorded and its video downloaded."""
        assert row.request_id is not None
        video: VideoEntry | None = None
        if row.status not in (Status.COMPLETED, Status.SUCCEEDED) or not row.video_url:
            if slot is not None:
                await slot.take()
            self.in_flight[row.request_key] = (row.request_id, row.shot_id)
            try:
                video, polls = await self.follower.follow(row, submitted_at, slot.release if slot else None)
            except ShotFailure:
                self.in_flight.pop(row.request_key, None)
                raise
            outcome.polls += polls
            # a cancelled task (run terminated) keeps its entry, so cancel_in_flight() can cancel it at fal
            self.in_flight.pop(row.request_key, None)
        if slot is not None:
            slot.release()
        outcome.video, outcome.request, outcome.poster = await self.delivery.deliver(row, video)

    # -- cancellation ----------------------------------------------------------------------
    async def cancel_in_flight(self) -> list[str]:
        """Cancel this generator's requests at fal; a request that had already completed is still
        delivered, because it was paid."""
        cancelled = []
        for request_key, (request_id, shot_id) in list(self.in_flight.items()):
            try:
                await self.client.cancel(self.fal.endpoint_id, request_id)
                await asyncio.to_thread(self.ledger.mark_cancelled, request_key, "run terminated; cancelled at fal")
                cancelled.append(request_id)
                self.log.info(f"{shot_id}: cancelled fal request {request_id}")
            except fal_client.FalClientHTTPError as exc:
                if exc.status_code != 400:
                    self.log.warning(f"{shot_id}: cancel of {request_id} failed ({exc}); it stays resumable")
                    continue
                self.log.info(f"{shot_id}: {request_id} had already completed; delivering the paid video")
                row = await asyncio.to_thread(self.ledger.get, request_key)
                try:
                    with self.leases.hold(row):
                        await self._see_through(row, ShotOutcome(shot_id))
                except ShotFailure as failure:
                    self.log.warning(str(failure))
        return cancelled
