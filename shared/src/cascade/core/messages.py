"""The messages steps publish to each other, one pydantic model per topic.

Each message carries the run id, so the next step's claim makes redelivery harmless.
The logical topic each model is published on is its ``TOPIC``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from cascade.core.paths import check_dataset_name, check_run_id_name
from cascade.core.serving_config import BatchFiles, BatchTable

__all__ = [
    "MAX_HYPERPARAMETERS",
    "MAX_HYPERPARAMETER_TEXT",
    "MAX_REASON_CHARS",
    "MESSAGE_TYPES",
    "Alert",
    "BatchCollectRequest",
    "BatchPredictRequest",
    "DataValidated",
    "JobEvent",
    "ModelBlessed",
    "ModelTrained",
    "ReconcileRequest",
    "RunEnded",
    "StepMessage",
    "TrainRequest",
]


class StepMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    TOPIC: ClassVar[str]

    dataset: str

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, value: str) -> str:
        return check_dataset_name(value)

    def attributes(self) -> dict[str, str]:
        """Pub/Sub attributes, for filtering and for logs; the data is the JSON body."""
        attributes = {"dataset": self.dataset, "message_type": type(self).__name__}
        run_id = getattr(self, "run_id", None)
        if run_id:
            attributes["run_id"] = run_id
        return attributes


class ObjectRef(BaseModel):
    bucket: str
    name: str
    generation: int

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}#{self.generation}"


class DataValidated(StepMessage):
    TOPIC: ClassVar[str] = "data-validated"
    run_id: str
    source: ObjectRef
    outputs: dict[str, str] = Field(default_factory=dict)


MAX_REASON_CHARS = 1_000
"""The longest ``reason`` a train request may give (it is copied into the run record)."""
MAX_HYPERPARAMETERS = 64
"""The most hyperparameters one request may set (the trainer knows fewer than ten)."""
MAX_HYPERPARAMETER_TEXT = 256
"""The longest string value of a hyperparameter."""

HyperparameterName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
HyperparameterText = Annotated[str, StringConstraints(max_length=MAX_HYPERPARAMETER_TEXT)]


class TrainRequest(StepMessage):
    """A request to (re)train a dataset, from transform, a user, a scheduler or CI.

    ``request_id`` is the idempotency key; without one (e.g. Cloud Scheduler's periodic
    message) the train step uses the Pub/Sub message id, stable across redeliveries.

    ``run_id`` is set only by the system: by transform (the upload's run) and by the
    training lock's hand-over (a follow-up run). The train step accepts it only when it
    names a run waiting for training (``cascade.steps.train``); the HTTP entry point
    refuses it. The limits here (reason, hyperparameters) hold on every entry point.
    """

    TOPIC: ClassVar[str] = "train-requests"
    request_id: str | None = Field(
        None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$"
    )
    run_id: str | None = None
    hyperparameters: dict[HyperparameterName, float | int | HyperparameterText | bool] = Field(
        default_factory=dict
    )
    tune: bool = False
    reason: str = Field("", max_length=MAX_REASON_CHARS)

    @field_validator("run_id")
    @classmethod
    def _run_id_name(cls, value: str | None) -> str | None:
        return None if value is None else check_run_id_name(value)

    @field_validator("hyperparameters", mode="before")
    @classmethod
    def _few_hyperparameters(cls, value: Any) -> Any:
        if isinstance(value, dict) and len(value) > MAX_HYPERPARAMETERS:
            raise ValueError(
                f"at most {MAX_HYPERPARAMETERS} hyperparameters per request, not {len(value)}"
            )
        return value


class ModelTrained(StepMessage):
    TOPIC: ClassVar[str] = "model-trained"
    run_id: str
    job_name: str | None = None
    model_uri: str | None = None
    metrics_uri: str | None = None


class JobEvent(StepMessage):
    TOPIC: ClassVar[str] = "job-events"
    run_id: str
    job_name: str
    state: Literal["failed", "cancelled"]
    error: str = ""


class ModelBlessed(StepMessage):
    TOPIC: ClassVar[str] = "model-blessed"
    run_id: str
    model_uri: str | None = None
    warnings: list[str] = Field(default_factory=list)


class BatchPredictRequest(StepMessage):
    """Score a table or files with a deployed version of ``dataset`` (the
    ``batch-predict`` function): from a user, a schedule, or the deploy step after it
    promoted a version of a static or hybrid dataset. Without ``table`` and ``files`` the
    dataset's ``serving.batch_source`` is scored; without ``version``, the version that
    serves most of the traffic. ``request_id`` is the idempotency key (none: the Pub/Sub
    message id)."""

    TOPIC: ClassVar[str] = "batch-predict-requests"
    request_id: str | None = Field(
        None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$"
    )
    table: BatchTable | None = None
    files: BatchFiles = ()
    version: str | None = Field(None, pattern=r"^[0-9]{1,9}$")

    @model_validator(mode="after")
    def _at_most_one_source(self) -> BatchPredictRequest:
        if self.table is not None and self.files:
            raise ValueError("score a table or files, not both")
        return self


class Alert(StepMessage):
    TOPIC: ClassVar[str] = "alerts"
    run_id: str | None = None
    step: str
    severity: Literal["WARNING", "ERROR", "CRITICAL"]
    summary: str
    details: dict[str, Any] = Field(default_factory=dict)
    at: datetime


class RunEnded(StepMessage):
    """A run reached its end (``state``): run.json says so. The report function renders
    the run's report from it (``cascade.steps.report``), so the steps that end runs need
    none of the report's libraries. Published after run.json's end is written, by the
    step that ended the run or by the dead-letters function that failed it."""

    TOPIC: ClassVar[str] = "run-ended"
    run_id: str
    state: Literal["succeeded", "rejected", "failed"]

    @field_validator("run_id")
    @classmethod
    def _run_id_name(cls, value: str) -> str:
        return check_run_id_name(value)


# The messages of a run's chain, which reconcile may republish by name (BatchPredictRequest
# belongs to no run: it is not here).
MESSAGE_TYPES: dict[str, type[StepMessage]] = {
    message_type.__name__: message_type
    for message_type in (
        DataValidated,
        TrainRequest,
        ModelTrained,
        JobEvent,
        ModelBlessed,
        Alert,
    )
}


MAX_STALE_AFTER_S = 7 * 86_400
"""The longest ``stale_after_s`` a reconcile request may ask for (a week)."""


class ReconcileRequest(BaseModel):
    """Find and resume unfinished work (``cascade.steps.reconcile``): the message a
    schedule of the topology (``schedules.reconcile``) publishes, in the cloud through
    Cloud Scheduler and locally through the local cloud's scheduler.

    Not a step message: it belongs to no run and names no dataset unless it narrows the
    sweep to one. ``stale_after_s``: work without progress for this long is resumed.
    """

    model_config = ConfigDict(extra="forbid")
    TOPIC: ClassVar[str] = "reconcile-requests"

    stale_after_s: int = Field(600, ge=1, le=MAX_STALE_AFTER_S)
    dataset: str | None = None

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, value: str | None) -> str | None:
        return None if value is None else check_dataset_name(value)


MAX_COLLECT_LOOKBACK_S = 30 * 86_400
"""The furthest back a batch-collect sweep may look for batch jobs (30 days)."""


class BatchCollectRequest(BaseModel):
    """Collect finished Vertex AI batch prediction jobs (``cascade.steps.batch_collect``):
    the message ``schedules.batch-collect`` publishes. Not a step message: it belongs to
    no run. ``lookback_s``: jobs created this long ago or later are looked at."""

    model_config = ConfigDict(extra="forbid")
    TOPIC: ClassVar[str] = "batch-collect-requests"

    lookback_s: int = Field(7 * 86_400, ge=600, le=MAX_COLLECT_LOOKBACK_S)
