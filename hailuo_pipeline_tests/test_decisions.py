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
    ShotState,
    budget_refusal,
    decide_claim,
    is_orphan,
    next_take,
    owner_alive,
    shot_standing,
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


def decide(rows, options=None, me="me:2:b", run_id="run-2", alive=unknown):
    options = options or ClaimOptions()
    return decide_claim(rows, me=me, run_id=run_id, now=NOW, lease_seconds=LEASE, options=options, alive=alive)


CLAIMS = [
    # (case, rows newest first, options, expected kind, expire?)
    ("nothing yet", [], ClaimOptions(), ClaimKind.SUBMIT, False),
    ("live submitter elsewhere", [row(Status.RESERVED)], ClaimOptions(), ClaimKind.WAIT, False),
    ("live follower elsewhere", [row(Status.IN_QUEUE)], ClaimOptions(), ClaimKind.WAIT, False),
    ("my own row", [row(Status.IN_QUEUE, owner="me:2:b")], ClaimOptions(), ClaimKind.RESUME, False),
    ("silent follower", [row(Status.IN_PROGRESS, beat_ago=60)], ClaimOptions(), ClaimKind.RESUME, False),
    ("released row", [row(Status.SUBMITTED, owner=None)], ClaimOptions(), ClaimKind.RESUME, False),
    ("completed, not downloaded", [row(Status.COMPLETED, owner=None)], ClaimOptions(), ClaimKind.RESUME, False),
    ("dead submitter", [row(Status.RESERVED, beat_ago=60)], ClaimOptions(), ClaimKind.AMBIGUOUS, True),
    ("delivered", [row(Status.SUCCEEDED, owner=None)], ClaimOptions(), ClaimKind.REUSE, False),
    ("new take", [row(Status.SUCCEEDED, owner=None)], ClaimOptions(new_take=True), ClaimKind.SUBMIT, False),
    (
        "new take already paid in this run",
        [row(Status.SUCCEEDED, owner=None, run_id="run-2")],
        ClaimOptions(new_take=True),
        ClaimKind.REUSE,
        False,
    ),
    ("ambiguous", [row(Status.AMBIGUOUS, owner=None)], ClaimOptions(), ClaimKind.AMBIGUOUS, False),
    (
        "ambiguous, resubmit asked",
        [row(Status.AMBIGUOUS, owner=None)],
        ClaimOptions(resubmit_ambiguous=True),
        ClaimKind.SUBMIT,
        False,
    ),
    ("refused", [row(Status.FAILED, owner=None, permanent_failure=True)], ClaimOptions(), ClaimKind.REFUSED, False),
    (
        "refused, retry asked",
        [row(Status.FAILED, owner=None, permanent_failure=True)],
        ClaimOptions(retry_refused=True),
        ClaimKind.SUBMIT,
        False,
    ),
    ("transient failure", [row(Status.FAILED, owner=None)], ClaimOptions(), ClaimKind.SUBMIT, False),
    ("cancelled", [row(Status.CANCELLED, owner=None)], ClaimOptions(), ClaimKind.SUBMIT, False),
    ("lost", [row(Status.LOST, owner=None)], ClaimOptions(), ClaimKind.SUBMIT, False),
    (
        "refused after an older success",
        [row(Status.FAILED, owner=None, permanent_failure=True), row(Status.SUCCEEDED, owner=None)],
        ClaimOptions(),
        ClaimKind.REFUSED,
        False,
    ),
]


@pytest.mark.parametrize(("case", "rows", "options", "kind", "expire"), CLAIMS, ids=[c[0] for c in CLAIMS])
def test_claim_decision_table(case, rows, options, kind, expire):
    decision = decide(rows, options)
    assert decision.kind is kind, case
    assert (decision.expire is not None) is expire, case
    if kind is not ClaimKind.SUBMIT or rows:
        assert decision.row is rows[0]


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


STANDINGS = [
    ("never tried", [], ShotState.TO_DO),
    ("transient failure", [row(Status.FAILED, owner=None)], ShotState.TO_DO),
    ("followed", [row(Status.IN_QUEUE)], ShotState.IN_FLIGHT),
    ("orphaned", [row(Status.IN_QUEUE, beat_ago=60)], ShotState.ORPHANED),
    ("orphaned after delivery", [row(Status.IN_QUEUE, owner=None), row(Status.SUCCEEDED)], ShotState.ORPHANED),
    ("dead submitter", [row(Status.RESERVED, beat_ago=60)], ShotState.AMBIGUOUS),
    ("ambiguous", [row(Status.AMBIGUOUS, owner=None)], ShotState.AMBIGUOUS),
    ("delivered", [row(Status.SUCCEEDED, owner=None)], ShotState.DELIVERED),
    ("failed after delivery", [row(Status.FAILED, owner=None), row(Status.SUCCEEDED)], ShotState.DELIVERED),
    ("refused", [row(Status.FAILED, owner=None, permanent_failure=True)], ShotState.REFUSED),
    ("lost", [row(Status.LOST, owner=None)], ShotState.LOST),
]


@pytest.mark.parametrize(("case", "rows", "state"), STANDINGS, ids=[s[0] for s in STANDINGS])
def test_shot_standing_table(case, rows, state):
    assert shot_standing(rows, NOW, LEASE, unknown).state is state, case


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
