"""The local cloud's identities against the real emulators: granted calls pass, the rest
fail with the errors Google returns (PermissionDenied from Pub/Sub, Forbidden from GCS).

Only the two emulators run here (the Pub/Sub emulator and fake-gcs-server, started the
way the supervisor starts them); the clients are cascade.core.clients' own, built from
Settings with the identity the local cloud gives the ``train`` function.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc

from cascade.core.bus import MessageBus
from cascade.core.clients import make_publisher, make_storage_client, make_subscriber
from cascade.core.errors import TransientError
from cascade.core.grants import identity_for
from cascade.core.messages import ModelTrained, TrainRequest
from cascade.core.settings import Settings
from cascade.core.topology import load_topology
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.pubsub_admin import provision_pubsub
from tests.conftest import started_emulators

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloudSettings]:
    with started_emulators(tmp_path_factory.mktemp("emulators")) as local:
        admin = local.runtime_settings()
        provision_pubsub(
            load_topology(REPO_ROOT / "infra" / "topology.yaml"),
            admin,
            local.notifications_topic,
            make_publisher(admin),
            make_subscriber(admin),
        )
        storage = make_storage_client(admin)
        for bucket in (admin.landing_bucket, admin.artifacts_bucket):
            with contextlib.suppress(gexc.Conflict):
                storage.create_bucket(bucket)
        yield local


def _as(local: LocalCloudSettings, function: str) -> Settings:
    admin = local.runtime_settings()
    topology = load_topology(REPO_ROOT / "infra" / "topology.yaml")
    return admin.model_copy(
        update={"local_identity": identity_for(topology, function, admin), "publish_timeout_s": 10}
    )


def test_a_granted_topic_takes_the_message(emulators: LocalCloudSettings) -> None:
    settings = _as(emulators, "train")
    bus = MessageBus(make_publisher(settings), settings)

    assert bus.publish(TrainRequest(dataset="credit", request_id="r1"))


def test_an_undeclared_topic_is_refused_as_google_refuses_it(
    emulators: LocalCloudSettings,
) -> None:
    settings = _as(emulators, "train")
    publisher = make_publisher(settings)
    topic = settings.topic_path("model-trained")

    future = publisher.publish(topic, b"{}")
    with pytest.raises(gexc.PermissionDenied) as denied:
        future.result(timeout=10)

    error = denied.value
    assert error.code == 403
    assert error.grpc_status_code is not None
    assert error.grpc_status_code.name == "PERMISSION_DENIED"
    assert str(error).startswith("403 User not authorized to perform this action.")
    assert "cascade-train@cascade-local.iam.gserviceaccount.com" in str(error)
    assert "identity of train" in str(error)
    assert topic in str(error)


def test_the_bus_reports_the_refusal_naming_function_and_topic(
    emulators: LocalCloudSettings,
) -> None:
    settings = _as(emulators, "train")
    bus = MessageBus(make_publisher(settings), settings)

    with pytest.raises(TransientError) as raised:  # retried, then dead-lettered
        bus.publish(ModelTrained(dataset="credit", run_id="run-1"))

    assert isinstance(raised.value.__cause__, gexc.PermissionDenied)
    assert "cascade-model-trained" in str(raised.value)
    assert "identity of train" in str(raised.value)


def test_a_granted_bucket_is_written_and_read(emulators: LocalCloudSettings) -> None:
    settings = _as(emulators, "train")
    bucket = make_storage_client(settings).bucket(settings.artifacts_bucket)

    bucket.blob("runs/x/probe.txt").upload_from_string(b"ok")

    assert bucket.blob("runs/x/probe.txt").download_as_bytes() == b"ok"
    assert [b.name for b in bucket.list_blobs(prefix="runs/x/")] == ["runs/x/probe.txt"]


def test_an_undeclared_bucket_write_is_forbidden_as_google_forbids_it(
    emulators: LocalCloudSettings,
) -> None:
    settings = _as(emulators, "train")  # train neither reads nor writes landing
    bucket = make_storage_client(settings).bucket(settings.landing_bucket)

    with pytest.raises(gexc.Forbidden) as forbidden:
        bucket.blob("credit/new.csv").upload_from_string(b"a,b\n1,2\n")

    # The client formats an upload's failure as "<method> <url>: <body>", as it does
    # for Google's own 403; the body is Google's JSON error.
    message = forbidden.value.message
    assert forbidden.value.code == 403
    assert (
        '"message": "cascade-train@cascade-local.iam.gserviceaccount.com does not have '
        "storage.objects.create access to the Google Cloud Storage object. Permission "
        "'storage.objects.create' denied on resource (or it may not exist).\""
    ) in message
    assert f"/b/{settings.landing_bucket}/o" in message
    assert '"reason": "forbidden"' in message


def test_a_read_only_bucket_refuses_writes_but_serves_reads(
    emulators: LocalCloudSettings,
) -> None:
    admin = emulators.runtime_settings()
    make_storage_client(admin).bucket(admin.landing_bucket).blob("credit/a.csv").upload_from_string(
        b"x\n"
    )
    settings = _as(emulators, "validate")  # reads landing, writes artifacts
    landing = make_storage_client(settings).bucket(settings.landing_bucket)

    assert landing.blob("credit/a.csv").download_as_bytes() == b"x\n"
    with pytest.raises(gexc.Forbidden, match=r"storage\.objects\.delete"):
        landing.blob("credit/a.csv").delete()
    with pytest.raises(gexc.Forbidden, match=r"storage\.buckets\.get"):
        landing.reload()


def test_a_create_only_bucket_takes_new_objects_but_never_overwrites_or_deletes(
    emulators: LocalCloudSettings,
) -> None:
    """``extract`` holds objectCreator on landing: a create-only write (and copy) of a
    new name passes; an overwrite, a write that could be one, and a delete are refused
    (Cloud Storage needs storage.objects.delete to replace an object)."""
    admin = emulators.runtime_settings()
    staged = make_storage_client(admin).bucket(admin.artifacts_bucket).blob("staging/p.parquet")
    staged.upload_from_string(b"shard")
    settings = _as(emulators, "extract")
    client = make_storage_client(settings)
    landing = client.bucket(settings.landing_bucket)

    landing.blob("credit/extracts/new.parquet").upload_from_string(b"1", if_generation_match=0)
    client.bucket(settings.artifacts_bucket).copy_blob(
        staged, landing, "credit/extracts/copied.parquet", if_generation_match=0
    )

    assert landing.blob("credit/extracts/copied.parquet").download_as_bytes() == b"shard"
    with pytest.raises(gexc.PreconditionFailed):  # the name exists: Cloud Storage's 412
        landing.blob("credit/extracts/new.parquet").upload_from_string(b"2", if_generation_match=0)
    with pytest.raises(gexc.Forbidden, match=r"storage\.objects\.delete"):
        landing.blob("credit/extracts/new.parquet").upload_from_string(b"3")
    with pytest.raises(gexc.Forbidden, match=r"storage\.objects\.delete"):
        landing.blob("credit/extracts/new.parquet").delete()
    assert landing.blob("credit/extracts/new.parquet").download_as_bytes() == b"1"
