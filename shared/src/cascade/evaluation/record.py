"""``runs/<run_id>/evaluation.json``: every check, the verdict, and any manual override."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from cascade.core.evaluation_config import FirstRunPolicy
from cascade.core.paths import RunPaths
from cascade.evaluation.policy import CheckResult, Verdict

__all__ = ["BLESSED_VERDICTS", "EvaluationRecord", "Override", "evaluation_path"]

BLESSED_VERDICTS: frozenset[str] = frozenset({"blessed", "blessed_with_warnings", "force_blessed"})


def evaluation_path(run_id: str) -> str:
    return f"{RunPaths(run_id).root}/evaluation.json"


class Override(BaseModel):
    """Who force-blessed a candidate, why, and what the checks had said."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actor: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=3, max_length=2000)
    at: datetime
    via: str = Field(description="cli or http")
    authenticated_as: str | None = Field(
        None, description="The caller's identity as the platform authenticated it (HTTP)."
    )
    previous_verdict: Verdict


class EvaluationRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str
    run_id: str
    model_uri: str
    metrics_uri: str
    infra_check_uri: str
    verdict: Verdict
    first_run: bool
    first_run_policy: FirstRunPolicy
    deployed_model_uri: str | None = Field(None, description="What served when evaluated.")
    baseline_model_uri: str | None = None
    newest_files: list[str] = Field(
        default_factory=list,
        description="``uri#generation`` of the newest accepted files: the newest_files slice.",
    )
    checks: list[CheckResult]
    summary: str
    evaluated_at: datetime
    override: Override | None = None

    @property
    def blessed(self) -> bool:
        return self.verdict in BLESSED_VERDICTS

    @property
    def infra_passed(self) -> bool:
        return all(check.verdict == "pass" for check in self.checks if check.kind == "infra")

    def failed_checks(self) -> list[CheckResult]:
        return [check for check in self.checks if check.failed]

    def warnings(self) -> list[str]:
        return [
            f"{check.name}: {check.detail}"
            for check in self.checks
            if check.failed and check.tier == "warning"
        ]
