"""The local cloud's web console runs as the console's service account holds it on Cloud
Run (infra/console.tf; tests/infra/test_console_tf.py compares the two): what its
actions do, nothing more."""

from __future__ import annotations

from pathlib import Path

from cascade.core.grants import IDENTITY_ENV, LocalIdentity, console_identity
from cascade.core.settings import Settings
from cascade.core.topology import load_topology
from cascade.localcloud.components import console_spec
from cascade.localcloud.local_settings import LocalCloudSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = load_topology(REPO_ROOT / "infra" / "topology.yaml")


def test_the_console_publishes_retrains_blessings_and_releases_and_nothing_else() -> None:
    settings = Settings()
    identity = console_identity(TOPOLOGY, settings)

    assert (
        identity.principal
        == f"{settings.topic_prefix}console@{settings.project}.iam.gserviceaccount.com"
    )
    assert identity.publish == {
        settings.topic_path(topic)
        for topic in ("train-requests", "model-blessed", "data-validated", "alerts", "run-ended")
    }
    assert settings.topic_path("model-trained") not in identity.publish
    assert settings.topic_path("job-events") not in identity.publish


def test_the_console_reads_landed_files_and_writes_only_artifacts() -> None:
    settings = Settings()
    identity = console_identity(TOPOLOGY, settings)

    assert identity.may("storage.objects.list", settings.landing_bucket)
    assert identity.may("storage.objects.get", settings.landing_bucket)
    assert not identity.may("storage.objects.create", settings.landing_bucket)
    assert not identity.may("storage.objects.delete", settings.landing_bucket)
    assert identity.may("storage.objects.create", settings.artifacts_bucket)
    assert identity.may("storage.objects.delete", settings.artifacts_bucket)
    assert not identity.bigquery_jobs
    assert identity.tables_read == identity.tables_write == frozenset()


def test_the_supervised_console_runs_with_that_identity_on_its_port(tmp_path: Path) -> None:
    local = LocalCloudSettings(state_dir=tmp_path, repo_root=REPO_ROOT, console_port=18090)

    spec = console_spec(local, TOPOLOGY, {"PATH": "/usr/bin"})

    assert spec.argv[-2:] == ["--port", "18090"]
    assert "--local-cloud-child" in spec.argv
    carried = LocalIdentity.model_validate_json(spec.env[IDENTITY_ENV])
    assert carried == console_identity(TOPOLOGY, local.runtime_settings())
    assert local.console_url == "http://127.0.0.1:18090/"
    assert LocalCloudSettings(console_port=0).console_url is None
