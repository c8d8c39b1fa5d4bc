"""monitor: score an accepted file with the model serving its dataset (continued evaluation).

Runs beside ``transform`` on the same ``data-validated`` message, as the step ``monitor``
of the file's run (claimed like every step, so a redelivery does nothing twice):

1. no model serves the dataset, the file brought no data (a duplicate), monitoring is
   off, or the file has no value in the label column: a point saying so is recorded,
   and nothing else happens;
2. otherwise the file's labelled rows (every k-th beyond ``max_rows``) are sent in
   batches of ``batch_rows`` through the path clients use (the deployer: the local
   model server, or the Vertex AI endpoint), built as the canary's are (the serving
   signature's inputs, the key included, no nulls); rows the endpoint answered with
   another version (a canary in progress) are left out and counted;
3. the evaluation's metrics, overall and per slice, are recorded as
   ``datasets/<dataset>/monitoring/<run_id>.json``; a drop of the configured metric
   beyond ``max_drop`` publishes a WARNING alert and a train request (request id
   ``monitor:<run_id>``) whose reason names the metric, the values and the threshold.

The step never stops the chain: a file it cannot score (a label that is not a class,
a served model that refuses the rows) is recorded as a failed point and alerted as a
WARNING; the run goes on (the step fails, the run does not). Transient errors (the
server cannot answer now) are retried by the trigger like any step's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

from cascade.core.claims import ClaimHandle
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError, PermanentError
from cascade.core.messages import (
    MAX_REASON_CHARS,
    Alert,
    DataValidated,
    StepMessage,
    TrainRequest,
)
from cascade.core.observability import RunLogger
from cascade.core.paths import DatasetPaths
from cascade.core.pipeline_config import PipelineConfig, load_pipeline_config
from cascade.core.runs import RunRecord
from cascade.deploy.deployer import Deployer
from cascade.deploy.deployers import deployer_for
from cascade.deploy.smoke import read_transform_spec
from cascade.evaluation.monitoring import (
    MonitoringPoint,
    decay_check,
    encode_labels,
    read_series,
    reference_value,
    score_predictions,
    write_point,
)
from cascade.serving.state import DeployedVersion, read_serving_state
from cascade.steps.runner import StepOutcome, execute_step
from cascade.transform.materialize import file_batches
from cascade.transform.shard_columns import shard_schema
from cascade.transform.snapshot import GcsObjectOpener, ObjectOpener
from cascade.transform.spec import NumericTransform, SnapshotFile, TransformSpec
from cascade.validation.manifest import AcceptedFile

__all__ = ["MONITOR_REQUEST_PREFIX", "STEP", "handle_data_validated", "monitor_run"]

STEP = "monitor"
MONITOR_REQUEST_PREFIX = "monitor:"
"""The request id of a retrain the monitor asks for: ``monitor:<run_id>`` (reserved)."""


def handle_data_validated(
    ctx: StepContext,
    message: DataValidated,
    *,
    event_id: str,
    opener: ObjectOpener | None = None,
    deployer: Deployer | None = None,
) -> StepOutcome | None:
    """``opener`` reads landed files (default: the storage client); ``deployer`` sends the
    predictions (default: the deployer of ``Settings.deploy_target``)."""
    run = ctx.ledger.get(message.run_id)
    if run is None:
        raise BadRequestError(f"data-validated for unknown run {message.run_id}")

    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        reader = opener if opener is not None else GcsObjectOpener(ctx.store)
        try:
            return monitor_run(ctx, run, message, reader, deployer, log)
        except PermanentError as error:  # recorded and alerted; the chain goes on
            log.warning("monitor could not score the file: %s", error)
            point = MonitoringPoint(
                dataset=run.dataset,
                run_id=run.run_id,
                file_uri=_file_uri(message),
                status="failed",
                detail=str(error),
                at=ctx.clock(),
            )
            uri = write_point(ctx.artifacts, point)
            alert = Alert(
                dataset=run.dataset,
                run_id=run.run_id,
                step=STEP,
                severity="WARNING",
                summary=f"{run.run_id}: the served model could not be scored on "
                f"{_file_uri(message)}: {error}",
                details={"monitoring": uri},
                at=ctx.clock(),
            )
            return StepOutcome(
                state="failed", summary=str(error), outputs={"point": uri}, messages=[alert]
            )

    return execute_step(ctx, run=run, step=STEP, owner=event_id, body=body)


def _file_uri(message: DataValidated) -> str:
    return f"gs://{message.source.bucket}/{message.source.name}"


def monitor_run(
    ctx: StepContext,
    run: RunRecord,
    message: DataValidated,
    opener: ObjectOpener,
    deployer: Deployer | None,
    log: RunLogger,
) -> StepOutcome:
    """The body of the step: the point recorded, and what it publishes."""
    config = load_pipeline_config(ctx.artifacts, run.dataset)
    monitoring = config.evaluation.monitoring
    file_uri = _file_uri(message)

    def record(status: Any, detail: str, **fields: Any) -> StepOutcome:
        point = MonitoringPoint(
            dataset=run.dataset,
            run_id=run.run_id,
            file_uri=file_uri,
            status=status,
            detail=detail,
            at=ctx.clock(),
            **fields,
        )
        uri = write_point(ctx.artifacts, point)
        log.info("monitor: %s", detail)
        return StepOutcome(summary=detail, outputs={"point": uri, "status": status})

    if not monitoring.enabled:
        return record("not_scored", "evaluation.monitoring.enabled is false")
    if config.label is None:
        return record("no_labels", "the pipeline config names no label")
    found = read_serving_state(ctx.artifacts, run.dataset)
    serving = None if found is None else found[0].primary
    if serving is None:
        return record("no_model", f"no model serves {run.dataset}: nothing to score")
    model = {
        "model_version": serving.version,
        "model_uri": serving.model_uri,
        "model_run_id": serving.run_id,
    }
    manifest = ctx.artifacts.read_model(
        DatasetPaths(run.dataset).accepted_manifest(run.run_id), AcceptedFile
    )
    if manifest is None or manifest[0].duplicate_of is not None:
        return record("not_scored", "the file added no data (a duplicate)", **model)
    accepted = manifest[0]
    spec = read_transform_spec(ctx.artifacts, serving.run_id)
    if spec is None:
        return record(
            "not_scored",
            f"the serving model's run {serving.run_id} has no transform spec to read rows with",
            **model,
        )
    rows = _labelled_rows(accepted, opener, spec, config, monitoring.max_rows)
    if rows.count == 0:
        return record(
            "no_labels",
            f"no row of {file_uri} has a value in the label column {spec.label.name!r}",
            rows_read=rows.read,
            **model,
        )
    targets = encode_labels(spec.label, rows.labels, rows.row_numbers, accepted.uri)
    chosen, predictions, by_others = _predict(
        deployer or deployer_for(ctx), run.dataset, serving, rows.instances, monitoring.batch_rows
    )
    slices = {name: values[chosen] for name, values in rows.slices.items()}
    metrics = score_predictions(serving.model_uri, spec.label, targets[chosen], predictions, slices)
    earlier = read_series(ctx.artifacts, run.dataset)
    reference, source = reference_value(
        ctx.artifacts,
        monitoring,
        model_run_id=serving.run_id,
        model_version=serving.version,
        earlier=(point for point in earlier if point.run_id != run.run_id),
    )
    decay = decay_check(monitoring, metrics, reference, source)
    point = MonitoringPoint(
        dataset=run.dataset,
        run_id=run.run_id,
        file_uri=file_uri,
        status="scored",
        detail=decay.detail,
        rows_read=rows.read,
        rows_labelled=rows.labelled,
        rows_scored=len(chosen),
        sampled_every=rows.every,
        rows_by_other_versions=by_others,
        metrics=metrics,
        decay=decay,
        at=ctx.clock(),
        **model,
    )
    uri = write_point(ctx.artifacts, point)
    sampled = f" (every {rows.every}th row)" if rows.every > 1 else ""
    summary = f"v{serving.version} scored on {len(chosen)} rows{sampled}: {decay.detail}"
    log.info("monitor: %s", summary)
    messages: list[StepMessage] = []
    if decay.decayed:
        reason = f"the served model decayed on {accepted.uri}: {decay.detail}"[:MAX_REASON_CHARS]
        messages = [
            Alert(
                dataset=run.dataset,
                run_id=run.run_id,
                step=STEP,
                severity="WARNING",
                summary=f"{run.run_id}: {reason}",
                details={"monitoring": uri, "decay": decay.model_dump(mode="json")},
                at=ctx.clock(),
            ),
            TrainRequest(
                dataset=run.dataset,
                request_id=f"{MONITOR_REQUEST_PREFIX}{run.run_id}",
                reason=reason,
            ),
        ]
    outputs: dict[str, Any] = {
        "point": uri,
        "status": "scored",
        "model_version": serving.version,
        "rows_scored": len(chosen),
        "decayed": decay.decayed,
    }
    if decay.value is not None:
        outputs[decay.metric] = decay.value
    return StepOutcome(summary=summary, outputs=outputs, messages=messages)


# Rows --------------------------------------------------------------------------------------


class _Rows:
    """The sampled labelled rows: instances for the served model, labels, slice values."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.read = 0
        self.labelled = 0
        self.instances: list[dict[str, Any]] = []
        self.labels: list[str] = []
        self.row_numbers: list[int] = []
        self.slice_values: dict[str, list[str]] = {}
        self.slices: dict[str, npt.NDArray[np.object_]] = {}

    @property
    def count(self) -> int:
        return len(self.instances)


def _labelled_rows(
    accepted: AcceptedFile,
    opener: ObjectOpener,
    spec: TransformSpec,
    config: PipelineConfig,
    max_rows: int,
) -> _Rows:
    """Read the file with the serving model's columns (the label as text, so a bad value
    is named with its row), keeping every k-th labelled row up to ``max_rows``."""
    every = max(1, math.ceil(accepted.num_examples / max_rows))
    rows = _Rows(every)
    label = spec.label.name
    base = shard_schema(spec.label, list(spec.features), spec.passthrough_key)
    slice_features = [name for name in config.training.slice_features if name != label]
    fields = [field for field in base if field.name != label]
    fields.append(pa.field(label, pa.string()))
    fields += [pa.field(name, pa.string()) for name in slice_features if name not in base.names]
    schema = pa.schema(fields)
    numeric = {f.name for f in spec.features if isinstance(f, NumericTransform)}
    key = spec.passthrough_key or "key"
    rows.slice_values = {name: [] for name in slice_features}
    file = SnapshotFile(
        uri=accepted.uri,
        generation=accepted.generation,
        rows=0,
        record_fields=accepted.record_fields,  # the records validate judged
    )
    for table in file_batches(file, opener, schema, config.validation):
        for index, record in _records(table, rows.read):
            value = record.get(label)
            if value is None or value == "":
                continue
            rows.labelled += 1
            if (rows.labelled - 1) % every or rows.count >= max_rows:
                continue
            instance = {
                feature.name: _feature_value(record.get(feature.name), feature.name in numeric)
                for feature in spec.features
            }
            instance[key] = f"{accepted.file_id}-row-{index}"
            rows.instances.append(instance)
            rows.labels.append(str(value))
            rows.row_numbers.append(index)
            for name in slice_features:
                rows.slice_values[name].append(_text(record.get(name)))
        rows.read += table.num_rows
    rows.slices = {
        name: np.asarray(values, dtype=object) for name, values in rows.slice_values.items()
    }
    return rows


def _records(table: pa.Table, offset: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number in the file, counted from 1 after any header; the row's values)."""
    for position, record in enumerate(table.to_pylist()):
        yield offset + position + 1, record


def _feature_value(value: Any, numeric: bool) -> Any:
    """A missing value the way the exported model reads it: NaN for a number, "" for text."""
    if value is None:
        return math.nan if numeric else ""
    return float(value) if numeric else str(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _predict(
    deployer: Deployer,
    dataset: str,
    serving: DeployedVersion,
    instances: list[dict[str, Any]],
    batch_rows: int,
) -> tuple[npt.NDArray[np.int64], list[Any], int]:
    """The rows the serving version answered (their positions), its predictions for
    them, and how many rows another version answered (left out)."""
    chosen: list[int] = []
    predictions: list[Any] = []
    by_others = 0
    for start in range(0, len(instances), batch_rows):
        batch = instances[start : start + batch_rows]
        answer = deployer.predict(dataset, serving.version, batch)
        if answer.version is not None and answer.version != serving.version:
            by_others += len(batch)
            continue
        chosen.extend(range(start, start + len(batch)))
        predictions.extend(answer.predictions)
    return np.asarray(chosen, dtype=np.int64), predictions, by_others
