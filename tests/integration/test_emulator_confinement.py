"""The local GCS emulator cannot write outside its state folder (issue 13, defect 2).

fake-gcs-server maps object names onto file paths; before it ran confined (chroot), an
object named ``credit/../../../../x`` was written outside ``.cascade/``. GCS itself
accepts ``..`` as plain data in object names, so the twin keeps accepting the upload
(it is not stricter than GCS); the emulator just cannot reach beyond its root, and
validate and reconcile refuse such names with a recorded error.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from cascade.core.context import StepContext
from cascade.core.runs import RunRecord
from cascade.steps.reconcile import reconcile
from cascade.validation.names import INVALID_NAMES_DATASET
from tests.conftest import LocalCloud, running_test_cloud

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def private_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    with running_test_cloud(tmp_path_factory.mktemp("confined-cloud")) as cloud:
        yield cloud


def _files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


def _finished(run: RunRecord) -> bool:
    return run.state != "running"


def test_an_escaping_object_name_writes_nothing_outside_the_state_folder(
    private_cloud: LocalCloud,
) -> None:
    state = private_cloud.local.state_dir
    test_root = state.parent  # <tmp>/state: four '..' from <state>/gcs/<bucket>/credit
    marker = f"escaped-{uuid.uuid4().hex[:8]}"
    near = "credit/" + "../" * 4 + f"{marker}/near.csv"  # would land in <tmp>/<marker>/
    far = "credit/" + "../" * 40 + f"{marker}/far.csv"  # would land in /<marker>/
    try:
        generations = {name: private_cloud.upload(name, b"a,b\n1,2\n") for name in (near, far)}

        escaped = [path for path in test_root.rglob(f"*{marker}*") if state not in path.parents]
        assert escaped == []
        assert not (test_root / marker).exists()
        assert not Path("/", marker).exists()
        # the bytes went somewhere inside the emulator's root, and the upload was accepted
        assert any(marker in str(path) for path in _files_under(state / "gcs"))
        for name, generation in generations.items():
            run_id = private_cloud.run_id_for(name, generation)
            assert run_id.startswith(f"{INVALID_NAMES_DATASET}-")
            run = private_cloud.wait_for_run(run_id, _finished, timeout=60)
            assert run.state == "failed"
            assert "'..' path segment" in (run.error or "")
    finally:
        shutil.rmtree(test_root / marker, ignore_errors=True)
        shutil.rmtree(Path("/", marker), ignore_errors=True)


def test_reconcile_derives_no_run_from_the_emulators_cleaned_name(
    private_cloud: LocalCloud,
) -> None:
    dataset = f"ds{uuid.uuid4().hex[:8]}"
    name = f"{dataset}/../{dataset}/a.csv"
    generation = private_cloud.upload(name, b"a,b\n1,2\n")
    refused = private_cloud.wait_for_run(
        private_cloud.run_id_for(name, generation), _finished, timeout=60
    )
    assert refused.state == "failed"
    cleaned = f"{dataset}/a.csv"
    listed = private_cloud.landing.stat(cleaned)
    assert listed is not None  # the emulator keeps (and lists) it under the cleaned name

    report = reconcile(
        StepContext.from_settings(private_cloud.settings),
        stale_after=timedelta(0),
        dataset=dataset,
    )

    assert report.uploads_started == []
    assert report.aliases_skipped == [f"gs://{private_cloud.settings.landing_bucket}/{cleaned}"]
    assert private_cloud.ledger.get(private_cloud.run_id_for(cleaned, listed.generation)) is None
