"""What ranking.json holds, as typed sections: the analysis writes them, the reports and plots read them.

The field order is the file's key order. Optional keys that the file leaves out when they do not apply
(`rank` of an unranked target, `position` of a judge that judged no pair) are dropped when None.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_serializer

CI = list[float] | None  # a 95% interval [low, high], None when it cannot be computed


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
    _drop_when_none: tuple[str, ...] = ()

    @model_serializer(mode="wrap")
    def _serialize(self, handler) -> dict[str, Any]:
        data = handler(self)
        for key in self._drop_when_none:
            if data.get(key) is None:
                data.pop(key, None)
        return data


class RubricSummary(_Section):
    """One rubric judge's mean score for a target (of the six criteria, or its overall score), and each criterion's mean."""

    mean: float | None
    ci: CI
    n: int
    criteria: dict[str, float]


class SimilaritySummary(_Section):
    """The reference judge's mean similarity of a target's answers to the reference answers."""

    mean: float | None
    ci: CI
    n: int


class TargetResult(_Section):
    _drop_when_none = ("rank",)

    name: str
    is_base: bool
    is_anchor: bool
    score: float | None  # the panel's Bradley-Terry strength, Elo scale, anchor = 1000
    ci: CI
    answers: int
    latency_s: float | None
    completion_tokens: float | None  # mean per answer
    joules_per_answer: float | None  # mean energy the server reported
    energy_source: list[str] | None
    val_loss: float | None
    train_kwh: float | None
    rubric: dict[str, RubricSummary]
    reference_similarity: dict[str, SimilaritySummary]
    rank: int | None = None
    pareto: dict[str, bool] = {}


class Rated(_Section):
    score: float
    ci: CI


class Position(_Section):
    """How often a pairwise judge's verdict survives swapping the answers, and its first-position win rate."""

    consistency: float | None
    pairs: int
    first_position_win_rate: float | None


class JudgeValidity(_Section):
    """The judge's figures from `eval validate-judge` (planted answers of known quality), when the panel names them."""

    _drop_when_none = ("error",)

    file: str
    passed: bool | None = None
    model: str | None = None
    questions: int = 0
    kendall_tau: float | None = None
    kendall_tau_ci: CI = None
    position_consistency: float | None = None
    malformed_rate: float | None = None
    date: str | None = None
    error: str | None = None


class JudgeResult(_Section):
    _drop_when_none = ("position", "validity")

    kind: str
    model: str | None
    judgments: int
    missing: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    scores: dict[str, Rated]  # this judge's own Bradley-Terry ranking
    position: Position | None = None
    validity: JudgeValidity | None = None


class Agreement(_Section):
    kendall_tau: dict[str, float | None]  # "judge a vs judge b": tau of their rankings
    alpha_rubric: float | None
    alpha_preferences: float | None


class ValLossCorrelation(_Section):
    targets: int
    kendall_tau: float | None
    kendall_tau_ci: CI
    spearman: float | None
    spearman_ci: CI
    note: str


class Ranking(_Section):
    anchor: str | None
    questions: int
    bootstrap: int
    targets: list[TargetResult]  # ranked first, by score
    judges: dict[str, JudgeResult]
    agreement: Agreement
    val_loss_correlation: ValLossCorrelation
    pareto: dict[str, list[str]]  # energy field -> names on the quality-energy front

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def read(cls, path: Path) -> "Ranking":
        """A ranking.json as the eval job wrote it (its `run` record is left out)."""
        data = json.loads(Path(path).read_text())
        data.pop("run", None)
        return cls.model_validate(data)
