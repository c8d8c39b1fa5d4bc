"""A run whose transform says ``beam: {always: true}``: its train/eval split written by the
Beam pipeline (``python -m cascade.beam --mode=materialize``) through the local job
service's Dataflow stand-in, the split job's end finishing transform, the trainer reading
the job's shards, and the chain going on to a blessed model.

The shards equal what the in-function path writes for the same snapshot: the test runs
the function's ``write_split_shards`` on the request the step stored (the run's snapshot
and fitted transform) against the same landed objects, and compares per split the Arrow
schema, the multiset of rows and the counts the spec records.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import pyarrow.parquet as pq
import pytest

from cascade.beam.materialize_request import MaterializeRequest
from cascade.core.store import ArtifactStore
from cascade.jobs.beam_jobs import LocalBeamRunner
from cascade.jobs.beam_records import materialize_request_name, read_beam_job_record
from cascade.transform.catalog import read_transform
from cascade.transform.materialize import write_split_shards
from cascade.transform.snapshot import GcsObjectOpener
from tests.e2e.conftest import E2E_PIPELINE, Scenario

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

BEAM_SPLIT = E2E_PIPELINE.replace("transform:\n", "transform:\n  beam: {always: true}\n", 1)


def _table(store: ArtifactStore, uri: str) -> Any:
    stored = store.read(uri.removeprefix(store.uri("")))
    assert stored is not None, uri
    return pq.read_table(io.BytesIO(stored.data))


def _rows(store: ArtifactStore, uris: list[str]) -> list[str]:
    """Every row of the shards, as text (NaN equal to NaN), in a stable order."""
    rows = [repr(row) for uri in uris for row in _table(store, uri).to_pylist()]
    return sorted(rows)


def test_a_split_written_by_beam_is_the_functions_and_trains_a_model(scenario: Scenario) -> None:
    assert "beam: {always: true}" in BEAM_SPLIT
    scenario.configure(BEAM_SPLIT)

    run_id = scenario.upload(rows=2000, seed=1)
    [run] = scenario.settle(timeout=600)

    assert run.state == "succeeded", run.error
    assert {"validate", "transform", "transform_split", "train", "training_job"} <= set(run.steps)
    assert all(step.state == "succeeded" for step in run.steps.values())
    # transform launched the Beam job and waited; the job's end finished transform.
    launched = run.steps["transform"].outputs
    assert "train_rows" not in launched
    runner = LocalBeamRunner(scenario.cloud.state.environment["CASCADE_JOB_SERVICE_URL"])
    job = runner.job(str(launched["beam_job"]))
    assert job.state == "succeeded"
    assert job.parameters["mode"] == "materialize"
    artifacts, landing = scenario.cloud.artifacts, scenario.cloud.landing
    record = read_beam_job_record(artifacts, job.job_id)
    assert record is not None
    assert record.kind == "transform_split"
    spec = read_transform(artifacts, run_id)
    assert spec is not None
    output = artifacts.uri(f"dataflow/outputs/{run_id}/transform/")
    assert spec.train_files
    assert spec.eval_files
    assert all(uri.startswith(output) for uri in spec.train_files + spec.eval_files)
    assert run.steps["transform_split"].outputs["train_rows"] == spec.train_rows
    # The function path's split of the same snapshot with the same fitted transform.
    stored = artifacts.read(materialize_request_name(run_id))
    assert stored is not None
    request = MaterializeRequest.model_validate_json(stored.data)
    stores = {artifacts.bucket_name: artifacts, landing.bucket_name: landing}
    folder = f"tests/{uuid.uuid4().hex}/transform"
    shards = write_split_shards(
        artifacts,
        request.files,
        GcsObjectOpener(stores.__getitem__),
        schema=request.row_schema(),
        split=request.split,
        folder=folder,
        config=request.validation,
        newest=request.newest,
        newest_column=request.newest_column,
    )
    try:
        assert (spec.train_rows, spec.eval_rows, spec.newest_eval_rows) == (
            shards.train_rows,
            shards.eval_rows,
            shards.newest_eval_rows,
        )
        assert spec.train_rows + spec.eval_rows == 2000
        for beam_uris, names in (
            (spec.train_files, shards.train_names),
            (spec.eval_files, shards.eval_names),
        ):
            function_uris = [artifacts.uri(name) for name in names]
            schema = _table(artifacts, function_uris[0]).schema
            assert all(_table(artifacts, uri).schema == schema for uri in beam_uris)
            assert _rows(artifacts, beam_uris) == _rows(artifacts, function_uris)
    finally:
        for name in list(artifacts.list_names(f"{folder}/")):
            artifacts.delete(name)
    # The trainer read the job's shards: a model was trained and judged.
    assert run.steps["evaluate"].outputs["verdict"] == "blessed"
