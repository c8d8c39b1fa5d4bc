"""A file above the Beam threshold: validated by the Beam pipeline through the local job
service's Dataflow stand-in, with the same accepted outputs as the in-function path on
the same bytes, and the chain going on (transform, train, evaluate, deploy) as usual.

Two datasets get the same file: one routes every file over 1,000 bytes to Beam (in
64 KiB ranges, so the pipeline merges several), the other validates in the function.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from cascade.core.paths import DatasetPaths, RunPaths
from cascade.core.validation_config import ValidationConfig
from cascade.jobs.beam_jobs import LocalBeamRunner
from cascade.validation.baseline_store import BaselineStore
from cascade.validation.manifest import AcceptedFile
from cascade.validation.statistics import statistics_proto
from cascade.validation.tfmd import statistics_pb2
from tests.e2e.conftest import E2E_PIPELINE, Scenario
from tests.unit.beam.beam_venv import rounded

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

BEAM_ROUTING = "validation:\n  beam: {above_bytes: 1000, block_bytes: 65536}\n"


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


def test_a_file_above_the_threshold_is_validated_by_beam_like_the_function_does(
    scenario: Scenario,
) -> None:
    scenario.configure(E2E_PIPELINE + BEAM_ROUTING)
    in_function = Scenario(scenario.cloud, f"e2e{uuid.uuid4().hex[:10]}")
    in_function.configure(E2E_PIPELINE)

    beam_run_id = scenario.upload(rows=2000, seed=1)
    function_run_id = in_function.upload(rows=2000, seed=1)

    [beam_run] = scenario.settle(timeout=600)
    [function_run] = in_function.settle(timeout=600)

    assert beam_run.state == "succeeded", beam_run.error
    assert function_run.state == "succeeded", function_run.error
    # validate launched the Beam job and waited; its end finished validate.
    assert {"validate", "validate_statistics", "transform", "train", "training_job"} <= set(
        beam_run.steps
    )
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
    assert beam_run.steps["evaluate"].outputs["verdict"] == "blessed"
