"""A blessed candidate through any ``Deployer``: register → canary → checks → promote or
roll back → retire old versions.

Each stage that changed something outside Cascade is recorded on the deploy step's
claim (``submitted``), so a delivery that takes over from a crashed one resumes after
the last recorded stage instead of uploading or deploying the model twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from cascade.core.deployment_config import DeploymentConfig
from cascade.deploy.deployer import CanaryReport, Candidate, Deployer
from cascade.serving.state import DeployedVersion

__all__ = ["Progress", "RolloutResult", "roll_out"]


class Progress(Protocol):
    """Where the rollout's stages are recorded (the deploy step's claim)."""

    @property
    def done(self) -> dict[str, Any]: ...

    def record(self, **stages: Any) -> None: ...


@dataclass(frozen=True)
class RolloutResult:
    version: str
    canary_percent: int
    canary: CanaryReport
    promoted: bool
    retired: list[str] = field(default_factory=list)

    def outputs(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "canary_percent": self.canary_percent,
            "canary": self.canary.as_outputs(),
            "promoted": self.promoted,
            "retired": self.retired,
        }


def roll_out(
    deployer: Deployer,
    candidate: Candidate,
    config: DeploymentConfig,
    instances: list[dict[str, Any]],
    progress: Progress,
) -> RolloutResult:
    done = progress.done
    if "version" in done:
        version = DeployedVersion.model_validate(done["version"])
    else:
        version = deployer.register(candidate, config)
        progress.record(version=version.model_dump(mode="json"))
    if "canary_percent" in done:
        share = int(done["canary_percent"])
    else:
        share = deployer.start_canary(candidate, version, config)
        progress.record(canary_percent=share)
    report = deployer.check_canary(candidate.dataset, version.version, instances, config)
    if not report.passed:
        deployer.roll_back(candidate.dataset, version.version, f"canary failed: {report.detail}")
        progress.record(rolled_back=True)
        return RolloutResult(version.version, share, report, promoted=False)
    deployer.promote(candidate.dataset, version.version)
    progress.record(promoted=True)
    retired = deployer.retire(candidate.dataset, config.keep_versions)
    return RolloutResult(version.version, share, report, promoted=True, retired=retired)
