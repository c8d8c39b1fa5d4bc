"""Many files for one dataset within a few seconds, on the local cloud, whose storage
refuses a second write of one object name within a second (``localcloud.gcs_front``, as
Cloud Storage does): every file is validated and accepted, none fails, and the baseline
counts each file exactly once."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from cascade.cli.sample_data import SAMPLE_PIPELINE_CONFIG, sample_csv
from cascade.core.pipeline_config import push_pipeline_config
from cascade.core.runs import RunRecord
from cascade.validation.baseline_store import BaselineStore
from tests.conftest import LocalCloud

pytestmark = pytest.mark.integration

FILES = 12
ROWS = 120
CONFIG = SAMPLE_PIPELINE_CONFIG.replace(
    "training:\n", "training:\n  retrain_on: value_skew  # healthy files: no training here\n"
)


def _validated(run: RunRecord) -> bool:
    step = run.steps.get("validate")
    return step is not None and step.state not in ("running", "pending")


def test_a_burst_of_files_for_one_dataset_is_all_accepted_and_counted_once(
    local_cloud: LocalCloud,
) -> None:
    dataset = f"ds{uuid.uuid4().hex[:8]}"
    push_pipeline_config(local_cloud.artifacts, dataset, CONFIG.encode(), where="test config")
    files = {
        f"{dataset}/part-{index:03d}.csv": sample_csv(ROWS, seed=index) for index in range(FILES)
    }

    with ThreadPoolExecutor(4) as pool:  # all land within a few seconds
        generations = dict(
            zip(files, pool.map(lambda item: local_cloud.upload(*item), files.items()), strict=True)
        )

    runs = [
        local_cloud.wait_for_run(local_cloud.run_id_for(name, generation), _validated, timeout=240)
        for name, generation in generations.items()
    ]
    states = {run.run_id: run.steps["validate"].state for run in runs}
    assert set(states.values()) == {"succeeded"}, states
    assert all(run.state != "failed" for run in runs), [run.error for run in runs]
    baseline = BaselineStore(local_cloud.artifacts, dataset).load()
    assert baseline is not None
    assert baseline.files == FILES
    assert baseline.summary.num_examples == FILES * ROWS
