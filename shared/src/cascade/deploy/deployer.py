"""The one interface both deployers implement, and what flows through it."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from cascade.core.deployment_config import DeploymentConfig
from cascade.core.errors import BadRequestError, TransientError
from cascade.core.serving_config import ServingMode
from cascade.serving.state import DeployedVersion
from cascade.transform.spec import TransformSpec

__all__ = [
    "Answer",
    "CanaryReport",
    "Candidate",
    "Deployer",
    "label_value",
    "lineage_of",
    "prediction_list",
]


def label_value(text: str) -> str:
    """A Google Cloud label value: lowercase letters, digits, ``_`` and ``-``, <= 63 chars
    (a longer one keeps its head and a hash of the whole)."""
    cleaned = re.sub(r"[^a-z0-9_-]", "-", text.lower())
    if len(cleaned) <= 63:
        return cleaned
    return f"{cleaned[:46]}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def lineage_of(run_id: str, spec: TransformSpec | None) -> dict[str, str]:
    """Run id, data snapshot (a digest of the pinned files) and transform fingerprint."""
    lineage = {"run_id": run_id}
    if spec is not None:
        pinned = "\n".join(f"{item.uri}#{item.generation}" for item in spec.snapshot)
        lineage["data_snapshot"] = hashlib.sha256(pinned.encode()).hexdigest()[:16]
        lineage["snapshot_files"] = str(len(spec.snapshot))
        lineage["transform_fingerprint"] = spec.fingerprint()
    return lineage


@dataclass(frozen=True)
class Candidate:
    """A blessed model to deploy."""

    dataset: str
    run_id: str
    model_uri: str
    lineage: dict[str, str] = field(default_factory=dict)
    serving_mode: ServingMode = "dynamic"
    """The dataset's ``serving.mode``: a Vertex AI container learns it with the upload
    (it reads no pipeline config), so the deployer needs it from the deploy step."""


@dataclass(frozen=True)
class CanaryReport:
    passed: bool
    requests: int
    errors: int
    p95_ms: float
    detail: str
    answered_by_canary: int = 0

    def as_outputs(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "requests": self.requests,
            "errors": self.errors,
            "p95_ms": round(self.p95_ms, 3),
            "answered_by_canary": self.answered_by_canary,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Answer:
    """A served model's predictions for a batch of rows, in row order, and the version
    that answered (None when the answer does not say)."""

    predictions: list[dict[str, Any]]
    version: str | None


def prediction_list(status: int, text: str, body: Any, rows: int, where: str) -> list[Any]:
    """The ``predictions`` of a predict answer that must hold one per row: a 5xx or 429 is
    transient, another non-200 a refusal of the rows (BadRequestError naming it)."""
    if status == 429 or status >= 500:
        raise TransientError(f"{where}: HTTP {status}: {text[:300]}")
    if status != 200:
        raise BadRequestError(f"{where} refused the rows: HTTP {status}: {text[:300]}")
    predictions = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(predictions, list) or len(predictions) != rows:
        count = len(predictions) if isinstance(predictions, list) else "no"
        raise BadRequestError(f"{where}: {count} predictions for {rows} rows")
    return predictions


class Deployer(Protocol):
    """Registers, deploys, checks, promotes and rolls back model versions of a dataset.

    Every method is safe to call again after a crash (the rollout records its progress
    on the step's claim and resumes).
    """

    target: str

    def register(self, candidate: Candidate, config: DeploymentConfig) -> DeployedVersion:
        """Make the candidate a new version of the dataset's model (no traffic yet)."""
        ...

    def start_canary(
        self, candidate: Candidate, version: DeployedVersion, config: DeploymentConfig
    ) -> int:
        """Deploy ``version`` with the canary share (all traffic when nothing else serves);
        returns the share it got."""
        ...

    def check_canary(
        self, dataset: str, version: str, instances: list[dict[str, Any]], config: DeploymentConfig
    ) -> CanaryReport:
        """Send smoke predictions and judge the errors and latency."""
        ...

    def promote(self, dataset: str, version: str, *, actor: str = "", reason: str = "") -> None:
        """All traffic to ``version``; other versions stay deployed without traffic.
        ``actor`` / ``reason``: who asked and why (recorded on serving.json's history)."""
        ...

    def roll_back(self, dataset: str, version: str, reason: str) -> None:
        """Undeploy a failed ``version``; its traffic returns to what served before."""
        ...

    def retire(self, dataset: str, keep: int) -> list[str]:
        """Undeploy the oldest versions without traffic beyond ``keep``; their ids."""
        ...

    def restore_previous(
        self, dataset: str, *, actor: str = "", reason: str = ""
    ) -> tuple[str, str]:
        """Roll back the serving version to the previous one: (rolled back, now serving).
        ``actor`` / ``reason``: who asked and why (recorded on serving.json's history)."""
        ...

    def predict(self, dataset: str, version: str, instances: list[dict[str, Any]]) -> Answer:
        """Predictions for ``instances`` (fitted to ``version``'s signature, as the canary's
        are) through the path clients use: the local model server's version route, or
        the Vertex AI endpoint (whose traffic split picks the deployed model; the answer
        names it). TransientError when it cannot answer now, BadRequestError when it
        refuses the rows."""
        ...
