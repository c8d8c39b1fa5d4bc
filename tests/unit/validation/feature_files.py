"""Files with known columns, landed and validated through the validate step, for the
tests of which columns become features (validation and transform)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from cascade.core.context import StepContext
from cascade.core.events import StorageObjectEvent
from cascade.core.fakes import RecordingBus
from cascade.core.messages import DataValidated
from cascade.core.paths import DatasetPaths, RunPaths
from cascade.core.runs import run_id_for_object
from cascade.steps.runner import StepOutcome
from cascade.steps.validate import handle_object_finalized
from cascade.validation.baseline_store import BaselineStore
from cascade.validation.statistics import summary_of_statistics
from cascade.validation.summaries import DatasetSummary
from cascade.validation.tfmd import statistics_pb2
from tests.unit.validation.fake_storage import FakeStorageClient
from tests.unit.validation.step_context import LANDING

DATASET = "credit"
BASE_COLUMNS = ("amount", "label")


def csv_file(seed: int, rows: int = 300, columns: Sequence[str] = BASE_COLUMNS) -> bytes:
    """``rows`` rows of ``columns``: ``label`` is 0/1, every other column a number."""
    generator = random.Random(seed)
    lines = [",".join(columns)]
    for _ in range(rows):
        values = [
            str(generator.randint(0, 1)) if name == "label" else f"{generator.gauss(50, 5):.2f}"
            for name in columns
        ]
        lines.append(",".join(values))
    return ("\n".join(lines) + "\n").encode()


def new_columns(count: int) -> list[str]:
    return [f"f{index:04d}" for index in range(count)]


def validate(
    ctx: StepContext, storage: FakeStorageClient, name: str, data: bytes
) -> tuple[StepOutcome, str]:
    """Land ``data`` as ``credit/<name>``, run the validate step: its outcome and run id."""
    object_name = f"{DATASET}/{name}"
    generation = storage.put(LANDING, object_name, data)
    event = StorageObjectEvent(
        event_id=f"event-{object_name}-{generation}",
        bucket=LANDING,
        name=object_name,
        generation=generation,
        size=len(data),
    )
    outcome = handle_object_finalized(ctx, event)
    assert outcome is not None
    return outcome, run_id_for_object(DATASET, LANDING, object_name, generation)


def last_validated(ctx: StepContext) -> DataValidated:
    assert isinstance(ctx.bus, RecordingBus)
    message = ctx.bus.of_type(DataValidated)[-1]
    assert isinstance(message, DataValidated)
    return message


def summary_at(ctx: StepContext, name: str) -> DatasetSummary:
    stored = ctx.artifacts.read(name)
    assert stored is not None, name
    return summary_of_statistics(
        statistics_pb2.DatasetFeatureStatisticsList.FromString(stored.data)
    )


def baseline(ctx: StepContext) -> DatasetSummary:
    stored = BaselineStore(ctx.artifacts, DATASET).load()
    assert stored is not None
    return stored.summary


def run_statistics(ctx: StepContext, run_id: str) -> DatasetSummary:
    return summary_at(ctx, f"{RunPaths(run_id).step_dir('validation')}/stats.pb")


def write_pipeline_config(ctx: StepContext, text: str) -> None:
    ctx.artifacts.write(
        DatasetPaths(DATASET).pipeline_config, text.encode(), content_type="text/yaml"
    )
