"""The streams' Terraform (infra/streams.tf) evaluated: schema, topic and Cloud Storage
subscription are what the local stand-in requests (gcs_subscriber.subscription_request)
from the same topology entry; the Pub/Sub service agent gets objectCreator and
legacyBucketReader on the landing bucket only; producers come from the variable, and
no public member is accepted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from cascade.core.paths import DatasetPaths
from cascade.core.settings import Settings
from cascade.core.streams import StreamSpec, stream_names
from cascade.core.topology import load_topology, parse_topology
from cascade.localcloud.gcs_subscriber import subscription_request
from tests.infra.terraform_eval import EvaluatedInfra, evaluate_infra, load_infra, plan_refuses, ref

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
TOPOLOGY = INFRA_DIR / "topology.yaml"
PROJECT = "cascade-test"
PRODUCER = "serviceAccount:producer@other.iam.gserviceaccount.com"
ADDRESSES = (
    "google_pubsub_schema.stream",
    "google_pubsub_topic.stream",
    "google_pubsub_subscription.stream",
    "google_storage_bucket_iam_member.stream_writer",
    "google_pubsub_subscription_iam_member.stream_dead_letter_forwarding",
    "google_pubsub_topic_iam_member.stream_publisher",
    "google_storage_bucket_object.stream_schema",
)

pytestmark = pytest.mark.infra


def _topology_with_two_streams(workdir: Path) -> Path:
    """The repository's topology plus a second stream that sets every field."""
    document = yaml.safe_load(TOPOLOGY.read_text(encoding="utf-8"))
    document["streams"]["clicks"] = {
        "schema": "schemas/credit.avsc",
        "max_duration_s": 60,
        "max_bytes": 2048,
        "max_messages": 5000,
        "ack_deadline_s": 120,
        "max_delivery_attempts": 7,
    }
    parse_topology(document)  # still a valid topology; its schema file is infra/'s
    path = workdir / "topology.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def topology_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _topology_with_two_streams(tmp_path_factory.mktemp("streams-topology"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The evaluated copy's folder: its path.module, so infra/schemas/ goes with it."""
    folder = tmp_path_factory.mktemp("streams-tf")
    shutil.copytree(INFRA_DIR / "schemas", folder / "schemas")
    return folder


@pytest.fixture(scope="module")
def evaluated(workdir: Path, topology_path: Path) -> EvaluatedInfra:
    infra = load_infra(INFRA_DIR)
    topology = load_topology(topology_path)
    manifest = workdir / "manifest.json"
    packages = {name: {"zip": f"{name}.zip", "sha256": "0" * 64} for name in topology.functions}
    manifest.write_text(json.dumps({"functions": packages}), encoding="utf-8")
    return evaluate_infra(
        workdir,
        infra,
        {
            "project_id": PROJECT,
            "topology_path": str(topology_path),
            "function_packages_manifest": str(manifest),
            "stream_publishers": {"credit": [PRODUCER]},
        },
        addresses=ADDRESSES,
        local_names=("bucket_names", "pubsub_service_agent"),
    )


def _first(block: Any) -> dict[str, Any]:
    return block[0] if isinstance(block, list) else block


@pytest.mark.parametrize("dataset", ["credit", "clicks"])
def test_the_subscription_is_the_one_the_local_stand_in_requests(
    evaluated: EvaluatedInfra, topology_path: Path, dataset: str
) -> None:
    spec: StreamSpec = load_topology(topology_path).streams[dataset]
    settings = Settings(topic_prefix="cascade-")
    names = stream_names(dataset, settings.topic_prefix)
    local = subscription_request(names, spec, settings)
    body = evaluated.instances("google_pubsub_subscription.stream")[dataset]
    config = _first(body["cloud_storage_config"])
    local_config = local["cloud_storage_config"]

    assert body["name"] == names.subscription_id
    assert body["topic"] == ref("google_pubsub_topic.stream", "id", dataset)
    assert body["ack_deadline_seconds"] == local["ack_deadline_seconds"]
    dead_letter = _first(body["dead_letter_policy"])
    assert dead_letter["dead_letter_topic"] == ref("google_pubsub_topic.this", "id", "dead-letter")
    assert dead_letter["max_delivery_attempts"] == spec.max_delivery_attempts
    assert config["bucket"] == ref("google_storage_bucket.landing", "name")
    for field in ("filename_prefix", "filename_suffix", "filename_datetime_format"):
        assert config[field] == local_config[field], field
    assert config["max_duration"] == f"{local_config['max_duration'].seconds}s"
    assert config["max_bytes"] == local_config["max_bytes"]
    assert config["max_messages"] == local_config["max_messages"]
    assert _first(config["avro_config"]) == {"write_metadata": True, "use_topic_schema": False}


def test_the_topic_enforces_the_schema_file_as_json(evaluated: EvaluatedInfra) -> None:
    schema = evaluated.instances("google_pubsub_schema.stream")["credit"]
    topic = evaluated.instances("google_pubsub_topic.stream")["credit"]
    assert schema["name"] == topic["name"] == "cascade-ingest-credit"
    assert schema["type"] == "AVRO"
    assert schema["definition"] == (INFRA_DIR / "schemas" / "credit.avsc").read_text()
    settings = _first(topic["schema_settings"])
    assert settings == {
        "schema": ref("google_pubsub_schema.stream", "id", "credit"),
        "encoding": "JSON",
    }


@pytest.mark.parametrize("dataset", ["credit", "clicks"])
def test_validate_finds_the_topic_schema_where_it_reads_it(
    evaluated: EvaluatedInfra, topology_path: Path, dataset: str
) -> None:
    """The object Terraform writes is the one ``read_stream_fields`` reads, holding the
    schema the topic enforces."""
    spec = load_topology(topology_path).streams[dataset]
    stored = evaluated.instances("google_storage_bucket_object.stream_schema")[dataset]
    assert stored["bucket"] == ref("google_storage_bucket.artifacts", "name")
    assert stored["name"] == DatasetPaths(dataset).stream_schema
    assert stored["content"] == (INFRA_DIR / spec.schema_file).read_text()
    assert stored["content_type"] == "application/json"


def test_the_service_agent_writes_the_landing_bucket_and_nothing_broader(
    evaluated: EvaluatedInfra,
) -> None:
    grants = evaluated.instances("google_storage_bucket_iam_member.stream_writer")
    agent = evaluated.locals["pubsub_service_agent"]
    assert sorted(grants) == ["roles/storage.legacyBucketReader", "roles/storage.objectCreator"]
    for role, body in grants.items():
        assert body == {
            "bucket": ref("google_storage_bucket.landing", "name"),
            "role": role,
            "member": agent,
        }
    forwarding = evaluated.instances(
        "google_pubsub_subscription_iam_member.stream_dead_letter_forwarding"
    )
    assert {key: body["role"] for key, body in forwarding.items()} == {
        "credit": "roles/pubsub.subscriber",
        "clicks": "roles/pubsub.subscriber",
    }


def test_only_the_named_producers_publish_to_their_dataset(evaluated: EvaluatedInfra) -> None:
    publishers = evaluated.instances("google_pubsub_topic_iam_member.stream_publisher")
    assert list(publishers.values()) == [
        {
            "topic": ref("google_pubsub_topic.stream", "id", "credit"),
            "role": "roles/pubsub.publisher",
            "member": PRODUCER,
        }
    ]


@pytest.mark.parametrize("member", ["allUsers", "allAuthenticatedUsers"])
def test_a_public_producer_is_refused(
    evaluated: EvaluatedInfra, workdir: Path, topology_path: Path, member: str
) -> None:
    refusal = plan_refuses(
        workdir,
        {
            "project_id": PROJECT,
            "topology_path": str(topology_path),
            "function_packages_manifest": str(workdir / "manifest.json"),
            "stream_publishers": {"credit": [member]},
        },
    )
    assert "must not contain public principals" in refusal
