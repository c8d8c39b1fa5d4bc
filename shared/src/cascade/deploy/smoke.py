"""Smoke instances for canary checks, built from the run's transform spec.

Typical raw values the model was fitted on (a numeric feature's mean, a vocabulary's
first value), plus rows with every value missing: a served model must answer both.
"""

from __future__ import annotations

from typing import Any

from cascade.core.paths import RunPaths
from cascade.core.store import ArtifactStore
from cascade.transform.spec import (
    HashTransform,
    NumericTransform,
    TransformSpec,
    VocabularyTransform,
)

__all__ = ["read_transform_spec", "smoke_instances"]


def read_transform_spec(artifacts: ArtifactStore, run_id: str) -> TransformSpec | None:
    found = artifacts.read_model(
        f"{RunPaths(run_id).step_dir('transform')}/transform.json", TransformSpec
    )
    return None if found is None else found[0]


def _typical(feature: NumericTransform | VocabularyTransform | HashTransform) -> Any:
    if isinstance(feature, NumericTransform):
        return feature.mean
    if isinstance(feature, VocabularyTransform):
        return feature.vocabulary[0]
    return feature.fill_value or "cascade-smoke"


def smoke_instances(spec: TransformSpec, count: int = 4) -> list[dict[str, Any]]:
    """``count`` instances alternating typical values and all-missing values."""
    typical = {feature.name: _typical(feature) for feature in spec.features}
    missing: dict[str, Any] = {feature.name: None for feature in spec.features}
    return [typical if index % 2 == 0 else missing for index in range(count)]
