"""What a batch is asked to do, and what came of each shot."""

from __future__ import annotations

from dataclasses import dataclass, field

from hailuo_pipeline.catalog.decisions import ClaimOptions
from hailuo_pipeline.catalog.rows import Budget, RequestRow, VideoRow
from hailuo_pipeline.generation.errors import ShotFailure
from hailuo_pipeline.shots.remote import RemotePolicy


@dataclass(frozen=True)
class GenerationOptions:
    new_take: bool = False
    resubmit_ambiguous: bool = False
    retry_refused: bool = False
    repay_lost: bool = False
    retake_rejected: bool = False
    resume_only: bool = False  # deliver requests left behind; never submit
    budget: Budget = field(default_factory=Budget)
    remote_images: RemotePolicy = field(default_factory=RemotePolicy)
    max_in_flight: int | None = None  # requests at fal over every run and process (None: no total limit)

    @property
    def claims(self) -> ClaimOptions:
        return ClaimOptions(
            self.new_take, self.resubmit_ambiguous, self.retry_refused, self.repay_lost, self.retake_rejected
        )


@dataclass
class ShotOutcome:
    shot_id: str
    video: VideoRow | None = None
    request: RequestRow | None = None
    reused: bool = False  # a video paid for before this attempt: nothing was spent now
    resumed: bool = False  # a request left behind by an earlier run, delivered by id
    skipped: str | None = None  # nothing to do (a resume-only attempt with nothing left behind)
    failure: ShotFailure | None = None
    polls: int = 0
    seconds: float = 0.0
    poster: bytes | None = None  # a small JPEG of the delivered video (none for a reused one)

    @property
    def ok(self) -> bool:
        return self.failure is None and self.video is not None
