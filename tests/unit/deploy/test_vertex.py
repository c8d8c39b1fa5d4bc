"""The Vertex AI deployer's exact SDK calls, against spec'd mocks of aiplatform."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud import aiplatform
from google.cloud.aiplatform_v1.types import DeployedModel
from pytest_mock import MockerFixture

from cascade.core.deployment_config import DeploymentConfig
from cascade.core.errors import InvalidConfigError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.paths import DatasetPaths
from cascade.core.serving_config import ServingMode
from cascade.deploy.deployer import Candidate
from cascade.deploy.rollout import roll_out
from cascade.deploy.vertex_deployer import PrecomputedStoreLocation, VertexDeployer
from cascade.serving import request_rules
from cascade.serving.precomputed import PrecomputedSettings
from cascade.serving.state import ServingState, read_serving_state

NOW = datetime(2026, 11, 27, tzinfo=UTC)
WHERE = {"project": "proj", "location": "europe-west4"}
PARENT = "projects/proj/locations/europe-west4/models/credit"
ENDPOINT = "projects/proj/locations/europe-west4/endpoints/4242"
SERVING_IMAGE = "europe-west4-docker.pkg.dev/proj/cascade-images/serving@sha256:feed"
MANIFEST = {"inputs": {"age": "float32", "city": "string"}, "key": "key"}
SIGNATURE = {"age": "DT_FLOAT", "city": "DT_STRING", "key": "DT_STRING"}
CONFIG = DeploymentConfig(
    canary_traffic_percent=10,
    canary_requests=3,
    machine_type="n1-standard-4",
    min_replicas=1,
    max_replicas=3,
    keep_versions=1,
)


ENDPOINT_ACCOUNT = "serving@proj.iam.gserviceaccount.com"
STORE = PrecomputedStoreLocation(instance="answers", table="precomputed", project="bt-proj")


def candidate(run: str, mode: ServingMode = "dynamic") -> Candidate:
    return Candidate(
        dataset="credit",
        run_id=run,
        model_uri=f"gs://art/runs/{run}/training/model",
        lineage={"run_id": run, "data_snapshot": "abc123"},
        serving_mode=mode,
    )


class Sdk:
    def __init__(self, mocker: MockerFixture) -> None:
        self.models = mocker.create_autospec(aiplatform.Model)
        self.endpoints = mocker.create_autospec(aiplatform.Endpoint)
        self.endpoint = mocker.create_autospec(aiplatform.Endpoint, instance=True)
        self.endpoint.resource_name = ENDPOINT
        self.endpoint.traffic_split = {}
        self.endpoints.return_value = self.endpoint
        self.endpoints.create.return_value = self.endpoint
        self.endpoints.list.return_value = []
        self._mocker = mocker

    def model_version(self, version: str) -> Any:
        model = self._mocker.create_autospec(aiplatform.Model, instance=True)
        model.version_id = version
        model.resource_name = PARENT
        model.versioned_resource_name = f"{PARENT}@{version}"
        return model

    def deployed(self, *pairs: tuple[str, str]) -> None:
        self.endpoint.list_models.return_value = [
            DeployedModel(id=deployed_id, model=PARENT, model_version_id=version)
            for deployed_id, version in pairs
        ]


@pytest.fixture
def sdk(mocker: MockerFixture) -> Sdk:
    return Sdk(mocker)


@pytest.fixture
def artifacts() -> MemoryArtifactStore:
    return MemoryArtifactStore("art")


@pytest.fixture
def deployer(sdk: Sdk, artifacts: MemoryArtifactStore) -> VertexDeployer:
    return VertexDeployer(
        artifacts,
        project="proj",
        region="europe-west4",
        clock=lambda: NOW,
        models=sdk.models,
        endpoints=sdk.endpoints,
        serving_image=SERVING_IMAGE,
        precomputed=STORE,
    )


def test_the_first_upload_creates_the_model_with_lineage_labels(
    sdk: Sdk, deployer: VertexDeployer
) -> None:
    sdk.models.side_effect = gexc.NotFound("no such model")
    sdk.models.upload.return_value = sdk.model_version("1")

    version = deployer.register(candidate("credit-aaa"), CONFIG)

    sdk.models.upload.assert_called_once_with(
        display_name="credit",
        artifact_uri="gs://art/runs/credit-aaa/training/model",
        serving_container_image_uri=SERVING_IMAGE,
        serving_container_predict_route="/predict",
        serving_container_health_route="/health",
        serving_container_ports=[8080],
        serving_container_environment_variables={"CASCADE_SERVING_MODEL_NAME": "credit"},
        model_id="credit",
        parent_model=None,
        is_default_version=True,
        version_aliases=["run-credit-aaa"],
        version_description="Cascade run credit-aaa: data_snapshot=abc123, run_id=credit-aaa",
        labels={
            "cascade-dataset": "credit",
            "cascade-run-id": "credit-aaa",
            "cascade-data-snapshot": "abc123",
        },
        sync=True,
        **WHERE,
    )
    assert (version.version, version.vertex_model) == ("1", f"{PARENT}@1")


def test_a_later_upload_is_a_new_version_of_the_parent_model(
    sdk: Sdk, deployer: VertexDeployer
) -> None:
    sdk.models.side_effect = [sdk.model_version("1"), gexc.NotFound("no such alias")]
    sdk.models.upload.return_value = sdk.model_version("2")

    version = deployer.register(candidate("credit-bbb"), CONFIG)

    assert sdk.models.call_args_list[1].kwargs == {
        "model_name": f"{PARENT}@run-credit-bbb",
        **WHERE,
    }
    upload = sdk.models.upload.call_args.kwargs
    assert (upload["parent_model"], upload["model_id"]) == (PARENT, None)
    assert version.version == "2"


def test_a_retried_upload_reuses_the_version_the_alias_names(
    sdk: Sdk, deployer: VertexDeployer
) -> None:
    sdk.models.side_effect = [sdk.model_version("1"), sdk.model_version("2")]

    version = deployer.register(candidate("credit-bbb"), CONFIG)

    sdk.models.upload.assert_not_called()
    assert version.version == "2"


def test_a_first_deployment_creates_the_endpoint_and_takes_all_traffic(
    sdk: Sdk, deployer: VertexDeployer, artifacts: MemoryArtifactStore
) -> None:
    version = sdk.model_version("1")
    sdk.models.return_value = version
    sdk.deployed(("111", "1"))
    registered = deployer._version_of(candidate("credit-aaa"), version)

    share = deployer.start_canary(candidate("credit-aaa"), registered, CONFIG)

    sdk.endpoints.list.assert_called_once_with(filter='labels.cascade-dataset="credit"', **WHERE)
    sdk.endpoints.create.assert_called_once_with(
        display_name="credit", labels={"cascade-dataset": "credit"}, sync=True, **WHERE
    )
    sdk.endpoint.deploy.assert_called_once_with(
        model=version,
        deployed_model_display_name="credit-v1",
        traffic_percentage=100,
        machine_type="n1-standard-4",
        min_replica_count=1,
        max_replica_count=3,
        service_account=None,
        sync=True,
    )
    assert share == 100
    found = read_serving_state(artifacts, "credit")
    assert found is not None
    state = found[0]
    assert (state.endpoint, state.traffic) == (ENDPOINT, {"1": 100})
    assert state.version("1").vertex_deployed_model_id == "111"  # type: ignore[union-attr]


def serving_v1(artifacts: MemoryArtifactStore) -> None:
    state = ServingState.model_validate(
        {
            "dataset": "credit",
            "target": "vertex",
            "endpoint": ENDPOINT,
            "updated_at": NOW,
            "versions": [
                {
                    "version": "1",
                    "run_id": "credit-aaa",
                    "model_uri": "gs://art/m1",
                    "state": "serving",
                    "deployed_at": NOW,
                    "vertex_deployed_model_id": "111",
                    "vertex_model": f"{PARENT}@1",
                }
            ],
            "traffic": {"1": 100},
        }
    )
    artifacts.write_json(DatasetPaths("credit").serving, state)


def answer(status: int, body: Any, deployed_model_id: str) -> requests.Response:
    """A rawPredict answer: the container's JSON and Vertex AI's deployed-model header."""
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers["X-Vertex-AI-Deployed-Model-Id"] = deployed_model_id
    response.headers["Content-Type"] = "application/json"
    return response


def sent_instance(call: Any) -> dict[str, Any]:
    assert call.kwargs["headers"] == {"Content-Type": "application/json"}
    [instance] = json.loads(call.kwargs["body"])["instances"]
    return dict(instance)


class Progress:
    def __init__(self) -> None:
        self.done: dict[str, Any] = {}

    def record(self, **stages: Any) -> None:
        self.done.update(stages)


def test_a_canary_that_answers_is_promoted_and_the_old_version_undeployed(
    sdk: Sdk, deployer: VertexDeployer, artifacts: MemoryArtifactStore
) -> None:
    serving_v1(artifacts)
    sdk.endpoint.traffic_split = {"111": 100}
    v2 = sdk.model_version("2")
    sdk.models.side_effect = [sdk.model_version("1"), gexc.NotFound("alias"), v2]
    sdk.models.upload.return_value = v2
    sdk.deployed(("111", "1"), ("222", "2"))
    manifest = "runs/credit-bbb/training/model/cascade_model.json"
    artifacts.write(manifest, json.dumps(MANIFEST).encode())
    sdk.endpoint.raw_predict.side_effect = [
        answer(200, {"predictions": [{"classes": "yes", "key": "k"}]}, deployed)
        for deployed in ("111", "222", "111")
    ]
    rows = [{"age": 30.0}, {"age": math.nan, "city": ""}]

    result = roll_out(deployer, candidate("credit-bbb"), CONFIG, rows, Progress())

    sdk.endpoints.assert_called_with(endpoint_name=ENDPOINT, **WHERE)
    sdk.endpoint.deploy.assert_called_once()
    assert sdk.endpoint.deploy.call_args.kwargs["traffic_percentage"] == 10
    assert sdk.endpoint.raw_predict.call_count == 3
    sent = [sent_instance(call) for call in sdk.endpoint.raw_predict.call_args_list]
    assert sent[0] == {"age": 30.0, "city": "", "key": "cascade-smoke-0"}
    assert math.isnan(sent[1]["age"])
    assert sent[1]["key"] == "cascade-smoke-1"
    for instance in sent:  # what the serving container's rules accept: key, no null
        request_rules.columns([instance], SIGNATURE)
    sdk.endpoint.update.assert_called_once_with(traffic_split={"222": 100})
    sdk.endpoint.undeploy.assert_called_once_with(deployed_model_id="111")
    assert (result.promoted, result.retired, result.canary.answered_by_canary) == (True, ["1"], 1)
    state = read_serving_state(artifacts, "credit")[0]  # type: ignore[index]
    assert state.traffic == {"2": 100}
    assert [v.state for v in state.versions] == ["retired", "serving"]


def test_a_failing_canary_is_undeployed_and_the_old_split_restored(
    sdk: Sdk, deployer: VertexDeployer, artifacts: MemoryArtifactStore
) -> None:
    serving_v1(artifacts)
    sdk.endpoint.traffic_split = {"111": 100}
    v2 = sdk.model_version("2")
    sdk.models.side_effect = [sdk.model_version("1"), gexc.NotFound("alias"), v2]
    sdk.models.upload.return_value = v2
    sdk.deployed(("111", "1"), ("222", "2"))
    sdk.endpoint.raw_predict.side_effect = gexc.InternalServerError("model crashed")

    result = roll_out(deployer, candidate("credit-bbb"), CONFIG, [{"age": 30.0}], Progress())

    sdk.endpoint.undeploy.assert_called_once_with(
        deployed_model_id="222", traffic_split={"111": 100}
    )
    sdk.endpoint.update.assert_not_called()
    assert not result.promoted
    assert "3/3 requests failed" in result.canary.detail
    assert read_serving_state(artifacts, "credit")[0].traffic == {"1": 100}  # type: ignore[index]


def test_a_canary_the_container_refuses_is_rolled_back_with_its_message(
    sdk: Sdk, deployer: VertexDeployer, artifacts: MemoryArtifactStore
) -> None:
    serving_v1(artifacts)
    sdk.endpoint.traffic_split = {"111": 100}
    v2 = sdk.model_version("2")
    sdk.models.side_effect = [sdk.model_version("1"), gexc.NotFound("alias"), v2]
    sdk.models.upload.return_value = v2
    sdk.deployed(("111", "1"), ("222", "2"))
    refused = {"error": "instance 0: missing input 'key'"}
    sdk.endpoint.raw_predict.side_effect = [answer(400, refused, "222") for _ in range(3)]

    result = roll_out(deployer, candidate("credit-bbb"), CONFIG, [{"age": 30.0}], Progress())

    assert not result.promoted
    assert "HTTP 400" in result.canary.detail
    assert "missing input 'key'" in result.canary.detail


def test_without_a_serving_image_nothing_is_uploaded(
    sdk: Sdk, artifacts: MemoryArtifactStore
) -> None:
    sdk.models.side_effect = gexc.NotFound("no such model")
    deployer = VertexDeployer(
        artifacts,
        project="proj",
        region="europe-west4",
        clock=lambda: NOW,
        models=sdk.models,
        endpoints=sdk.endpoints,
    )

    with pytest.raises(InvalidConfigError, match="CASCADE_SERVING_IMAGE"):
        deployer.register(candidate("credit-aaa"), CONFIG)
    pinned = CONFIG.model_copy(update={"serving_image": "example.com/serving:1"})
    sdk.models.upload.return_value = sdk.model_version("1")
    deployer.register(candidate("credit-aaa"), pinned)
    assert sdk.models.upload.call_args.kwargs["serving_container_image_uri"] == (
        "example.com/serving:1"
    )


def test_rollback_sends_traffic_to_the_previous_version_and_undeploys_the_current(
    sdk: Sdk, deployer: VertexDeployer, artifacts: MemoryArtifactStore
) -> None:
    serving_v1(artifacts)
    state = read_serving_state(artifacts, "credit")[0]  # type: ignore[index]
    state.versions.append(
        state.versions[0].model_copy(
            update={"version": "2", "run_id": "credit-bbb", "vertex_deployed_model_id": "222"}
        )
    )
    state.versions[0].state = "standby"
    state.traffic = {"2": 100}
    artifacts.write_json(DatasetPaths("credit").serving, state)

    assert deployer.restore_previous("credit") == ("2", "1")

    sdk.endpoint.update.assert_called_once_with(traffic_split={"111": 100})
    sdk.endpoint.undeploy.assert_called_once_with(deployed_model_id="222")


def test_monitoring_predictions_go_through_raw_predict_and_name_the_answering_version(
    sdk: Sdk, deployer: VertexDeployer, artifacts: MemoryArtifactStore
) -> None:
    serving_v1(artifacts)
    sdk.endpoint.raw_predict.return_value = answer(
        200, {"predictions": [{"score": 0.1}, {"score": 0.9}]}, "111"
    )
    rows = [{"age": 30.0, "city": "oslo", "key": "r1"}, {"age": 41.0, "city": "rome", "key": "r2"}]

    answered = deployer.predict("credit", "1", rows)

    sdk.endpoints.assert_called_with(endpoint_name=ENDPOINT, **WHERE)
    [call] = sdk.endpoint.raw_predict.call_args_list
    assert call.kwargs["headers"] == {"Content-Type": "application/json"}
    assert json.loads(call.kwargs["body"]) == {
        "instances": rows,
        "parameters": {"answer_from": "model"},
    }
    assert answered.predictions == [{"score": 0.1}, {"score": 0.9}]
    assert answered.version == "1"


def test_monitoring_predictions_answered_by_an_unknown_deployed_model_name_no_version(
    sdk: Sdk, deployer: VertexDeployer, artifacts: MemoryArtifactStore
) -> None:
    serving_v1(artifacts)
    sdk.endpoint.raw_predict.return_value = answer(200, {"predictions": [{"score": 0.5}]}, "999")

    answered = deployer.predict("credit", "1", [{"age": 30.0, "city": "oslo", "key": "r1"}])

    assert answered.version is None


# -- the serving container's environment: its run, its mode, its store ---------------------

WITH_ACCOUNT = CONFIG.model_copy(update={"endpoint_service_account": ENDPOINT_ACCOUNT})


def first_upload(sdk: Sdk) -> None:
    sdk.models.side_effect = gexc.NotFound("no such model")
    sdk.models.upload.return_value = sdk.model_version("1")


def uploaded_environment(sdk: Sdk) -> dict[str, str]:
    environment: dict[str, str] = sdk.models.upload.call_args.kwargs[
        "serving_container_environment_variables"
    ]
    return environment


def test_a_static_upload_tells_the_container_its_run_mode_bucket_and_store(
    sdk: Sdk, deployer: VertexDeployer
) -> None:
    first_upload(sdk)

    deployer.register(candidate("credit-aaa", "static"), WITH_ACCOUNT)

    sdk.models.upload.assert_called_once_with(
        display_name="credit",
        artifact_uri="gs://art/runs/credit-aaa/training/model",
        serving_container_image_uri=SERVING_IMAGE,
        serving_container_predict_route="/predict",
        serving_container_health_route="/health",
        serving_container_ports=[8080],
        serving_container_environment_variables={
            "CASCADE_SERVING_MODEL_NAME": "credit",
            "CASCADE_SERVING_RUN_ID": "credit-aaa",
            "CASCADE_SERVING_MODE": "static",
            "CASCADE_PROJECT": "proj",
            "CASCADE_ARTIFACTS_BUCKET": "art",
            "CASCADE_PRECOMPUTED_INSTANCE": "answers",
            "CASCADE_PRECOMPUTED_TABLE": "precomputed",
            "CASCADE_PRECOMPUTED_PROJECT": "bt-proj",
        },
        model_id="credit",
        parent_model=None,
        is_default_version=True,
        version_aliases=["run-credit-aaa"],
        version_description="Cascade run credit-aaa: data_snapshot=abc123, run_id=credit-aaa",
        labels={
            "cascade-dataset": "credit",
            "cascade-run-id": "credit-aaa",
            "cascade-data-snapshot": "abc123",
        },
        sync=True,
        **WHERE,
    )


def test_the_store_project_defaults_to_the_deploying_project(
    sdk: Sdk, artifacts: MemoryArtifactStore
) -> None:
    first_upload(sdk)
    deployer = VertexDeployer(
        artifacts,
        project="proj",
        region="europe-west4",
        clock=lambda: NOW,
        models=sdk.models,
        endpoints=sdk.endpoints,
        serving_image=SERVING_IMAGE,
        precomputed=PrecomputedStoreLocation(instance="answers", table="answers-t", project=None),
    )

    deployer.register(candidate("credit-aaa", "hybrid"), WITH_ACCOUNT)

    environment = uploaded_environment(sdk)
    assert environment["CASCADE_SERVING_MODE"] == "hybrid"
    assert environment["CASCADE_PRECOMPUTED_TABLE"] == "answers-t"
    assert environment["CASCADE_PRECOMPUTED_PROJECT"] == "proj"


def test_a_dynamic_upload_with_an_endpoint_account_is_told_its_run_but_no_store(
    sdk: Sdk, deployer: VertexDeployer
) -> None:
    first_upload(sdk)

    deployer.register(candidate("credit-aaa"), WITH_ACCOUNT)

    assert uploaded_environment(sdk) == {
        "CASCADE_SERVING_MODEL_NAME": "credit",
        "CASCADE_SERVING_RUN_ID": "credit-aaa",
        "CASCADE_SERVING_MODE": "dynamic",
        "CASCADE_PROJECT": "proj",
        "CASCADE_ARTIFACTS_BUCKET": "art",
    }


def test_a_dynamic_upload_without_an_endpoint_account_keeps_the_model_name_only(
    sdk: Sdk, deployer: VertexDeployer
) -> None:
    """Vertex AI's default identity reads only AIP_STORAGE_URI: a container told its run
    could never read serving.json, so it would never be healthy."""
    first_upload(sdk)

    deployer.register(candidate("credit-aaa"), CONFIG)

    assert uploaded_environment(sdk) == {"CASCADE_SERVING_MODEL_NAME": "credit"}


@pytest.mark.parametrize("mode", ["static", "hybrid"])
def test_a_precomputed_mode_without_an_endpoint_account_is_refused_before_uploading(
    sdk: Sdk, deployer: VertexDeployer, mode: ServingMode
) -> None:
    first_upload(sdk)

    with pytest.raises(InvalidConfigError, match=r"deployment\.endpoint_service_account"):
        deployer.register(candidate("credit-aaa", mode), CONFIG)

    sdk.models.upload.assert_not_called()


@pytest.mark.parametrize("mode", ["static", "hybrid"])
def test_a_precomputed_mode_without_a_store_is_refused_naming_the_variable(
    sdk: Sdk, artifacts: MemoryArtifactStore, mode: ServingMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CASCADE_PRECOMPUTED_INSTANCE", raising=False)
    first_upload(sdk)
    deployer = VertexDeployer(  # the store of this process's environment: none
        artifacts,
        project="proj",
        region="europe-west4",
        clock=lambda: NOW,
        models=sdk.models,
        endpoints=sdk.endpoints,
        serving_image=SERVING_IMAGE,
    )

    with pytest.raises(InvalidConfigError, match="CASCADE_PRECOMPUTED_INSTANCE"):
        deployer.register(candidate("credit-aaa", mode), WITH_ACCOUNT)

    sdk.models.upload.assert_not_called()


def test_the_version_is_listed_in_serving_json_before_the_endpoint_deploy(
    sdk: Sdk, deployer: VertexDeployer, artifacts: MemoryArtifactStore
) -> None:
    """The container reads its version by run id and is not healthy before, and
    Endpoint.deploy waits for a healthy container: the entry must already be there."""
    serving_v1(artifacts)
    sdk.endpoint.traffic_split = {"111": 100}
    version = sdk.model_version("2")
    sdk.models.return_value = version
    sdk.deployed(("111", "1"), ("222", "2"))
    seen_at_deploy: list[ServingState] = []

    def deploy(**_: Any) -> None:
        found = read_serving_state(artifacts, "credit")
        assert found is not None
        seen_at_deploy.append(found[0])

    sdk.endpoint.deploy.side_effect = deploy
    registered = deployer._version_of(candidate("credit-bbb"), version)

    deployer.start_canary(candidate("credit-bbb"), registered, CONFIG)

    [before] = seen_at_deploy
    listed = before.version("2")
    assert listed is not None
    assert (listed.run_id, listed.state, listed.vertex_deployed_model_id) == (
        "credit-bbb",
        "standby",
        None,
    )
    assert before.traffic == {"1": 100}
    after = read_serving_state(artifacts, "credit")[0]  # type: ignore[index]
    assert [v.version for v in after.versions] == ["1", "2"]
    assert after.version("2").vertex_deployed_model_id == "222"  # type: ignore[union-attr]
    assert after.traffic == {"1": 90, "2": 10}


def test_retiring_a_version_whose_deploy_failed_undeploys_nothing_of_it(
    sdk: Sdk, deployer: VertexDeployer, artifacts: MemoryArtifactStore
) -> None:
    """Listed before its deploy, a version whose deploy failed has no deployed model."""
    serving_v1(artifacts)
    state = read_serving_state(artifacts, "credit")[0]  # type: ignore[index]
    state.versions[0].state = "standby"
    never = state.versions[0].model_copy(
        update={"version": "2", "run_id": "credit-bbb", "vertex_deployed_model_id": None}
    )
    serving = state.versions[0].model_copy(
        update={"version": "3", "run_id": "credit-ccc", "vertex_deployed_model_id": "333"}
    )
    serving.state = "serving"
    state.versions += [never, serving]
    state.traffic = {"3": 100}
    artifacts.write_json(DatasetPaths("credit").serving, state)

    assert deployer.retire("credit", keep=1) == ["1", "2"]

    sdk.endpoint.undeploy.assert_called_once_with(deployed_model_id="111")
    after = read_serving_state(artifacts, "credit")[0]  # type: ignore[index]
    assert [v.state for v in after.versions] == ["retired", "retired", "serving"]


def test_the_deployers_store_location_reads_what_the_model_server_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deploy function cannot import PrecomputedSettings (Bigtable's client comes with
    it): its own reading of CASCADE_PRECOMPUTED_* must stay the server's."""
    fields = ("instance", "table", "project")
    assert (
        PrecomputedStoreLocation.model_config["env_prefix"]
        == (PrecomputedSettings.model_config["env_prefix"])
    )
    for name in fields:
        mine = PrecomputedStoreLocation.model_fields[name]
        theirs = PrecomputedSettings.model_fields[name]
        assert (mine.default, mine.annotation) == (theirs.default, theirs.annotation), name
    monkeypatch.setenv("CASCADE_PRECOMPUTED_INSTANCE", "answers")
    monkeypatch.setenv("CASCADE_PRECOMPUTED_TABLE", "t")
    monkeypatch.delenv("CASCADE_PRECOMPUTED_PROJECT", raising=False)
    location, settings = PrecomputedStoreLocation(), PrecomputedSettings()
    assert [getattr(location, f) for f in fields] == [getattr(settings, f) for f in fields]


def test_a_first_serving_json_is_written_in_the_datasets_mode(
    sdk: Sdk, deployer: VertexDeployer, artifacts: MemoryArtifactStore
) -> None:
    """No reader (the batch sweep, the report) may see a static dataset as dynamic while
    its first version deploys."""
    sdk.endpoint.traffic_split = {}
    version = sdk.model_version("1")
    sdk.models.return_value = version
    sdk.deployed(("111", "1"))
    seen_at_deploy: list[ServingState] = []

    def deploy(**_: Any) -> None:
        found = read_serving_state(artifacts, "credit")
        assert found is not None
        seen_at_deploy.append(found[0])

    sdk.endpoint.deploy.side_effect = deploy
    registered = deployer._version_of(candidate("credit-aaa", "static"), version)

    deployer.start_canary(candidate("credit-aaa", "static"), registered, CONFIG)

    [before] = seen_at_deploy
    assert before.mode == "static"
