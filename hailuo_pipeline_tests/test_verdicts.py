"""Verdicts on delivered takes (`hailuo verdict`), and remaking what was rejected (`--retake-rejected`): exactly one
new take of each shot whose latest take was rejected, through Dagster and the real fal_client; nothing more until
another take is rejected."""

from __future__ import annotations

from decimal import Decimal

from hailuo_pipeline.cli import main
from hailuo_pipeline.defs.headless import materialize
from hailuo_pipeline_tests.helpers import query
from hailuo_pipeline_tests.shots import write_shots


def takes(workspace) -> list[tuple]:
    return query(workspace, "SELECT shot_id, take, verdict FROM requests WHERE status = 'succeeded' ORDER BY 1, 2")


def test_rejecting_a_take_and_retaking_pays_exactly_one_new_take(workspace, emulator, capsys):
    write_shots(workspace, [{"shot_id": s, "prompt": f"p {s}"} for s in ("a", "b", "c")])
    assert len(materialize().succeeded) == 3
    assert main(["verdict", "a", "reject", "--note", "the <b>horizon</b> tilts"]) == 0
    assert main(["verdict", "b", "approve"]) == 0
    assert "a take 1 (fal request" in capsys.readouterr().out
    assert materialize().requested == []  # a plain run remakes nothing
    retake = materialize(retake_rejected=True)
    assert retake.requested == ["a"] and retake.succeeded == ["a"]
    assert emulator.stats()["submissions"] == 4
    assert takes(workspace) == [("a", 1, "reject"), ("a", 2, None), ("b", 1, "approve"), ("c", 1, None)]
    assert materialize(retake_rejected=True).requested == []  # nothing more until a new take is rejected
    assert emulator.stats()["submissions"] == 4
    assert main(["verdict", "a", "reject"]) == 0  # take 2, the latest
    assert materialize(["a", "c"], retake_rejected=True).succeeded == ["a", "c"]  # --shot narrows: c is reused
    assert emulator.stats()["submissions"] == 5
    capsys.readouterr()
    assert main(["report"]) == 0
    assert "1 take(s) approved, 2 rejected ($0.38 spent on rejected takes)" in capsys.readouterr().out
    (note,) = query(workspace, "SELECT note FROM verdicts WHERE take = 1 AND shot_id = 'a'")
    assert note == ("the <b>horizon</b> tilts",)


def test_a_verdict_on_a_take_that_is_not_there_is_refused_by_name(workspace, emulator, capsys):
    write_shots(workspace, [{"shot_id": "a", "prompt": "p"}])
    assert materialize().succeeded == ["a"]
    assert main(["verdict", "a", "reject", "--take", "3"]) == 2
    assert "shot 'a' has no delivered take 3 (its takes: [1])" in capsys.readouterr().err
    assert main(["verdict", "nobody", "approve"]) == 2
    assert "shot 'nobody' has no delivered take to judge" in capsys.readouterr().err
    assert query(workspace, "SELECT count(*) FROM verdicts") == [(0,)]
    assert query(workspace, "SELECT cost_usd FROM requests") == [(Decimal("0.1900"),)]
