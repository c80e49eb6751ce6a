"""Which shots a default run takes, and what to tell the user about the rest.

Shared by `hailuo materialize`, the nightly sweep and the orphan sensor, so every default path treats a
shot the same way: orphans are resumed by id (free), shots never tried or failed for a passing reason
are generated, and shots that need a person (an ambiguous submit, inputs fal refused, a lost video) are
listed with what the person can do, never paid for again silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from hailuo_pipeline.catalog.decisions import ShotStanding, ShotState
from hailuo_pipeline.catalog.rows import RequestRow
from hailuo_pipeline.generation.errors import RESUBMIT_AMBIGUOUS, RETRY_REFUSED
from hailuo_pipeline.redact import redact
from hailuo_pipeline.shots.manifest import TRUE_WORDS, Manifest, Shot
from hailuo_pipeline.shots.validation import quick_problem


@dataclass
class ShotPlan:
    """The manifest's shots sorted by what a default run does with them; `order` keeps their order."""

    order: list[str] = field(default_factory=list)
    to_generate: list[str] = field(default_factory=list)
    to_resume: dict[str, RequestRow] = field(default_factory=dict)
    in_flight: dict[str, RequestRow] = field(default_factory=dict)
    ambiguous: dict[str, RequestRow] = field(default_factory=dict)
    refused: dict[str, RequestRow] = field(default_factory=dict)
    lost: dict[str, RequestRow] = field(default_factory=dict)
    delivered: list[str] = field(default_factory=list)

    def targets(self, *, resubmit_ambiguous: bool = False, retry_refused: bool = False) -> list[str]:
        chosen = {*self.to_generate, *self.to_resume}
        if resubmit_ambiguous:
            chosen |= set(self.ambiguous)
        if retry_refused:
            chosen |= set(self.refused)
        return [s for s in self.order if s in chosen]

    def notes(self, *, resubmit_ambiguous: bool = False, retry_refused: bool = False) -> list[str]:
        """What a plain run does and leaves, in the user's terms."""
        said: list[str] = []
        if self.to_resume:
            said.append(
                f"resuming {len(self.to_resume)} paid request(s) left behind by an earlier run, by their fal id "
                f"(nothing is submitted for them): {_names(self.to_resume)}"
            )
        if self.in_flight:
            owners = sorted({row.owner or "?" for row in self.in_flight.values()})
            said.append(
                f"{len(self.in_flight)} shot(s) are being followed by another live process ({', '.join(owners)}), "
                f"left to it: {_names(self.in_flight)}"
            )
        if self.ambiguous:
            money = _usd(self.ambiguous.values())
            if resubmit_ambiguous:
                said.append(
                    f"resubmitting {len(self.ambiguous)} ambiguous shot(s); each may be a second charge, up to "
                    f"${money:.2f} in all: {_names(self.ambiguous)}"
                )
            else:
                said.append(
                    f"{len(self.ambiguous)} shot(s) have a submit that never got fal's answer (fal may have billed "
                    f"a job we cannot see): {_names(self.ambiguous)}. Look on the fal dashboard; "
                    f"{RESUBMIT_AMBIGUOUS} submits them again, up to ${money:.2f}"
                )
        elif resubmit_ambiguous:
            said.append("--resubmit-ambiguous: no shot has an ambiguous submit")
        if self.refused:
            reasons = ", ".join(f"{s} ({row.error_type})" for s, row in self.refused.items())
            if retry_refused:
                said.append(f"sending {len(self.refused)} refused shot(s) again, as asked: {reasons}")
            else:
                said.append(
                    f"{len(self.refused)} shot(s) were refused by fal for these same inputs: {reasons}. Change "
                    f"their prompt or image, or use {RETRY_REFUSED}"
                )
        elif retry_refused:
            said.append("--retry-refused: no shot was refused by fal")
        if self.lost:
            said.append(
                f"{len(self.lost)} paid video(s) were lost at fal (${_usd(self.lost.values()):.2f}, see "
                f"`hailuo report`): {_names(self.lost)}; `hailuo materialize --shot ID` pays for a new one"
            )
        if self.to_generate:
            said.append(f"generating {len(self.to_generate)} shot(s)")
        if not self.targets(resubmit_ambiguous=resubmit_ambiguous, retry_refused=retry_refused):
            said.append(f"nothing to run: {len(self.delivered)} shot(s) already delivered")
        return said


def plan_shots(
    shot_ids: Iterable[str],
    manifest: Manifest,
    standings: dict[str, ShotStanding],
    image_sha256: Callable[[Shot], str | None] | None = None,
) -> ShotPlan:
    """Sort `shot_ids` (registered shots of the manifest) by their standing in the ledger."""
    image_sha256 = image_sha256 or local_image_sha256
    plan = ShotPlan()
    for shot_id in shot_ids:
        shot = manifest.shots.get(shot_id)
        if shot is None:
            continue
        plan.order.append(shot_id)
        standing = standings.get(shot_id) or ShotStanding(ShotState.TO_DO)
        row = standing.row
        state = standing.state
        if state is ShotState.REFUSED and row is not None and inputs_changed(row, shot, image_sha256):
            state = ShotState.TO_DO
        if state is ShotState.TO_DO:
            plan.to_generate.append(shot_id)
        elif state is ShotState.DELIVERED:
            plan.delivered.append(shot_id)
        else:
            assert row is not None
            bucket = {
                ShotState.ORPHANED: plan.to_resume,
                ShotState.IN_FLIGHT: plan.in_flight,
                ShotState.AMBIGUOUS: plan.ambiguous,
                ShotState.REFUSED: plan.refused,
                ShotState.LOST: plan.lost,
            }[state]
            bucket[shot_id] = row
    return plan


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


def local_image_sha256(shot: Shot) -> str | None:
    """The local image's content hash; None for a URL (not fetched just to plan) or a missing file."""
    if shot.image_is_url:
        return None
    path: Path = shot.image_path()
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _names(rows: dict[str, RequestRow], most: int = 10) -> str:
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
