"""What a batch will cost before it spends (`hailuo materialize --dry-run`, and the manifest sensor's observation):
the shots the judge would pay for, reuse, resume, leave to another process, refuse or hold, the dollars at the
price in effect, and what each budget would have left. A pure function over the plan and the ledger's figures:
the real run claims in the same order against the same budgets, so it pays for exactly these shots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hailuo_pipeline.catalog.decisions import budget_refusal
from hailuo_pipeline.catalog.rows import Budget
from hailuo_pipeline.generation.planning import ShotPlan
from hailuo_pipeline.model_limits import DEFAULT_DURATION_SECONDS
from hailuo_pipeline.shots.manifest import Manifest


@dataclass(frozen=True)
class BatchEstimate:
    to_pay: dict[str, Decimal]  # shot -> the price it would be reserved at
    reused: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)  # paid already: followed by id
    leased: list[str] = field(default_factory=list)  # another process follows them: waited for
    refused: list[str] = field(default_factory=list)  # fal refused these inputs
    held: dict[str, str] = field(default_factory=dict)  # shot -> why a person decides (ambiguous, lost, edited)
    over_budget: dict[str, str] = field(default_factory=dict)  # shot -> the budget it would break
    budgets: dict[str, dict[str, str]] = field(default_factory=dict)  # daily/total -> limit, committed, left after

    @property
    def total_usd(self) -> Decimal:
        return sum(self.to_pay.values(), Decimal(0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "pay": {shot: str(usd) for shot, usd in self.to_pay.items()},
            "total_usd": str(self.total_usd),
            "reuse": self.reused,
            "resume": self.resumed,
            "wait_for": self.leased,
            "refused": self.refused,
            "held": self.held,
            "over_budget": self.over_budget,
            "budgets": self.budgets,
        }

    def lines(self) -> list[str]:
        said = [f"would pay for {len(self.to_pay)} video(s): ${self.total_usd:.2f} at the prices in effect"]
        said += [f"  {shot}: ${usd:.2f}" for shot, usd in list(self.to_pay.items())[:20]]
        if len(self.to_pay) > 20:
            said.append(f"  and {len(self.to_pay) - 20} more")
        for label, shots in (
            ("reuse", self.reused),
            ("resume by id (paid already)", self.resumed),
            ("wait for (leased to another process)", self.leased),
            ("refused by fal", self.refused),
        ):
            if shots:
                said.append(f"would {label}: {len(shots)} shot(s)" if label != "refused by fal"
                            else f"refused by fal, not sent: {len(shots)} shot(s)")  # fmt: skip
        said += [f"held for a person: {shot} ({why})" for shot, why in self.held.items()]
        said += [f"over budget, not paid: {shot} ({why})" for shot, why in self.over_budget.items()]
        for name, budget in self.budgets.items():
            said.append(
                f"{name} budget ${budget['limit_usd']}: ${budget['committed_usd']} spent or reserved, "
                f"${budget['left_after_usd']} left after this batch"
            )
        said.append("nothing was sent to fal's queue")
        return said


def estimate_batch(
    plan: ShotPlan,
    chosen: Sequence[str],
    manifest: Manifest,
    prices: Mapping[int, Decimal],
    budget: Budget,
    committed_total: Decimal,
    committed_today: Decimal,
) -> BatchEstimate:
    """`chosen`: the shots the run would take, in order (a plain run's targets, or the named shots)."""
    estimate = BatchEstimate(to_pay={})
    total, today = committed_total, committed_today
    for shot_id in chosen:
        shot = manifest.shots.get(shot_id)
        if shot_id in plan.to_generate or shot_id in plan.edited:
            price = prices.get(shot.budgeted_seconds() if shot else DEFAULT_DURATION_SECONDS, Decimal(0))
            refusal = budget_refusal(budget, total, today, price)
            if refusal is not None:
                estimate.over_budget[shot_id] = refusal
                continue
            estimate.to_pay[shot_id] = price
            total, today = total + price, today + price
        elif shot_id in plan.delivered:
            estimate.reused.append(shot_id)
        elif shot_id in plan.to_resume:
            estimate.resumed.append(shot_id)
        elif shot_id in plan.in_flight or shot_id in plan.silent:
            estimate.leased.append(shot_id)
        elif shot_id in plan.refused:
            estimate.refused.append(shot_id)
    for shot_id in plan.order:
        if shot_id in plan.ambiguous:
            estimate.held[shot_id] = "a submit whose answer never came"
        elif shot_id in plan.lost:
            estimate.held[shot_id] = "its paid video was lost; --repay-lost pays again"
        elif shot_id in plan.edited and shot_id not in chosen:
            estimate.held[shot_id] = "edited since its video; name it to pay for the new inputs"
    for name, limit, before, after in (
        ("daily", budget.daily_usd, committed_today, today),
        ("total", budget.total_usd, committed_total, total),
    ):
        if limit is not None:
            estimate.budgets[name] = {
                "limit_usd": f"{limit:.2f}",
                "committed_usd": f"{before:.2f}",
                "left_after_usd": f"{limit - after:.2f}",
            }
    return estimate
