"""validate: a data file landed in ``gs://<landing>/<dataset>/...``.

Bookkeeping only for now: the run is created, the step claimed and recorded, and
``data-validated`` published. Data checks arrive with the validation capability
(issue 3); until then this step says so in its outputs instead of pretending.
"""

from __future__ import annotations

from cascade.claims import ClaimHandle
from cascade.context import StepContext
from cascade.errors import BadRequestError
from cascade.events import StorageObjectEvent
from cascade.messages import DataValidated, ObjectRef
from cascade.observability import RunLogger
from cascade.paths import check_dataset_name
from cascade.runs import RunRecord, Trigger, run_id_for_object
from cascade.steps.runner import StepOutcome, execute_step

__all__ = ["dataset_of_object", "handle_object_finalized"]

STEP = "validate"


def dataset_of_object(object_name: str) -> str:
    """The dataset a landed object belongs to: its first path segment."""
    dataset, separator, rest = object_name.partition("/")
    if not separator or not rest or rest.endswith("/"):
        raise BadRequestError(
            f"object {object_name!r} is not under a dataset folder: upload to <dataset>/<file>"
        )
    return check_dataset_name(dataset)


def handle_object_finalized(ctx: StepContext, event: StorageObjectEvent) -> StepOutcome | None:
    dataset = dataset_of_object(event.name)
    now = ctx.clock()
    run = RunRecord(
        run_id=run_id_for_object(dataset, event.bucket, event.name, event.generation),
        dataset=dataset,
        trigger=Trigger(
            kind="object", uri=event.uri, generation=event.generation, event_id=event.event_id
        ),
        created_at=now,
        updated_at=now,
    )
    source = ObjectRef(bucket=event.bucket, name=event.name, generation=event.generation)

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        message = DataValidated(dataset=dataset, run_id=run.run_id, source=source)
        return StepOutcome(
            summary="no data checks yet (validation capability not built)",
            outputs={"checks": "none", "source": source.uri, "size_bytes": event.size},
            messages=[message],
            lineage={"source": source.uri},
        )

    return execute_step(ctx, run=run, step=STEP, owner=event.event_id, body=body)
