"""A recording ``Deployer`` for deploy-step tests.

It subclasses the ``Deployer`` protocol explicitly, so mypy checks every method against
the interface the real deployers (``VertexDeployer``, ``LocalDeployer``) implement.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cascade.core.deployment_config import DeploymentConfig
from cascade.deploy.deployer import Answer, CanaryReport, Candidate, Deployer
from cascade.serving.state import DeployedVersion

# The time of tests.unit.evaluation.builders.NOW; not imported from there, so mypy checks
# this module without also checking the builders.
DEPLOYED_AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class FakeDeployer(Deployer):
    """Records every call with all its arguments, in order; the canary passes unless told
    otherwise. ``check_fails`` is raised by the first ``check_canary`` (after recording
    it), as an outage, or a process killed in the middle of a rollout, would."""

    target = "fake"

    def __init__(
        self,
        canary_passes: bool = True,
        check_fails: BaseException | None = None,
        predictor: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """``predictor`` answers ``predict`` row by row (default: a 0.5 probability)."""
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.canary_passes = canary_passes
        self.check_fails = check_fails
        self.predictor = predictor or (lambda row: {"probabilities": [0.5, 0.5]})

    def names(self) -> list[str]:
        """The methods called, in order."""
        return [name for name, _ in self.calls]

    def register(self, candidate: Candidate, config: DeploymentConfig) -> DeployedVersion:
        self.calls.append(("register", (candidate, config)))
        return DeployedVersion(
            version="3",
            run_id=candidate.run_id,
            model_uri=candidate.model_uri,
            state="standby",
            deployed_at=DEPLOYED_AT,
        )

    def start_canary(
        self, candidate: Candidate, version: DeployedVersion, config: DeploymentConfig
    ) -> int:
        self.calls.append(("start_canary", (candidate, version, config)))
        return config.canary_traffic_percent

    def check_canary(
        self, dataset: str, version: str, instances: list[dict[str, Any]], config: DeploymentConfig
    ) -> CanaryReport:
        self.calls.append(("check_canary", (dataset, version, instances, config)))
        if self.check_fails is not None:
            failure, self.check_fails = self.check_fails, None
            raise failure
        errors = 0 if self.canary_passes else 20
        return CanaryReport(
            self.canary_passes,
            20,
            errors,
            1.5,
            "p95 1.5 ms" if self.canary_passes else "20/20 requests failed",
        )

    def promote(self, dataset: str, version: str, *, actor: str = "", reason: str = "") -> None:
        self.calls.append(("promote", (dataset, version)))

    def roll_back(self, dataset: str, version: str, reason: str) -> None:
        self.calls.append(("roll_back", (dataset, version, reason)))

    def retire(self, dataset: str, keep: int) -> list[str]:
        self.calls.append(("retire", (dataset, keep)))
        return ["1"]

    def restore_previous(
        self, dataset: str, *, actor: str = "", reason: str = ""
    ) -> tuple[str, str]:
        raise AssertionError("not part of a rollout")

    def predict(self, dataset: str, version: str, instances: list[dict[str, Any]]) -> Answer:
        self.calls.append(("predict", (dataset, version, instances)))
        return Answer([self.predictor(row) for row in instances], version)
