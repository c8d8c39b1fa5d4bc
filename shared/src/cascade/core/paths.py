"""Object names in the artifacts bucket (the run record layout of docs/design.md).

Every name is built here, from validated parts, so no other module formats paths.
"""

from __future__ import annotations

import hashlib
import re

from pydantic import ValidationError

from cascade.core.errors import BadRequestError
from cascade.core.settings import DATASET_NAME_PATTERN
from cascade.core.training_config import TrainingConfig

__all__ = [
    "RUN_ID_NAME_PATTERN",
    "DatasetPaths",
    "RunPaths",
    "check_dataset_name",
    "check_model_module_name",
    "check_run_id_name",
    "dead_letter_record",
]

RUN_ID_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
"""What may stand for a run id in an object name: one path segment of letters, digits,
'-' and '_' (no '/', '.', '..', '%', whitespace or control characters). The system's own
run ids are stricter still (``cascade.core.runs.check_system_run_id``)."""


def check_dataset_name(dataset: str) -> str:
    """Return ``dataset`` if it is a valid dataset name, else raise BadRequestError."""
    if not DATASET_NAME_PATTERN.fullmatch(dataset):
        raise BadRequestError(
            f"invalid dataset name {dataset!r}: use lowercase letters, digits, '-' or '_', "
            "starting with a letter, at most 63 characters"
        )
    return dataset


def check_run_id_name(run_id: str) -> str:
    """Return ``run_id`` if it is safe as one segment of an object name, else raise
    BadRequestError: a run id never names a folder outside ``runs/``."""
    if not RUN_ID_NAME_PATTERN.fullmatch(run_id):
        shown = repr(run_id) if len(repr(run_id)) <= 80 else repr(run_id)[:77] + "..."
        raise BadRequestError(
            f"invalid run id {shown}: use letters, digits, '-' or '_', starting with a "
            "letter or digit, at most 128 characters"
        )
    return run_id


def check_model_module_name(name: str) -> str:
    """Return ``name`` if it is a valid ``training.model_module`` (a relative object name
    such as ``models/churn.py``), else raise BadRequestError. The rule is the config's
    own (``TrainingConfig.model_module``): no ``..``, no leading ``/``, no backslash,
    no control characters, letters, digits, ``_`` and ``-`` in ``/``-separated parts."""
    try:
        TrainingConfig.model_validate({"model": "custom", "model_module": name})
    except ValidationError as error:
        reasons = "; ".join(
            str(item["msg"]).removeprefix("Value error, ") for item in error.errors()
        )
        raise BadRequestError(f"invalid model module name: {reasons}") from None
    return name


class RunPaths:
    def __init__(self, run_id: str) -> None:
        self.run_id = check_run_id_name(run_id)
        self.root = f"runs/{run_id}"

    @property
    def record(self) -> str:
        return f"{self.root}/run.json"

    @property
    def report(self) -> str:
        """The run's HTML report (``cascade.report``)."""
        return f"{self.root}/report.html"

    def claim(self, step: str) -> str:
        return f"{self.root}/claims/{step}.json"

    def result(self, step: str) -> str:
        """A finished step's outcome, written once (``cascade.core.claims.StepResult``)."""
        return f"{self.root}/results/{step}.json"

    def step_dir(self, step: str) -> str:
        return f"{self.root}/{step}"


class DatasetPaths:
    def __init__(self, dataset: str) -> None:
        self.dataset = check_dataset_name(dataset)
        self.root = f"datasets/{dataset}"

    @property
    def pipeline_config(self) -> str:
        return f"{self.root}/pipeline.yaml"

    @property
    def schema(self) -> str:
        return f"{self.root}/schema.pbtxt"

    @property
    def stream_schema(self) -> str:
        """The Avro schema of the dataset's stream topic, as deployed (Terraform's
        ``google_storage_bucket_object``; the local cloud's provisioning)."""
        return f"{self.root}/stream_schema.avsc"

    @property
    def baseline_stats(self) -> str:
        return f"{self.root}/baseline_stats.pb"

    def accepted_manifest(self, file_id: str) -> str:
        return f"{self.root}/accepted/{file_id}.json"

    @property
    def accepted_prefix(self) -> str:
        return f"{self.root}/accepted/"

    def quarantine(self, run_id: str) -> str:
        return f"quarantine/{self.dataset}/{check_run_id_name(run_id)}"

    @property
    def monitoring_prefix(self) -> str:
        """The served model's metrics on each labelled accepted file (a time series)."""
        return f"{self.root}/monitoring/"

    def monitoring_point(self, run_id: str) -> str:
        return f"{self.monitoring_prefix}{check_run_id_name(run_id)}.json"

    def model_module(self, name: str) -> str:
        """A user model module (``training.model_module``, e.g. ``models/churn.py``)."""
        return f"{self.root}/{check_model_module_name(name)}"

    @property
    def serving(self) -> str:
        return f"models/{self.dataset}/serving.json"


def dead_letter_record(message_id: str) -> str:
    """Where the dead-letter recorder keeps one dead-lettered message (by its id)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,128}", message_id):
        message_id = hashlib.sha256(message_id.encode()).hexdigest()[:32]
    return f"dead-letters/{message_id}.json"
