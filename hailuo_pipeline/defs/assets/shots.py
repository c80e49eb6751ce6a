"""hailuo_video: one paid Hailuo 2.3 Fast video per shot, delivered, verified and recorded.

One step makes a batch of shots' inputs and videos (`hailuo_shots`): each shot is validated, its
source_image and prompt are materialized, and its request is submitted at once, while the other shots
wait at fal. Two steps would make the whole batch's validation and bookkeeping wait before the first
request (measured: about 7 s for 200 shots, see docs/benchmarks.md)."""

import asyncio
import base64
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    AssetsDefinition,
    AssetSpec,
    Backoff,
    Config,
    DagsterExecutionInterruptedError,
    Failure,
    Jitter,
    MetadataValue,
    RetryPolicy,
    multi_asset,
)
from pydantic import Field

from hailuo_pipeline.catalog.storage import CatalogUnavailableError
from hailuo_pipeline.defs.assets.checks import (
    COSTS_MATCH_PRICE_TABLE,
    NO_PAID_VIDEO_LOST,
    VIDEO_CHECKS,
    VIDEOS_MATCH_REQUESTS,
    costs_match_price_table,
    no_paid_video_lost,
    videos_match_requests,
)
from hailuo_pipeline.defs.assets.events import InstanceWriter, shots_failure
from hailuo_pipeline.defs.assets.formats import dollars
from hailuo_pipeline.defs.assets.inputs import (
    image_metadata,
    prompt,
    prompt_fields_metadata,
    prompt_metadata,
    source_image,
)
from hailuo_pipeline.defs.assets.video_metadata import shot_metadata
from hailuo_pipeline.defs.partitions import ASSET_GROUP, shots_backfill_policy, shots_partitions
from hailuo_pipeline.defs.resources import BudgetResource, CatalogResource, FalResource, ShotsResource
from hailuo_pipeline.fal.config import FalKeyError, checked_fal_key
from hailuo_pipeline.generation.errors import PermanentShotFailure, ShotFailure
from hailuo_pipeline.generation.interrupts import BatchStopped, until_stopped
from hailuo_pipeline.generation.outcome import GenerationOptions, ShotOutcome
from hailuo_pipeline.generation.runner import ShotGenerator
from hailuo_pipeline.review.contact_sheet import MAX_TILES, Tile, contact_sheet
from hailuo_pipeline.settings import Settings
from hailuo_pipeline.shots.manifest import Shot
from hailuo_pipeline.shots.remote import RemotePolicy
from hailuo_pipeline.shots.validation import ShotInputError, ShotRequest, validate_prompt_fields, validate_shot
from hailuo_pipeline.video.store import VideoStoreError


def video_retry_policy(delay_seconds: float) -> RetryPolicy:
    """Dagster's retries sit on top of fal_client's own (at most 10 quick HTTP attempts per call), so the
    total stays bounded: 3 step retries, 10 s growing to 40 s apart by default, each resuming rather than
    repaying, and refusing what fal refused before."""
    return RetryPolicy(max_retries=3, delay=delay_seconds, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)


class ShotsConfig(Config):
    new_take: bool = Field(
        default=False,
        description="Pay for a new video even if a verified one exists (the old one stays recorded)",
    )
    resubmit_ambiguous: bool = Field(
        default=False,
        description="Submit again after a submit whose answer never came (flagged as a possible double charge)",
    )
    retry_refused: bool = Field(
        default=False,
        description="Send inputs again that fal refused for good (content policy, validation); fal may bill again",
    )
    retake_rejected: bool = Field(
        default=False,
        description="Pay for one new take of each shot whose latest take was rejected (hailuo verdict)",
    )
    repay_lost: bool = Field(
        default=False,
        description="Pay again for shots whose paid video was lost at fal (billed, never delivered)",
    )
    resume_only: bool = Field(
        default=False,
        description="Only deliver paid requests left behind by earlier runs (by their fal id); never submit",
    )
    concurrency: int | None = Field(
        default=None, description="Shots in flight at once within this step (default: HAILUO_CONCURRENCY, 16)"
    )
    only: list[str] = Field(
        default=[],
        description="The shots of the run's partition range to handle (empty: all); sensors and `hailuo "
        "materialize` set it, so one run carries a batch whose shots are not next to each other",
    )


hailuo_video = AssetSpec(
    "hailuo_video",
    deps=[source_image, prompt],
    partitions_def=shots_partitions,
    group_name=ASSET_GROUP,
    kinds={"fal", "video", "duckdb"},
    code_version="1",
    skippable=True,  # each shot's materialization is logged as it is delivered, not returned at the end
    description="Hailuo 2.3 Fast (Standard, 768p) image-to-video on fal: never paid twice, never lost.",
)


def build_hailuo_shots(retry_delay_seconds: float) -> AssetsDefinition:
    """The step, with its retry policy from settings (read when the definitions are built)."""
    return multi_asset(
        name="hailuo_shots",
        specs=[source_image, prompt, hailuo_video],
        check_specs=VIDEO_CHECKS,
        can_subset=True,
        partitions_def=shots_partitions,
        backfill_policy=shots_backfill_policy,
        retry_policy=video_retry_policy(retry_delay_seconds),
        pool="fal",
        description="Validate each shot, then pay for its video once: many shots per run, each its own partition.",
    )(make_shots)


STRAY_FIX = (
    "add a row for the shot to shots.csv (or fix its row); or remove the partition: `hailuo sync --prune`, or "
    "let shots_manifest_sensor remove partitions that have no row and were never requested"
)


def make_shots(
    context: AssetExecutionContext,
    config: ShotsConfig,
    fal: FalResource,
    catalog: CatalogResource,
    shots: ShotsResource,
    budget: BudgetResource,
) -> Iterator[AssetCheckResult]:
    selected = context.selected_asset_keys
    keys = list(context.partition_keys) if selected else []
    if config.only:
        wanted = set(config.only)
        keys = [key for key in keys if key in wanted]
    found, missing = shots.select(keys)
    failed: dict[str, ShotFailure] = {
        shot_id: PermanentShotFailure(shot_id, reason, STRAY_FIX) for shot_id, reason in missing.items()
    }
    writes = InstanceWriter(context)
    # a video is never paid for without its inputs: selecting it materializes them in the same step
    inputs = {source_image.key, prompt.key} if hailuo_video.key in selected else selected - {hailuo_video.key}

    def inputs_valid(request: ShotRequest) -> None:
        for spec, metadata in ((source_image, image_metadata), (prompt, prompt_metadata)):
            if spec.key in inputs:
                writes.materialize(spec.key, request.shot_id, *metadata(request))

    def input_refused(shot: Shot, failure: ShotFailure) -> None:
        """A refused image leaves a good prompt (checked first): that one is materialized all the same."""
        if failure.bad_input == "image" and prompt.key in inputs:
            writes.materialize(prompt.key, shot.shot_id, *prompt_fields_metadata(shot, *validate_prompt_fields(shot)))

    delivered: list[ShotOutcome] = []
    review_url = Settings.from_env().review_url

    def video_done(outcome: ShotOutcome) -> None:
        """As each shot finishes: its materialization now (overlapping the wait for others), or its failure."""
        if outcome.ok:
            writes.materialize(hailuo_video.key, outcome.shot_id, shot_metadata(outcome, review_url))
            delivered.append(outcome)
        elif outcome.failure is not None:
            failed[outcome.shot_id] = outcome.failure
            input_refused(found[outcome.shot_id], outcome.failure)
            writes.error(str(outcome.failure))
        elif outcome.skipped:
            writes.info(f"{outcome.shot_id}: {outcome.skipped}")

    if hailuo_video.key in selected:
        try:
            checked_fal_key(fal.key)
        except FalKeyError as exc:  # before anything is reserved: nothing can be sent with this key
            raise Failure(description=str(exc), allow_retries=False) from None
        ledger, videos = catalog.ledger(), shots.videos()
        try:  # where the money is recorded and the videos kept must both work before anything is paid
            ledger.check_reachable()
            videos.check_writable()
        except (CatalogUnavailableError, VideoStoreError) as exc:  # their messages are redacted already
            raise Failure(description=str(exc), allow_retries=False) from None
        generator = ShotGenerator(
            fal.settings(),
            ledger,
            videos,
            writes,
            run_id=context.run_id,
            options=GenerationOptions(
                new_take=config.new_take,
                resubmit_ambiguous=config.resubmit_ambiguous,
                retry_refused=config.retry_refused,
                repay_lost=config.repay_lost,
                retake_rejected=config.retake_rejected,
                resume_only=config.resume_only,
                budget=budget.budget(),
                remote_images=shots.remote_images(),
                max_in_flight=fal.max_in_flight,
            ),
        )
        concurrency = config.concurrency or fal.concurrency
        generate_all(generator, list(found.values()), concurrency, writes, inputs_valid, video_done)
    else:
        refused = validate_inputs(list(found.values()), inputs_valid, shots.remote_images())
        for shot_id, failure in refused.items():
            input_refused(found[shot_id], failure)
        failed.update(refused)
    writes.drain()
    if sheet := batch_contact_sheet(delivered, context.run_id, review_url):
        context.log_event(sheet)
    checks = context.selected_asset_check_keys
    # a run that made no video has none to check: skipped, not passed (a green row there read as a pass). The
    # catalog-wide checks do have something to check (a paid video lost in this very run among it)
    if VIDEOS_MATCH_REQUESTS.key in checks and (delivered or hailuo_video.key not in selected):
        yield videos_match_requests(catalog, shots.videos(), context.run_id if hailuo_video.key in selected else None)
    if COSTS_MATCH_PRICE_TABLE.key in checks:
        yield costs_match_price_table(catalog)
    if NO_PAID_VIDEO_LOST.key in checks:
        yield no_paid_video_lost(catalog)
    if failed:
        for failure in (failed[shot_id] for shot_id in sorted(failed)):
            writes.mark_failed(failed_assets(failure, set(selected) | inputs), failure)
        raise shots_failure(failed, len(keys))


def batch_contact_sheet(delivered: list[ShotOutcome], run_id: str, review_url: str) -> AssetObservation | None:
    """The batch's new videos at a glance, as one observation of `hailuo_video` (none without a new video)."""
    tiles = [
        Tile(o.poster, o.shot_id, o.request.take, o.video.duration_seconds, float(o.request.price_usd))
        for o in sorted(delivered, key=lambda o: o.shot_id)
        if o.poster and o.video is not None and o.request is not None
    ]
    if not tiles:
        return None
    encoded = base64.b64encode(contact_sheet(tiles)).decode()
    return AssetObservation(
        hailuo_video.key,
        description=f"contact sheet of run {run_id}",
        metadata={
            "contact_sheet": MetadataValue.md(
                f"![contact sheet of {len(tiles)} video(s)](data:image/jpeg;base64,{encoded})"
            ),
            "watch": MetadataValue.url(f"{review_url.rstrip('/')}/runs/{run_id}"),  # every new video, playing
            "videos": len(tiles),
            "cost_usd": dollars(sum(t.cost_usd for t in tiles)),
            "shots": MetadataValue.md(", ".join(t.shot_id for t in tiles[:MAX_TILES])),
        },
    )


def failed_assets(failure: ShotFailure, keys: set[AssetKey]) -> set[AssetKey]:
    """What a shot's failure fails: a refused input fails itself and the video, not the other input."""
    good = {"image": prompt.key, "prompt": source_image.key}.get(failure.bad_input or "")
    return keys - {good} if good else keys


def validate_inputs(
    found: list[Shot], on_valid: Callable[[ShotRequest], None], remote: RemotePolicy
) -> dict[str, ShotFailure]:
    """The inputs-only selection: every shot validated (decoding releases the GIL), no request."""

    def check(shot: Shot) -> ShotRequest | ShotInputError:
        try:
            return validate_shot(shot, remote)
        except ShotInputError as exc:
            return exc

    failed: dict[str, ShotFailure] = {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        for shot, result in zip(found, pool.map(check, found), strict=True):
            if isinstance(result, ShotInputError):
                failed[shot.shot_id] = PermanentShotFailure(shot.shot_id, result.problem, result.fix, result.bad_input)
            else:
                on_valid(result)
    return failed


def generate_all(
    generator: ShotGenerator,
    todo: list[Shot],
    concurrency: int,
    writes: InstanceWriter,
    on_valid: Callable[[ShotRequest], None],
    on_done: Callable[[ShotOutcome], None],
) -> None:
    """Run the batch; on a terminated run, cancel its requests at fal (paid, completed ones are delivered)."""

    async def generate() -> list[ShotOutcome]:
        async with generator:
            return await generator.generate_many(todo, concurrency, on_done=on_done, on_valid=on_valid)

    async def cancel() -> list[str]:
        async with generator:
            return await generator.cancel_in_flight()

    try:
        asyncio.run(until_stopped(generate()))
    except (BatchStopped, DagsterExecutionInterruptedError, KeyboardInterrupt) as interrupt:
        cancelled = asyncio.run(cancel())
        writes.drain()
        # Not re-raised: Dagster answers an interrupt with the retry policy, and a retry of cancelled
        # requests would pay again. A terminated run ends here.
        raise Failure(
            description=f"run terminated: cancelled {len(cancelled)} fal request(s) at fal: {', '.join(cancelled)}",
            allow_retries=False,
        ) from interrupt
