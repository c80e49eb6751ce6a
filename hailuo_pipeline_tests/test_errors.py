"""The one mapping from fal's answers to shot failures, as a table: every error type and HTTP status the
pipeline tells apart, whether trying again can help, whether the inputs are remembered as refused, and
that each failure carries a cause and a fix that names what the user can change."""

from __future__ import annotations

import pytest

from hailuo_pipeline.generation.errors import (
    PERMANENT_ERROR_TYPES,
    TRANSIENT_ERROR_TYPES,
    PermanentShotFailure,
    TransientShotFailure,
    describe_fal_detail,
    failure_for_http,
    fix_for_budget,
    fix_for_refusal,
    is_input_refusal,
    is_permanent_error,
)

HTTP = [
    # status, error_type, failure class, refusal remembered, a word the fix must hold
    (400, None, PermanentShotFailure, True, "--retry-refused"),
    (401, None, PermanentShotFailure, False, "FAL_KEY"),
    (402, None, PermanentShotFailure, False, "balance"),
    (403, None, PermanentShotFailure, False, "FAL_KEY"),
    (404, None, PermanentShotFailure, False, "fal's answer"),
    (408, None, TransientShotFailure, False, "retry policy"),
    (409, None, TransientShotFailure, False, "retry policy"),
    (422, None, PermanentShotFailure, True, "--retry-refused"),
    (422, "content_policy_violation", PermanentShotFailure, True, "content policy"),
    (429, None, TransientShotFailure, False, "retry policy"),
    (500, None, TransientShotFailure, False, "retry policy"),
    (502, None, TransientShotFailure, False, "retry policy"),
    (503, "runner_disconnected", TransientShotFailure, False, "retry policy"),
    (504, None, TransientShotFailure, False, "retry policy"),
]


@pytest.mark.parametrize(("status", "error_type", "kind", "refusal", "word"), HTTP)
def test_http_answers_map_to_one_failure_each(status, error_type, kind, refusal, word):
    failure = failure_for_http("s1", status, error_type, {"detail": "nope"}, "submitting")
    assert type(failure) is kind
    assert is_input_refusal(error_type, status) is refusal
    assert f"HTTP {status}" in failure.cause and "nope" in failure.cause and "'s1'" not in failure.cause
    assert word in failure.fix
    assert failure.as_metadata() == {
        "cause": failure.cause,
        "fix": failure.fix,
        "retryable": kind is TransientShotFailure,
    }


@pytest.mark.parametrize("error_type", sorted(TRANSIENT_ERROR_TYPES))
def test_fal_infrastructure_errors_are_worth_another_try(error_type):
    assert not is_permanent_error(error_type, 422)  # the type wins over the status
    assert not is_input_refusal(error_type, None)


@pytest.mark.parametrize("error_type", sorted(PERMANENT_ERROR_TYPES))
def test_refusals_of_the_inputs_are_remembered_and_say_how_to_insist(error_type):
    assert is_permanent_error(error_type, 500) and is_input_refusal(error_type, None)
    fix = fix_for_refusal(error_type)
    assert "--retry-refused" in fix and "retry_refused: true" in fix


@pytest.mark.parametrize(
    ("limit", "variable"), [("total", "HAILUO_TOTAL_BUDGET_USD"), ("daily", "HAILUO_DAILY_BUDGET_USD")]
)
def test_budget_fixes_name_the_variable_and_the_resource_field(limit, variable):
    fix = fix_for_budget(limit)
    assert variable in fix and f"{limit}_usd" in fix


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        ("plain text", "plain text"),
        ({"detail": [{"loc": ["body", "prompt"], "msg": "too long", "type": "x"}]}, "prompt: too long"),
        ({"detail": [{"loc": ["body"], "msg": "bad", "type": "x"}, "other"]}, "input: bad; other"),
        ("x" * 2000, "x" * 500),
    ],
)
def test_fal_error_bodies_are_described_briefly(detail, expected):
    assert describe_fal_detail(detail) == expected
