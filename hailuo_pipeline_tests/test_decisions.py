"""The ledger's decisions as tables: rows in, decision out. No database, no clock, no fal."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from hailuo_pipeline.catalog.decisions import (
    ClaimKind,
    ClaimOptions,
    budget_refusal,
    describe_lease,
    is_orphan,
    judge,
    next_take,
    owner_alive,
)
from hailuo_pipeline.catalog.rows import Budget, RequestRow, Status
from hailuo_pipeline.generation.planning import inputs_changed
from hailuo_pipeline.shots.manifest import Shot

NOW = datetime(2026, 11, 29, 12, 0, 0)
LEASE = 45.0


def row(status: Status, *, owner: str | None = "other:1:a", beat_ago: float = 1.0, **changes) -> RequestRow:
    base = RequestRow(
        request_key="k",
        request_id=None if status is Status.RESERVED else "fal-1",
        shot_id="s",
        take=1,
        fingerprint="fp",
        status=status,
        duration_seconds=6,
        price_usd=Decimal("0.19"),
        cost_usd=Decimal("0.19") if status in (Status.COMPLETED, Status.SUCCEEDED, Status.LOST) else Decimal(0),
        reserved_usd=Decimal(0),
        video_url=None,
        owner=owner,
        heartbeat_at=NOW - timedelta(seconds=beat_ago),
        run_id="run-1",
        created_at=NOW - timedelta(minutes=5),
        submitted_at=None,
        started_at=None,
        completed_at=None,
        possible_double_charge=False,
        permanent_failure=False,
        error_type=None,
        error_message=None,
        arguments_json=None,
        attempts=1,
    )
    return replace(base, **changes)


def unknown(_owner: str) -> bool | None:
    return None  # another host: only the lease tells


def decide(rows, options=None, me="me:2:b", run_id="run-2", alive=unknown, fingerprint="fp"):
    return judge(
        rows,
        same_inputs=lambda r: r.fingerprint == fingerprint,
        me=me,
        run_id=run_id,
        now=NOW,
        lease_seconds=LEASE,
        options=options or ClaimOptions(),
        alive=alive,
    )


OPTIONS = {
    "plain": ClaimOptions(),
    "new_take": ClaimOptions(new_take=True),
    "resubmit_ambiguous": ClaimOptions(resubmit_ambiguous=True),
    "retry_refused": ClaimOptions(retry_refused=True),
    "repay_lost": ClaimOptions(repay_lost=True),
    "retake_rejected": ClaimOptions(retake_rejected=True),
}
S, W, R, A, F, L, X = (
    ClaimKind.SUBMIT,
    ClaimKind.WAIT,
    ClaimKind.RESUME,
    ClaimKind.AMBIGUOUS,
    ClaimKind.REFUSED,
    ClaimKind.LOST,
    ClaimKind.REUSE,
)
# every status a shot's latest row can have, and what each option makes of it: (rows newest first, answers in
# the order of OPTIONS). Only its own option pays again for an ambiguous, refused or lost shot: a new take
# whose attempt was refused or lost is not paid again by asking for a new take.
STATUS_TABLE = {
    "never tried": ([], [S, S, S, S, S]),
    "reserved, submitter live elsewhere": ([row(Status.RESERVED)], [W] * 5),
    "reserved, submitter dead": ([row(Status.RESERVED, beat_ago=60)], [A, A, S, A, A]),
    "submitted, followed elsewhere": ([row(Status.SUBMITTED)], [W] * 5),
    "in progress, followed by me": ([row(Status.IN_PROGRESS, owner="me:2:b")], [R] * 5),
    "in progress, owner silent": ([row(Status.IN_PROGRESS, beat_ago=60)], [R] * 5),
    "completed, released": ([row(Status.COMPLETED, owner=None)], [R] * 5),
    "succeeded": ([row(Status.SUCCEEDED, owner=None)], [X, S, X, X, X]),
    "succeeded in this very run": ([row(Status.SUCCEEDED, owner=None, run_id="run-2")], [X] * 5),
    "ambiguous": ([row(Status.AMBIGUOUS, owner=None)], [A, A, S, A, A]),
    "refused": ([row(Status.FAILED, owner=None, permanent_failure=True)], [F, F, F, S, F]),
    "failed for a passing reason": ([row(Status.FAILED, owner=None)], [S] * 5),
    "cancelled": ([row(Status.CANCELLED, owner=None)], [S] * 5),
    "lost": ([row(Status.LOST, owner=None)], [L, L, L, L, S]),
    "lost after an older video": ([row(Status.LOST, owner=None), row(Status.SUCCEEDED, owner=None)], [X, L, X, X, X]),
    "refused after an older video": (
        [row(Status.FAILED, owner=None, permanent_failure=True), row(Status.SUCCEEDED, owner=None)],
        [X, F, X, X, X],
    ),
    "orphan of older inputs": ([row(Status.IN_QUEUE, beat_ago=60, fingerprint="old")], [R] * 5),
    "edited since its video": (
        [row(Status.SUCCEEDED, owner=None, fingerprint="old")],
        [ClaimKind.REMAKE, S, *[ClaimKind.REMAKE] * 3],
    ),
    "lost, then edited": ([row(Status.LOST, owner=None, fingerprint="old")], [S] * 5),
    "refused, then edited": ([row(Status.FAILED, owner=None, permanent_failure=True, fingerprint="old")], [S] * 5),
    # verdicts: only --retake-rejected pays for a new take of a rejected one, once per run (a sixth column)
    "succeeded, rejected": ([row(Status.SUCCEEDED, owner=None, verdict="reject")], [X, S, X, X, X, S]),
    "succeeded, approved": ([row(Status.SUCCEEDED, owner=None, verdict="approve")], [X, S, X, X, X, X]),
    "rejected, retaken in this very run": (
        [row(Status.SUCCEEDED, owner=None, verdict="reject", run_id="run-2")],
        [X] * 6,
    ),
    "rejected, its retake failed for a passing reason": (
        [row(Status.FAILED, owner=None), row(Status.SUCCEEDED, owner=None, verdict="reject")],
        [X, S, X, X, X, S],
    ),
    "rejected, its retake ambiguous": (
        [row(Status.AMBIGUOUS, owner=None), row(Status.SUCCEEDED, owner=None, verdict="reject")],
        [X, A, X, X, X, A],
    ),
}


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("case", list(STATUS_TABLE))
def test_the_judge_over_every_status_and_option(case, option):
    rows, answers = STATUS_TABLE[case]
    answers = answers if len(answers) == len(OPTIONS) else [*answers, answers[0]]  # no verdict: retake as plain
    decision = decide(rows, OPTIONS[option])
    assert decision.kind is answers[list(OPTIONS).index(option)], (case, option, decision)
    assert (decision.expire is not None) is (case == "reserved, submitter dead")
    if rows and decision.kind not in (ClaimKind.SUBMIT, ClaimKind.AMBIGUOUS):
        assert decision.row in rows


def test_a_lost_shot_is_paid_again_only_when_asked_whatever_else_is_asked():
    lost = [row(Status.LOST, owner=None)]
    for new_take in (False, True):
        for resubmit in (False, True):
            for retry in (False, True):
                options = ClaimOptions(new_take, resubmit, retry, repay_lost=False)
                assert decide(lost, options).kind is ClaimKind.LOST, options
    assert decide(lost, ClaimOptions(repay_lost=True)).kind is ClaimKind.SUBMIT


def test_a_lease_is_said_as_it_is():
    said = describe_lease(row(Status.IN_PROGRESS, owner="pod-7:12:ab", beat_ago=20), NOW, LEASE)
    assert said == "leased to pod-7:12:ab until 12:00:25 UTC (last heard 20 s ago)"


def test_a_dead_owner_on_this_host_is_known_at_once_and_a_live_one_is_not_doubted():
    host = socket.gethostname()
    dead, alive = f"{host}:999999999:x", f"{host}:{os.getpid()}:x"
    assert owner_alive(dead) is False and owner_alive(alive) is True and owner_alive("elsewhere:1:x") is None
    assert is_orphan(row(Status.IN_QUEUE, owner=dead), NOW, LEASE, owner_alive)
    assert not is_orphan(row(Status.IN_QUEUE, owner=alive), NOW, LEASE, owner_alive)
    assert decide([row(Status.IN_QUEUE, owner=dead)], alive=owner_alive).kind is ClaimKind.RESUME


def test_takes_number_paid_videos_only():
    failed = [row(Status.FAILED), row(Status.CANCELLED), row(Status.AMBIGUOUS)]
    assert next_take([]) == 1
    assert next_take(failed) == 1
    assert next_take([row(Status.SUCCEEDED), *failed]) == 2
    assert next_take([row(Status.LOST), row(Status.SUCCEEDED)]) == 3


@pytest.mark.parametrize(
    ("budget", "total", "today", "refused"),
    [
        (Budget(), "100", "100", None),
        (Budget(total_usd=Decimal("0.38")), "0.19", "0", None),
        (Budget(total_usd=Decimal("0.37")), "0.19", "0", "total"),
        (Budget(daily_usd=Decimal("0.38")), "5", "0.19", None),
        (Budget(daily_usd=Decimal("0.30")), "0", "0.19", "daily"),
    ],
)
def test_budget_refusal_table(budget, total, today, refused):
    found = budget_refusal(budget, Decimal(total), Decimal(today), Decimal("0.19"))
    assert (found is None) if refused is None else (f"the {refused} budget" in found)


def test_a_refused_link_stored_before_its_signature_was_masked_is_not_an_edit(tmp_path):
    """Rows stored by earlier versions keep a presigned link's signature (masked now): the same link is the
    same input, so the refused shot is not retried for it; another object, or a changed prompt, is an edit."""
    link = "https://b.s3.amazonaws.com/shots/a.jpg?X-Amz-Credential=AKIAIOSFODNN7&X-Amz-Signature=8f1c0ffee5ab1e"
    sent = {"prompt": "p", "duration": "6", "prompt_optimizer": True, "image": link, "image_sha256": "abc"}
    refused = row(Status.FAILED, owner=None, permanent_failure=True, arguments_json=json.dumps(sent))

    def shot(image: str, prompt: str = "p") -> Shot:
        return Shot("s", image, prompt, "6", "true", 2, tmp_path)

    assert not inputs_changed(refused, shot(link), lambda _shot: None)
    assert not inputs_changed(refused, shot(link.replace("8f1c0ffee5ab1e", "re-signed")), lambda _shot: None)
    assert inputs_changed(refused, shot(link.replace("a.jpg", "b.jpg")), lambda _shot: None)
    assert inputs_changed(refused, shot(link, prompt="q"), lambda _shot: None)
