"""Settling what the ledger alone cannot decide, from fal's own request history: an ambiguous submit (its answer
never came) and a lost result (fal no longer served it). Runs on the default paths (`hailuo materialize`, the
orphan sensor, the sweep) before anything is planned, so `ambiguous` needs a person only in the rare case.

- Exactly one unclaimed job in fal's history with the arguments the submit sent (matched by their digest): the
  row adopts its id and is resumed by id like any request fal has; nothing is submitted again.
- None, once fal's listing has had time to show it (HAILUO_FAL_HISTORY_MARGIN_SECONDS after the submit): the
  submit never reached fal; the reservation is released at $0, and the plain run pays for the shot once.
- Before that: it is said when it will be settled; nothing is submitted.
- Several: it stays ambiguous, naming them, for a person.
- A lost result whose output fal's history still holds is completed again with that output, and downloaded
  under the usual rules (the fetch policy among them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from hailuo_pipeline.catalog.ledger import RequestLedger
from hailuo_pipeline.catalog.pricing import check_prices_with_fal
from hailuo_pipeline.catalog.rows import RequestRow
from hailuo_pipeline.fal.platform import HistoryItem, PlatformClient, PlatformError
from hailuo_pipeline.fal.replies import BadReply, checked_video
from hailuo_pipeline.generation.submit import arguments_digest
from hailuo_pipeline.model_limits import ENDPOINT_ID
from hailuo_pipeline.settings import Settings

CLOCK_SKEW = timedelta(seconds=60)  # between the ledger's clock and fal's
SEND_WINDOW = timedelta(minutes=10)  # from a reservation to its submit reaching fal (an upload may come first)


@dataclass(frozen=True)
class Settled:
    shot_id: str
    request_key: str
    outcome: str  # adopted, released, waiting, several, recovered, not_held, unreachable
    said: str


def settle_on_default_path(ledger: RequestLedger) -> list[Settled]:
    """What `hailuo materialize`, the orphan sensor and the sweep run first: a dead submitter's reservation is
    recorded ambiguous (fal may have a job), then what fal's records settle is settled, with the key and settings
    of this process (no FAL_KEY: nothing to ask fal with, nothing settled)."""
    recorded = [
        Settled(row.shot_id, row.request_key, "recorded", f"{row.shot_id}: a submit never got fal's answer (its "
                "process stopped first); recorded ambiguous ({row.request_key})")
        for row in ledger.record_dead_reservations()
    ]  # fmt: skip
    settings = Settings.from_env()
    platform = settings.platform()
    if platform is None:
        return recorded
    return recorded + settle_with_fal(ledger, platform, ENDPOINT_ID, settings.history_margin_seconds)


def prices_from_fal(ledger: RequestLedger, endpoint_id: str) -> list[str]:
    """Before a batch's first reservation: the account's price at fal, recorded when it differs (no FAL_KEY:
    the price table's)."""
    platform = Settings.from_env().platform()
    return [] if platform is None else check_prices_with_fal(ledger.store, platform.brief(), endpoint_id)


def settle_with_fal(
    ledger: RequestLedger, platform: PlatformClient, endpoint_id: str, margin_seconds: float
) -> list[Settled]:
    """Settle the ledger's ambiguous submits and lost results from fal's request history; what was done, in words.
    fal's Platform API unreachable or answering what does not parse: nothing changes, and that is said."""
    ambiguous, lost = ledger.ambiguous_to_settle(), ledger.lost_to_recover()
    if not ambiguous and not lost:
        return []
    try:
        return _settle_ambiguous(ledger, platform, endpoint_id, ambiguous, margin_seconds) + _recover_lost(
            ledger, platform, endpoint_id, lost
        )
    except PlatformError as exc:
        rows = [*ambiguous, *lost]
        return [Settled(r.shot_id, r.request_key, "unreachable", f"{r.shot_id}: not settled now ({exc})") for r in rows]


def _settle_ambiguous(
    ledger: RequestLedger, platform: PlatformClient, endpoint_id: str, rows: list[RequestRow], margin_seconds: float
) -> list[Settled]:
    if not rows:
        return []
    now = ledger.now()
    margin = timedelta(seconds=margin_seconds)
    start = min(r.created_at for r in rows) - CLOCK_SKEW
    end = min(now, max(r.created_at for r in rows) + SEND_WINDOW) + CLOCK_SKEW
    history = [i for i in platform.requests(endpoint_id, start, end, payloads=True) if isinstance(i.json_input, dict)]
    held = ledger.held_request_ids([i.request_id for i in history]) if history else set()
    settled: list[Settled] = []
    for row in rows:
        sent = row.created_at
        nearby = [
            item
            for item in history
            if item.request_id not in held and sent - CLOCK_SKEW <= item.sent_at <= sent + SEND_WINDOW + CLOCK_SKEW
        ]
        candidates = [item for item in nearby if arguments_digest(item.json_input) == row.arguments_sha256]
        # a job sent then that matches no submit of ours could be this one, echoed otherwise: never released over it
        others = [item for item in nearby if item not in candidates]
        settled.append(
            _settle_one(ledger, row, candidates or others, bool(candidates), now >= sent + margin, sent + margin)
        )
        if len(candidates) == 1:
            held.add(candidates[0].request_id)
    return settled


def _settle_one(
    ledger: RequestLedger,
    row: RequestRow,
    candidates: list[HistoryItem],
    matched: bool,
    listed_long_enough: bool,
    after: datetime,
) -> Settled:
    """`candidates`: the unclaimed jobs with the submit's arguments (`matched`), or else those sent around then."""
    shot, key = row.shot_id, row.request_key
    if candidates and not matched:
        ids = ", ".join(c.request_id for c in candidates[:10])
        said = (
            f"{shot}: no job in fal's request history has the arguments the submit of "
            f"{row.created_at:%Y-%m-%d %H:%M:%S} UTC sent, but {len(candidates)} job(s) sent around then belong to "
            f"no row of the ledger ({ids}); left ambiguous for a person: look them up on the fal dashboard"
        )
        return Settled(shot, key, "unmatched", said)
    when = f"{row.created_at:%Y-%m-%d %H:%M:%S} UTC"
    if len(candidates) == 1:
        found = candidates[0].request_id
        said = (
            f"{shot}: the submit of {when} whose answer never came is fal's request {found} (found in fal's request "
            "history by the arguments it sent); it is resumed by id, nothing is submitted again"
        )
        done = ledger.adopt(key, found, f"settled from fal's request history: fal's request {found}")
        return Settled(shot, key, "adopted" if done else "moved", said)
    if len(candidates) > 1:
        ids = ", ".join(c.request_id for c in candidates)
        said = (
            f"{shot}: fal's request history holds {len(candidates)} jobs with the arguments the submit of {when} "
            f"sent ({ids}); left ambiguous for a person: look them up on the fal dashboard"
        )
        return Settled(shot, key, "several", said)
    if not listed_long_enough:
        said = (
            f"{shot}: the submit of {when} whose answer never came is settled from fal's request history after "
            f"{after:%H:%M:%S} UTC (fal's listing may lag; HAILUO_FAL_HISTORY_MARGIN_SECONDS); nothing is submitted "
            "for it until then"
        )
        return Settled(shot, key, "waiting", said)
    reason = (
        f"fal's request history holds no job with the arguments the submit of {when} sent: the submit never "
        f"reached fal, so its ${row.price_usd:.2f} reservation is released"
    )
    done = ledger.release_unsent(key, reason)
    return Settled(shot, key, "released" if done else "moved", f"{shot}: {reason}; the shot may be paid for once")


def _recover_lost(
    ledger: RequestLedger, platform: PlatformClient, endpoint_id: str, rows: list[RequestRow]
) -> list[Settled]:
    settled: list[Settled] = []
    now = ledger.now()
    for row in rows:
        assert row.request_id is not None
        items = platform.requests(
            endpoint_id, row.created_at - CLOCK_SKEW, now + CLOCK_SKEW, request_id=row.request_id, payloads=True
        )
        item = next((i for i in items if i.request_id == row.request_id and i.succeeded), None)
        try:
            video = checked_video(item.json_output) if item is not None else None
        except BadReply:
            video = None
        if item is None or video is None:
            ledger.mark_history_checked(row.request_key)
            said = f"{row.shot_id}: fal's request history no longer holds the video of lost request {row.request_id}"
            settled.append(Settled(row.shot_id, row.request_key, "not_held", said))
            continue
        detail = f"recovered from fal's request history: {video.url}"
        done = ledger.recover_lost(row.request_key, item.json_output, video.url, detail)
        said = (
            f"{row.shot_id}: fal's request history still holds the video of lost request {row.request_id}; it is "
            "downloaded now under the usual rules (nothing is paid again)"
        )
        settled.append(Settled(row.shot_id, row.request_key, "recovered" if done else "moved", said))
    return settled
