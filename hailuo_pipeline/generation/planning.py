"""Which shots a default run takes, and what to tell the user about the rest.

Shared by `hailuo materialize`, the generation sensor and the nightly sweep. It decides nothing itself: each
shot's answer is the ledger's one judge (`decisions.judge`, the same the step's claim asks), for the run's
options. Orphans are resumed by id (free), shots never tried or failed for a passing reason are generated,
and shots that need a person (an ambiguous submit, inputs fal refused, a lost video) are listed with what
the person can do, never paid for again silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from hailuo_pipeline.catalog.decisions import (
    ClaimKind,
    ClaimOptions,
    Decision,
    SameInputs,
    describe_lease,
    heartbeat_seconds,
    is_silent,
)
from hailuo_pipeline.catalog.rows import RequestRow, Status, utcnow
from hailuo_pipeline.generation.errors import REPAY_LOST, RESUBMIT_AMBIGUOUS, RETRY_REFUSED
from hailuo_pipeline.redact import redact
from hailuo_pipeline.shots.manifest import TRUE_WORDS, Manifest, Shot
from hailuo_pipeline.shots.validation import quick_problem

# what a plain run pays for again only when asked: (bucket, the option, said when there are some, said when none)
PAID_AGAIN: tuple[tuple[str, str, Callable[[dict[str, RequestRow]], str], str], ...] = (
    (
        "ambiguous",
        "resubmit_ambiguous",
        lambda rows: (
            f"resubmitting {len(rows)} ambiguous shot(s); each may be a second charge, up to "
            f"${_usd(rows.values()):.2f} in all: {_names(rows)}"
        ),
        "--resubmit-ambiguous: no shot has an ambiguous submit",
    ),
    (
        "refused",
        "retry_refused",
        lambda rows: f"sending {len(rows)} refused shot(s) again, as asked: {_names(rows)}",
        "--retry-refused: no shot was refused by fal",
    ),
    (
        "lost",
        "repay_lost",
        lambda rows: f"paying again for {len(rows)} shot(s) whose paid video was lost, as asked: {_names(rows)}",
        "--repay-lost: no shot has a lost video",
    ),
    (
        "rejected",
        "retake_rejected",
        lambda rows: f"a new take of {len(rows)} rejected shot(s): {_names(rows)}",
        "--retake-rejected: no shot's latest take is rejected",
    ),
)


@dataclass
class ShotPlan:
    """The manifest's shots sorted by the judge's answer for a run with the plan's options (the same answer
    the step's claim then gets); `order` keeps their order."""

    options: ClaimOptions = field(default_factory=ClaimOptions)
    order: list[str] = field(default_factory=list)
    to_generate: dict[str, RequestRow | None] = field(default_factory=dict)  # the row they are paid again after
    to_resume: dict[str, RequestRow] = field(default_factory=dict)
    in_flight: dict[str, RequestRow] = field(default_factory=dict)  # leased to a process heard from lately
    silent: dict[str, RequestRow] = field(default_factory=dict)  # leased to a process that stopped answering
    ambiguous: dict[str, RequestRow] = field(default_factory=dict)
    refused: dict[str, RequestRow] = field(default_factory=dict)
    lost: dict[str, RequestRow] = field(default_factory=dict)
    edited: dict[str, RequestRow] = field(default_factory=dict)
    delivered: list[str] = field(default_factory=list)
    leases: dict[str, str] = field(default_factory=dict)  # shot -> its lease, said as it is

    def targets(self) -> list[str]:
        """The shots a plain run takes: what it may pay for, what it resumes by id, and what another process
        holds a lease on (the run waits for that process to deliver, or for its lease to end and then takes the
        request over: a restarted pod does not end with nothing delivered because a dead one held its shots)."""
        chosen = {*self.to_generate, *self.to_resume, *self.silent, *self.in_flight}
        return [s for s in self.order if s in chosen]

    def notes(self) -> list[str]:
        """What a plain run does and leaves, in the user's terms."""
        said: list[str] = []
        if self.to_resume:
            said.append(
                f"resuming {len(self.to_resume)} paid request(s) left behind by an earlier run, by their fal id "
                f"(nothing is submitted for them): {_names(self.to_resume)}"
            )
        for shot_id, row in list(self.silent.items())[:10]:
            said.append(
                f"{shot_id}: request {row.request_id or row.request_key} is {self.leases[shot_id]}; its owner has "
                "stopped answering, so this run waits for the lease to end and takes the request over (nothing "
                "is submitted)"
            )
        for shot_id, row in list(self.in_flight.items())[:10]:
            said.append(
                f"{shot_id}: request {row.request_id or row.request_key} is {self.leases[shot_id]}; this run waits "
                "for that process to deliver it, or takes it over if the lease ends (nothing is submitted)"
            )
        held = len(self.silent) + len(self.in_flight) - min(10, len(self.silent)) - min(10, len(self.in_flight))
        if held > 0:
            said.append(f"and {held} more shot(s) leased to other processes, waited for the same way")
        again: dict[str, dict[str, RequestRow]] = {"ambiguous": {}, "refused": {}, "lost": {}, "rejected": {}}
        for shot_id, before in self.to_generate.items():
            if before is not None and before.status is Status.AMBIGUOUS:
                again["ambiguous"][shot_id] = before
            elif before is not None and before.status is Status.FAILED and before.permanent_failure:
                again["refused"][shot_id] = before
            elif before is not None and before.status is Status.LOST:
                again["lost"][shot_id] = before
            elif before is not None and before.verdict == "reject":
                again["rejected"][shot_id] = before
        for bucket, option, some, none in PAID_AGAIN:
            if again[bucket]:
                said.append(some(again[bucket]))
            elif getattr(self.options, option):
                said.append(none)
        if self.ambiguous:
            said.append(
                f"{len(self.ambiguous)} shot(s) have a submit that never got fal's answer (fal may have billed "
                f"a job we cannot see): {_names(self.ambiguous)}. Look on the fal dashboard; "
                f"{RESUBMIT_AMBIGUOUS} submits them again, up to ${_usd(self.ambiguous.values()):.2f}"
            )
        if self.refused:
            reasons = ", ".join(f"{s} ({row.error_type})" for s, row in self.refused.items())
            said.append(
                f"{len(self.refused)} shot(s) were refused by fal for these same inputs: {reasons}. Change "
                f"their prompt or image, or use {RETRY_REFUSED}"
            )
        if self.lost:
            said.append(
                f"{len(self.lost)} paid video(s) were lost at fal (${_usd(self.lost.values()):.2f}, see "
                f"`hailuo report`): {_names(self.lost)}; {REPAY_LOST} pays for a new one"
            )
        if self.edited:
            said.append(
                f"{len(self.edited)} shot(s) were edited since their video was made: {_names(self.edited)}; "
                "name them (`hailuo materialize --shot ID`) or materialize them in the UI to pay for the new inputs"
            )
        if self.to_generate:
            said.append(f"generating {len(self.to_generate)} shot(s)")
        if not self.targets():
            said.append(f"nothing to run: {len(self.delivered)} shot(s) already delivered")
        return said


class Judge(Protocol):
    """The ledger's one judge, asked for many shots at once (RequestLedger.judge_shots)."""

    lease_seconds: float

    def judge_shots(self, same_inputs: Mapping[str, SameInputs], options: ClaimOptions) -> dict[str, Decision]: ...


def plan_shots(
    shot_ids: Iterable[str],
    manifest: Manifest,
    ledger: Judge,
    options: ClaimOptions | None = None,
    image_sha256: Callable[[Shot], str | None] | None = None,
    now: datetime | None = None,
) -> ShotPlan:
    """Sort `shot_ids` (registered shots of the manifest) by the judge's answer for a run with `options`."""
    options = options or ClaimOptions()
    image_sha256 = image_sha256 or local_image_sha256
    plan = ShotPlan(options)
    shots = [manifest.shots[s] for s in shot_ids if s in manifest.shots]
    decisions = ledger.judge_shots({shot.shot_id: same_inputs_as(shot, image_sha256) for shot in shots}, options)
    now = now or utcnow()
    heartbeat = heartbeat_seconds(ledger.lease_seconds)
    for shot in shots:
        shot_id = shot.shot_id
        plan.order.append(shot_id)
        decision = decisions[shot_id]
        row = decision.row
        if decision.kind is ClaimKind.SUBMIT:
            plan.to_generate[shot_id] = row
        elif decision.kind is ClaimKind.REUSE:
            plan.delivered.append(shot_id)
        else:
            assert row is not None
            if decision.kind is ClaimKind.WAIT:
                plan.leases[shot_id] = describe_lease(row, now, ledger.lease_seconds)
                bucket = plan.silent if is_silent(row, now, heartbeat) else plan.in_flight
            else:
                bucket = {
                    ClaimKind.RESUME: plan.to_resume,
                    ClaimKind.AMBIGUOUS: plan.ambiguous,
                    ClaimKind.REFUSED: plan.refused,
                    ClaimKind.LOST: plan.lost,
                    ClaimKind.REMAKE: plan.edited,
                }[decision.kind]
            bucket[shot_id] = row
    return plan


def same_inputs_as(shot: Shot, image_sha256: Callable[[Shot], str | None]) -> SameInputs:
    """Which of a shot's rows were sent with the inputs the manifest holds now (the planner's view of the
    fingerprint: a remote image is not fetched just to plan, so its URL stands for it)."""
    return lambda row: not inputs_changed(row, shot, image_sha256)


def inputs_changed(row: RequestRow, shot: Shot, image_sha256: Callable[[Shot], str | None]) -> bool:
    """Has the manifest row (or the local image file) changed since `row` was sent?"""
    sent = row.arguments
    optimizer = shot.prompt_optimizer.strip().lower() in TRUE_WORDS
    # The image is stored redacted, by whichever version of `redact` was current then: both sides pass the
    # one in use now, so a link stored with what is masked today is not taken for an edit.
    sent_image = sent.get("image")
    if (sent.get("prompt"), sent.get("duration"), sent.get("prompt_optimizer"), sent_image and redact(sent_image)) != (
        shot.prompt,
        shot.duration.strip(),
        optimizer,
        redact(shot.image),
    ):
        return True
    current = image_sha256(shot)
    return current is not None and current != sent.get("image_sha256")


_IMAGE_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime): a sensor's process plans every minute


def local_image_sha256(shot: Shot) -> str | None:
    """The local image's content hash; None for a URL (not fetched just to plan) or a missing file."""
    if shot.image_is_url:
        return None
    path: Path = shot.image_path()
    try:
        info = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    key = (str(path), info.st_size, info.st_mtime_ns)
    if key not in _IMAGE_HASHES:
        _IMAGE_HASHES[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _IMAGE_HASHES[key]


def _names(rows: Mapping[str, object], most: int = 10) -> str:
    names = list(rows)
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _usd(rows: Iterable[RequestRow]) -> Decimal:
    return sum((row.price_usd or Decimal(0) for row in rows), Decimal(0))


@dataclass(frozen=True)
class ShotRun:
    """One Dagster run: a range of the partition order, and the shots of it the run handles (`shots` is the
    step's `only`; the range's other partitions are left alone). Shots that are not next to each other in
    the order still share one run: a batch is not cut into runs by what lies between its shots."""

    start: str
    end: str
    shots: tuple[str, ...]

    def step_config(self, **config: object) -> dict[str, object]:
        """The `hailuo_shots` step's config for this run: `config`, plus `only` for a range of shots."""
        return {**config, "only": list(self.shots)} if self.start != self.end else dict(config)


def shot_runs(ordered: Sequence[str], selected: Iterable[str], max_size: int | None = None) -> list[ShotRun]:
    """The selected shots in partition order, in runs of at most `max_size` (None: all in one run)."""
    wanted = set(selected)
    chosen = [key for key in ordered if key in wanted]
    size = max_size or len(chosen) or 1
    return [
        ShotRun(chunk[0], chunk[-1], tuple(chunk))
        for chunk in (chosen[i : i + size] for i in range(0, len(chosen), size))
    ]


def shots_of_run(
    ordered: Sequence[str], partition: str | None, start: str | None, end: str | None, only: Iterable[str] = ()
) -> set[str]:
    """The shots a run handles: its one partition, or its range of the partition order (only those of `only`
    when it names some). A range whose ends are no longer registered names none."""
    if partition is not None:
        return {partition}
    position = {key: index for index, key in enumerate(ordered)}
    if start not in position or end not in position:
        return set()
    in_range = ordered[position[start] : position[end] + 1]
    wanted = set(only)
    return {key for key in in_range if key in wanted} if wanted else set(in_range)


def plan_shot_runs(
    ordered: Sequence[str], shot_ids: Sequence[str], manifest: Manifest, max_size: int | None = None
) -> list[ShotRun]:
    """Runs of inputs + video: by default one for the whole batch. A shot failing the cheap checks gets a run
    of its own: it will be refused, and the batch's run then stays green for the good shots."""
    doubtful = [s for s in shot_ids if s in manifest.shots and quick_problem(manifest.shots[s])]
    good = [s for s in shot_ids if s not in doubtful]
    return shot_runs(ordered, good, max_size) + shot_runs(ordered, doubtful, 1)


def stray_partitions(
    partitions: Iterable[str], manifest: Manifest, requested: Callable[[], Iterable[str]]
) -> tuple[list[str], list[str]]:
    """Partitions with no row in the manifest (added in the UI, or a row since deleted): those that may be
    removed (never requested: nothing paid, nothing to lose), and those kept because the ledger has requests
    for them (their money and videos stay visible; `hailuo report` lists them). `requested` (the shots with
    requests) is read only when there are such partitions: it reads the ledger."""
    stray = [p for p in partitions if p not in manifest.shots]
    if not stray:
        return [], []
    seen = set(requested())
    return [p for p in stray if p not in seen], [p for p in stray if p in seen]
