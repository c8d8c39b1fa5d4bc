"""The messages steps publish to each other, one pydantic model per topic.

Each message carries the run id, so the next step's claim makes redelivery harmless.
The logical topic each model is published on is its ``TOPIC``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cascade.core.paths import check_dataset_name

__all__ = [
    "MESSAGE_TYPES",
    "Alert",
    "DataValidated",
    "JobEvent",
    "ModelBlessed",
    "ModelTrained",
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


class TrainRequest(StepMessage):
    """A request to (re)train a dataset, from transform, a user, a scheduler or CI.

    ``request_id`` is the idempotency key; without one (e.g. Cloud Scheduler's periodic
    message) the train step uses the Pub/Sub message id, stable across redeliveries.
    """

    TOPIC: ClassVar[str] = "train-requests"
    request_id: str | None = Field(
        None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$"
    )
    run_id: str | None = None
    hyperparameters: dict[str, float | int | str | bool] = Field(default_factory=dict)
    tune: bool = False
    reason: str = ""


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


class Alert(StepMessage):
    TOPIC: ClassVar[str] = "alerts"
    run_id: str | None = None
    step: str
    severity: Literal["WARNING", "ERROR", "CRITICAL"]
    summary: str
    details: dict[str, Any] = Field(default_factory=dict)
    at: datetime


MESSAGE_TYPES: dict[str, type[StepMessage]] = {
    message_type.__name__: message_type
    for message_type in (DataValidated, TrainRequest, ModelTrained, JobEvent, ModelBlessed, Alert)
}
