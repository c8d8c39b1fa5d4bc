"""A file above the Beam threshold: validated by the Beam pipeline through the local job
service's Dataflow stand-in, with the same accepted outputs as the in-function path on
the same bytes; its snapshot's train/eval split written by the Beam pipeline too
(``transform.beam: {always: true}``: ``python -m cascade.beam --mode=materialize``, the
split job's end finishing transform), equal to what the in-function path writes for the
same snapshot; and the chain going on (train on the job's shards, evaluate, deploy).

Two datasets get the same file: one routes every file over 1,000 bytes to Beam (in
64 KiB ranges, so the pipeline merges several) and its split to Beam, the other does both
in the functions. The split is compared by running the function's ``write_split_shards``
on the request the step stored (the run's snapshot and fitted transform) against the
same landed objects: per split the Arrow schema, the multiset of rows and the counts the
spec records.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import pyarrow.parquet as pq
import pytest

from cascade.beam.materialize_request import MaterializeRequest
from cascade.core.paths import DatasetPaths, RunPaths
from cascade.core.runs import RunRecord
from cascade.core.store import ArtifactStore
from cascade.core.validation_config import ValidationConfig
from cascade.jobs.beam_jobs import LocalBeamRunner
from cascade.jobs.beam_records import materialize_request_name, read_beam_job_record
from cascade.transform.catalog import read_transform
from cascade.transform.materialize import write_split_shards
from cascade.transform.snapshot import GcsObjectOpener
from cascade.validation.baseline_store import BaselineStore
from cascade.validation.manifest import AcceptedFile
from cascade.validation.statistics import statistics_proto
from cascade.validation.tfmd import statistics_pb2
from tests.e2e.conftest import E2E_PIPELINE, Scenario
from tests.unit.beam.beam_venv import rounded

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

BEAM_ROUTING = "validation:\n  beam: {above_bytes: 1000, block_bytes: 65536}\n"
BEAM_SPLIT = E2E_PIPELINE.replace("transform:\n", "transform:\n  beam: {always: true}\n", 1)


def _validation_output(scenario: Scenario, run_id: str, name: str) -> bytes:
    stored = scenario.cloud.artifacts.read(f"{RunPaths(run_id).step_dir('validation')}/{name}")
    assert stored is not None, name
    return stored.data


def _statistics_without_name(data: bytes) -> Any:
    """The statistics, named by neither file, floats to 12 significant digits: means and
    variances merge by Chan et al.'s formula, whose rounding depends on the merge order
    (docs/beam.md, "Equality"); every count, bucket, minimum and maximum is exact."""
    statistics = statistics_pb2.DatasetFeatureStatisticsList.FromString(data)
    statistics.datasets[0].name = ""  # the file's uri: another dataset's object
    return rounded(statistics)


def test_a_big_file_is_validated_and_split_by_beam_like_the_functions_do(
    scenario: Scenario,
) -> None:
    assert "beam: {always: true}" in BEAM_SPLIT
    scenario.configure(BEAM_SPLIT + BEAM_ROUTING)
    in_function = Scenario(scenario.cloud, f"e2e{uuid.uuid4().hex[:10]}")
    in_function.configure(E2E_PIPELINE)

    beam_run_id = scenario.upload(rows=2000, seed=1)
    function_run_id = in_function.upload(rows=2000, seed=1)

    [beam_run] = scenario.settle(timeout=600)
    [function_run] = in_function.settle(timeout=600)

    assert beam_run.state == "succeeded", beam_run.error
    assert function_run.state == "succeeded", function_run.error
    # validate launched the Beam job and waited; its end finished validate.
    assert {
        "validate",
        "validate_statistics",
        "transform",
        "transform_split",
        "train",
        "training_job",
    } <= set(beam_run.steps)
    assert "validate_statistics" not in function_run.steps
    launched = beam_run.steps["validate"].outputs
    assert "manifest" not in launched
    runner = LocalBeamRunner(scenario.cloud.state.environment["CASCADE_JOB_SERVICE_URL"])
    job = runner.job(str(launched["beam_job"]))
    assert job.state == "succeeded"
    assert job.parameters["block_bytes"] == "65536"
    assert int(launched["size"]) > 65536  # so the pipeline merged several ranges
    finished = beam_run.steps["validate_statistics"].outputs
    assert "manifest" in finished  # accepted into the dataset
    # The accepted outputs equal the in-function path's on the same bytes.
    assert _statistics_without_name(
        _validation_output(scenario, beam_run_id, "stats.pb")
    ) == _statistics_without_name(_validation_output(in_function, function_run_id, "stats.pb"))
    for name in ("anomalies.pbtxt", "schema.pbtxt"):
        assert _validation_output(scenario, beam_run_id, name) == _validation_output(
            in_function, function_run_id, name
        )
    artifacts = scenario.cloud.artifacts
    baselines = [BaselineStore(artifacts, s.dataset).load() for s in (scenario, in_function)]
    assert baselines[0] is not None
    assert baselines[1] is not None
    assert baselines[0].files == baselines[1].files == 1
    config = ValidationConfig()
    assert rounded(statistics_proto(baselines[0].summary, config, name="")) == rounded(
        statistics_proto(baselines[1].summary, config, name="")
    )
    manifests = [
        artifacts.read_model(DatasetPaths(s.dataset).accepted_manifest(run_id), AcceptedFile)
        for s, run_id in ((scenario, beam_run_id), (in_function, function_run_id))
    ]
    assert manifests[0] is not None
    assert manifests[1] is not None
    assert manifests[0][0].num_examples == manifests[1][0].num_examples == 2000
    assert manifests[0][0].content_digest == manifests[1][0].content_digest
    assert manifests[0][0].value_skews == manifests[1][0].value_skews
    # The chain went on from the Beam-validated file as from any other.
    assert all(step.state == "succeeded" for step in beam_run.steps.values())
    _check_the_split_is_the_functions(scenario, beam_run, beam_run_id)
    # The trainer read the job's shards: a model was trained and judged.
    assert beam_run.steps["evaluate"].outputs["verdict"] == "blessed"


def _table(store: ArtifactStore, uri: str) -> Any:
    stored = store.read(uri.removeprefix(store.uri("")))
    assert stored is not None, uri
    return pq.read_table(io.BytesIO(stored.data))


def _rows(store: ArtifactStore, uris: list[str]) -> list[str]:
    """Every row of the shards, as text (NaN equal to NaN), in a stable order."""
    rows = [repr(row) for uri in uris for row in _table(store, uri).to_pylist()]
    return sorted(rows)


def _check_the_split_is_the_functions(scenario: Scenario, run: RunRecord, run_id: str) -> None:
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
