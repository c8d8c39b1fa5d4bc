"""What evaluate reads: the trainer's ``metrics.json`` and ``infra_check.json``.

``TrainedMetrics`` reads the fields of the trainer's ``EvaluationReport``
(``cascade.trainer.scoring``) that evaluation needs, without importing TensorFlow
(that module does); a unit test keeps the two in step. ``InfraCheck`` is the probe's own
model (``cascade.trainer.probe`` imports no TensorFlow).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cascade.core.errors import BadInputError
from cascade.core.paths import RunPaths
from cascade.core.store import ArtifactStore
from cascade.serving.uris import UriReader
from cascade.trainer.infra_check import InfraCheck
from cascade.transform.newest import NEWEST_FILES_SLICE

__all__ = [
    "NEWEST_FILES_SLICE",
    "OVERALL",
    "EvaluationInputs",
    "MetricValues",
    "ModelMetricValues",
    "SliceValues",
    "TrainedMetrics",
    "read_evaluation_inputs",
]


OVERALL = "overall"


class MetricValues(BaseModel):
    model_config = ConfigDict(extra="ignore")

    examples: int
    metrics: dict[str, float]


class SliceValues(MetricValues):
    feature: str
    value: str

    @property
    def name(self) -> str:
        return f"{self.feature}={self.value}"


class ModelMetricValues(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model_uri: str
    overall: MetricValues
    slices: list[SliceValues] = Field(default_factory=list)
    newest_files: MetricValues | None = None

    def slice(self, feature: str, value: str) -> SliceValues | None:
        return next((s for s in self.slices if (s.feature, s.value) == (feature, value)), None)

    def scope(self, name: str) -> MetricValues | None:
        """``overall``, ``newest_files`` or a slice by ``feature=value``; None when absent."""
        if name == OVERALL:
            return self.overall
        if name == NEWEST_FILES_SLICE:
            return self.newest_files
        feature, _, value = name.partition("=")
        return self.slice(feature, value)


class TrainedMetrics(BaseModel):
    """``metrics.json``: candidate and (when a model was deployed) baseline metrics."""

    model_config = ConfigDict(extra="ignore")

    dataset: str
    run_id: str
    problem_type: str
    eval_examples: int
    candidate: ModelMetricValues
    baseline: ModelMetricValues | None = None
    baseline_error: str | None = None
    newest_files: list[str] = Field(
        default_factory=list, description="The files of the newest_files slice."
    )


@dataclass(frozen=True)
class EvaluationInputs:
    metrics: TrainedMetrics
    metrics_uri: str
    infra_check: InfraCheck | None
    infra_check_uri: str
    infra_check_error: str | None


def default_metrics_uri(artifacts: ArtifactStore, run_id: str) -> str:
    return artifacts.uri(f"{RunPaths(run_id).step_dir('training')}/metrics.json")


def read_evaluation_inputs(reader: UriReader, metrics_uri: str) -> EvaluationInputs:
    """metrics.json (required: BadInputError when absent or invalid) and the
    infra_check.json beside it (absent or invalid: recorded as an error, judged failed)."""
    data = reader.read_bytes(metrics_uri)
    if data is None:
        raise BadInputError(
            "metrics.json does not exist: the trainer wrote no metrics", uri=metrics_uri
        )
    try:
        metrics = TrainedMetrics.model_validate_json(data)
    except ValidationError as error:
        raise BadInputError(f"not a valid metrics.json: {error}", uri=metrics_uri) from None
    infra_uri = f"{metrics_uri.rsplit('/', 1)[0]}/infra_check.json"
    infra_check, infra_error = None, None
    infra_data = reader.read_bytes(infra_uri)
    if infra_data is None:
        infra_error = f"{infra_uri} does not exist: the load-and-probe check did not run"
    else:
        try:
            infra_check = InfraCheck.model_validate_json(infra_data)
        except ValidationError as error:
            infra_error = f"{infra_uri} is not a valid infra check: {error}"
    return EvaluationInputs(metrics, metrics_uri, infra_check, infra_uri, infra_error)
