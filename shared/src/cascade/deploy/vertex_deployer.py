"""The Vertex AI deployer: Model Registry versions on one endpoint per dataset.

- ``register``: ``Model.upload`` of the SavedModel directory with Cascade's serving
  container (``shared/Dockerfile.serving``: the same model server and request rules as
  the local cloud, with the trainer's TensorFlow) as a custom container — its predict
  and health routes and port, and its environment (``container_environment``) — as a
  new version of the dataset's model (model id = the dataset; the first upload creates
  it, later ones pass ``parent_model``), labelled with the lineage (dataset, run id, data
  snapshot digest, transform fingerprint);
- ``start_canary``: the dataset's endpoint (found by its ``cascade-dataset`` label, else
  created); the version is listed in ``serving.json`` (no traffic), then
  ``Endpoint.deploy`` with the canary share (100% when nothing serves), the machine type
  and min/max replicas of the config;
- ``check_canary``: smoke predictions through the endpoint (``rawPredict``: the JSON
  body reaches the container byte for byte, ``NaN`` included), fitted to the version's
  exported signature (``cascade_model.json``); each answer's
  ``X-Vertex-AI-Deployed-Model-Id`` header names the deployed model that served it;
- ``promote`` / ``restore_previous``: ``Endpoint.update(traffic_split=...)``;
- ``roll_back`` / ``retire``: ``Endpoint.undeploy``.

``serving.json`` is kept in step (versions, deployed model ids, traffic) so the train
step finds the deployed model and ``cascade rollback`` works the same as locally.

Why the version is listed before the deploy: Vertex AI never tells a container its model
version id (its variables are the routes, the port, ``AIP_STORAGE_URI`` and resource
ids), and the id exists only once ``Model.upload`` returns, too late for the upload's
own environment. So the container is told its run (``CASCADE_SERVING_RUN_ID``) and
reads its version from ``serving.json`` (the entry with that run id); it is not healthy
until it has, and ``Endpoint.deploy`` waits for a healthy container.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.cloud import aiplatform
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cascade.core.deployment_config import DeploymentConfig
from cascade.core.errors import (
    BadRequestError,
    InvalidConfigError,
    TransientError,
    transient_errors,
)
from cascade.core.serving_config import ServingMode
from cascade.core.store import ArtifactStore
from cascade.deploy import traffic
from cascade.deploy.canary import judge_canary
from cascade.deploy.deployer import Answer, CanaryReport, Candidate, label_value, prediction_list
from cascade.deploy.smoke import MODEL_MANIFEST, fit_to_signature, inputs_from_manifest
from cascade.serving.request_rules import MODEL_ANSWERS
from cascade.serving.state import (
    DeployedVersion,
    ServingState,
    read_serving_state,
    update_serving_state,
)

__all__ = [
    "HEALTH_ROUTE",
    "PREDICT_ROUTE",
    "SERVING_PORT",
    "PrecomputedStoreLocation",
    "VertexDeployer",
]

PREDICT_ROUTE = "/predict"
"""The serving container's AIP_PREDICT_ROUTE (cascade.serving.server_settings' default)."""
HEALTH_ROUTE = "/health"
SERVING_PORT = 8080
DEPLOYED_MODEL_HEADER = "X-Vertex-AI-Deployed-Model-Id"


class PrecomputedStoreLocation(BaseSettings):
    """Where the precomputed store is, as the deploy function's ``CASCADE_PRECOMPUTED_*``
    say: the ``instance``, ``table`` and ``project`` of
    ``cascade.serving.precomputed.PrecomputedSettings`` (the same variables and defaults;
    a test holds them equal). Not that class: its module brings the Bigtable client,
    which the deploy function neither needs nor installs."""

    model_config = SettingsConfigDict(
        env_prefix="CASCADE_PRECOMPUTED_", frozen=True, extra="ignore"
    )

    instance: str | None = Field(None, description="The Bigtable instance; unset: no store.")
    table: str = Field("precomputed", min_length=1)
    project: str | None = Field(None, description="Default: the project Cascade runs in.")


class VertexDeployer:
    target = "vertex"

    def __init__(
        self,
        artifacts: ArtifactStore,
        *,
        project: str,
        region: str,
        clock: Callable[[], datetime],
        models: Any = aiplatform.Model,
        endpoints: Any = aiplatform.Endpoint,
        serving_image: str = "",
        precomputed: PrecomputedStoreLocation | None = None,
    ) -> None:
        """``serving_image``: the serving container CI built (``Settings.serving_image``,
        which Terraform sets on the deploy function); a dataset's config may pin another.
        ``precomputed``: the store a static or hybrid dataset's containers read (default:
        this process's ``CASCADE_PRECOMPUTED_*``, the store batch prediction writes)."""
        self._serving_image = serving_image
        self._precomputed = PrecomputedStoreLocation() if precomputed is None else precomputed
        self._artifacts = artifacts
        self._project = project
        self._region = region
        self._clock = clock
        self._models = models  # aiplatform.Model, or a spec'd mock of it
        self._endpoints = endpoints  # aiplatform.Endpoint, or a spec'd mock of it

    def _where(self) -> dict[str, str]:
        return {"project": self._project, "location": self._region}

    def _model_name(self, dataset: str) -> str:
        return f"projects/{self._project}/locations/{self._region}/models/{dataset}"

    # -- register -----------------------------------------------------------------------------

    def serving_image(self, config: DeploymentConfig) -> str:
        """The config's image when it names one, else the serving container CI built.

        Never a prebuilt TF Serving image: its TensorFlow lags the trainer's and it serves
        none of Cascade's routes (the request rules, hybrid serving)."""
        if config.serving_image:
            return config.serving_image
        if not self._serving_image:
            raise InvalidConfigError(
                "no serving image: set CASCADE_SERVING_IMAGE (Terraform's serving_image, "
                "the image of shared/Dockerfile.serving) or deployment.serving_image"
            )
        return self._serving_image

    def container_environment(
        self, candidate: Candidate, config: DeploymentConfig
    ) -> dict[str, str]:
        """The serving container's variables (``cascade.serving.server_settings``).

        With an endpoint service account, the container is told its run and mode and
        where ``serving.json`` is: it reads its real model version there (answers name
        it, and a static or hybrid dataset's answers are looked up under it). Without
        one, a dynamic dataset's container gets only its model name, as before: Vertex
        AI's default identity may read nothing but ``AIP_STORAGE_URI``, so the container
        could never read its version (nor become healthy); it answers as version 1. A
        static or hybrid dataset needs the account (and a store): InvalidConfigError."""
        dataset, mode = candidate.dataset, candidate.serving_mode
        environment = {"CASCADE_SERVING_MODEL_NAME": dataset}
        if mode == "dynamic" and not config.endpoint_service_account:
            return environment
        if not config.endpoint_service_account:
            raise InvalidConfigError(
                f"{dataset} is served {mode}: on Vertex AI its containers read serving.json "
                "and the precomputed store as the endpoint's own service account; set "
                "deployment.endpoint_service_account (and Terraform's endpoint_service_account)"
            )
        environment |= {
            "CASCADE_SERVING_RUN_ID": candidate.run_id,
            "CASCADE_SERVING_MODE": mode,
            "CASCADE_PROJECT": self._project,
            "CASCADE_ARTIFACTS_BUCKET": self._artifacts.bucket_name,
        }
        if mode != "dynamic":
            environment |= self._store_environment(dataset, mode)
        return environment

    def _store_environment(self, dataset: str, mode: ServingMode) -> dict[str, str]:
        """Where a static or hybrid container reads its answers: the store this deploy
        function is configured with (the one batch prediction writes)."""
        store = self._precomputed
        if not store.instance:
            raise InvalidConfigError(
                f"{dataset} is served {mode} but CASCADE_PRECOMPUTED_INSTANCE is not set on "
                "the deploy function: its Vertex AI containers would have no precomputed "
                "store (every request a 503)"
            )
        return {
            "CASCADE_PRECOMPUTED_INSTANCE": store.instance,
            "CASCADE_PRECOMPUTED_TABLE": store.table,
            "CASCADE_PRECOMPUTED_PROJECT": store.project or self._project,
        }

    def register(self, candidate: Candidate, config: DeploymentConfig) -> DeployedVersion:
        dataset = candidate.dataset
        parent = self._model_name(dataset)
        try:
            self._models(model_name=parent, **self._where())
            first = False
        except gexc.NotFound:
            first = True
        labels = {"cascade-dataset": label_value(dataset)} | {
            f"cascade-{key.replace('_', '-')}": label_value(value)
            for key, value in candidate.lineage.items()
        }
        alias = label_value(f"run-{candidate.run_id}").replace("_", "-")
        if not first:
            existing = self._existing_version(f"{parent}@{alias}")
            if existing is not None:  # a retry after the upload: reuse it
                return self._version_of(candidate, existing)
        described = ", ".join(f"{key}={value}" for key, value in sorted(candidate.lineage.items()))
        image = self.serving_image(config)
        environment = self.container_environment(candidate, config)
        with transient_errors(f"Model.upload of {candidate.model_uri}"):
            model = self._models.upload(
                display_name=dataset,
                artifact_uri=candidate.model_uri,
                serving_container_image_uri=image,
                serving_container_predict_route=PREDICT_ROUTE,
                serving_container_health_route=HEALTH_ROUTE,
                serving_container_ports=[SERVING_PORT],
                serving_container_environment_variables=environment,
                model_id=dataset if first else None,
                parent_model=None if first else parent,
                is_default_version=True,
                version_aliases=[alias],
                version_description=f"Cascade run {candidate.run_id}: {described}",
                labels=labels,
                sync=True,
                **self._where(),
            )
        return self._version_of(candidate, model)

    def _existing_version(self, name_with_alias: str) -> Any:
        try:
            return self._models(model_name=name_with_alias, **self._where())
        except gexc.NotFound:
            return None

    def _version_of(self, candidate: Candidate, model: Any) -> DeployedVersion:
        return DeployedVersion(
            version=str(model.version_id),
            run_id=candidate.run_id,
            model_uri=candidate.model_uri,
            state="standby",
            deployed_at=self._clock(),
            lineage=candidate.lineage,
            vertex_model=model.versioned_resource_name,
        )

    # -- endpoint -----------------------------------------------------------------------------

    def _endpoint(self, dataset: str, *, create: bool) -> Any:
        found = read_serving_state(self._artifacts, dataset)
        if found is not None and found[0].endpoint:
            return self._endpoints(endpoint_name=found[0].endpoint, **self._where())
        existing = self._endpoints.list(
            filter=f'labels.cascade-dataset="{label_value(dataset)}"', **self._where()
        )
        if existing:
            return existing[0]
        if not create:
            raise BadRequestError(f"{dataset} has no Vertex AI endpoint")
        return self._endpoints.create(
            display_name=dataset,
            labels={"cascade-dataset": label_value(dataset)},
            sync=True,
            **self._where(),
        )

    def start_canary(
        self, candidate: Candidate, version: DeployedVersion, config: DeploymentConfig
    ) -> int:
        dataset = candidate.dataset
        endpoint = self._endpoint(dataset, create=True)
        # Listed before the deploy: the container reads its version here by run id, and
        # Endpoint.deploy waits until it is healthy (which it is not before).
        self._update(
            dataset,
            endpoint.resource_name,
            lambda state, _now: traffic.add_version(state, version.model_copy()),
            mode=candidate.serving_mode,
        )
        serving = {key: share for key, share in dict(endpoint.traffic_split).items() if share}
        share = 100 if not serving else config.canary_traffic_percent
        model = self._models(model_name=version.vertex_model, **self._where())
        with transient_errors(f"Endpoint.deploy of {version.vertex_model}"):
            endpoint.deploy(
                model=model,
                deployed_model_display_name=f"{dataset}-v{version.version}",
                traffic_percentage=share,
                machine_type=config.machine_type,
                min_replica_count=config.min_replicas,
                max_replica_count=config.max_replicas,
                service_account=config.endpoint_service_account,
                sync=True,
            )
        deployed_id = self._deployed_model_id(endpoint, model)

        def change(state: ServingState, now: datetime) -> None:
            entry = traffic.add_version(state, version.model_copy())
            entry.vertex_deployed_model_id = deployed_id
            traffic.start_canary(state, entry.version, share, now)

        self._update(dataset, endpoint.resource_name, change)
        return share

    @staticmethod
    def _deployed_model_id(endpoint: Any, model: Any) -> str:
        for deployed in endpoint.list_models():
            if deployed.model == model.resource_name and str(deployed.model_version_id) == str(
                model.version_id
            ):
                return str(deployed.id)
        raise TransientError(f"{model.resource_name} is not listed on {endpoint.resource_name}")

    # -- canary -------------------------------------------------------------------------------

    def check_canary(
        self, dataset: str, version: str, instances: list[dict[str, Any]], config: DeploymentConfig
    ) -> CanaryReport:
        endpoint = self._endpoint(dataset, create=False)
        canary_id = self._deployed_id(dataset, version)
        if not instances:
            return CanaryReport(
                True, 0, 0, 0.0, "deployed; no transform spec to build smoke predictions from"
            )
        signature = self._signature(dataset, version)
        if signature is not None:
            instances = fit_to_signature(instances, *signature)
        headers = {"Content-Type": "application/json"}
        errors, latencies, last_error, by_canary = 0, [], "", 0
        for index in range(config.canary_requests):
            body = json.dumps(
                {"instances": [instances[index % len(instances)]], "parameters": MODEL_ANSWERS}
            ).encode()
            started = time.perf_counter()
            try:
                response = endpoint.raw_predict(body=body, headers=headers)
                answered = _predictions(response)
                if answered != 1:
                    errors += 1
                    last_error = (
                        f"HTTP {response.status_code}: {response.text[:300]}"
                        if answered < 0
                        else f"{answered} predictions for 1 instance"
                    )
                by_canary += int(response.headers.get(DEPLOYED_MODEL_HEADER) == canary_id)
            except (gexc.GoogleAPICallError, requests.RequestException) as error:
                errors += 1
                last_error = str(error)
            latencies.append((time.perf_counter() - started) * 1000)
        return judge_canary(config, errors, latencies, last_error, answered_by_canary=by_canary)

    def _signature(self, dataset: str, version: str) -> tuple[dict[str, str], str] | None:
        """The version's inputs and key from its exported ``cascade_model.json`` (None
        when the model is outside the artifacts bucket or has no manifest)."""
        found = read_serving_state(self._artifacts, dataset)
        entry = None if found is None else found[0].version(version)
        prefix = f"gs://{self._artifacts.bucket_name}/"
        if entry is None or not entry.model_uri.startswith(prefix):
            return None
        name = f"{entry.model_uri[len(prefix) :].rstrip('/')}/{MODEL_MANIFEST}"
        stored = self._artifacts.read(name)
        if stored is None:
            return None
        try:
            manifest = json.loads(stored.data)
            return inputs_from_manifest(manifest), str(manifest["key"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def predict(self, dataset: str, version: str, instances: list[dict[str, Any]]) -> Answer:
        if not instances:
            return Answer([], version)
        endpoint = self._endpoint(dataset, create=False)
        signature = self._signature(dataset, version)
        if signature is not None:
            instances = fit_to_signature(instances, *signature)
        body = json.dumps({"instances": instances, "parameters": MODEL_ANSWERS}).encode()
        where = f"rawPredict on {endpoint.resource_name}"
        try:
            with transient_errors(where):
                response = endpoint.raw_predict(
                    body=body, headers={"Content-Type": "application/json"}
                )
        except requests.RequestException as error:
            raise TransientError(f"{where}: {error}") from error
        try:
            answer = response.json() if response.status_code == 200 else None
        except ValueError:
            answer = None
        predictions = prediction_list(
            response.status_code, response.text, answer, len(instances), where
        )
        deployed_id = response.headers.get(DEPLOYED_MODEL_HEADER)
        found = read_serving_state(self._artifacts, dataset)
        versions = [] if found is None else found[0].versions
        answered = next(
            (
                item.version
                for item in versions
                if deployed_id is not None and item.vertex_deployed_model_id == deployed_id
            ),
            None,
        )
        return Answer(predictions, answered)

    # -- traffic --------------------------------------------------------------------------------

    def promote(self, dataset: str, version: str, *, actor: str = "", reason: str = "") -> None:
        endpoint = self._endpoint(dataset, create=False)
        endpoint.update(traffic_split={self._deployed_id(dataset, version): 100})
        self._update(
            dataset,
            endpoint.resource_name,
            lambda state, now: traffic.promote(state, version, now, actor=actor, reason=reason),
        )

    def roll_back(self, dataset: str, version: str, reason: str) -> None:
        endpoint = self._endpoint(dataset, create=False)
        found = read_serving_state(self._artifacts, dataset)
        assert found is not None
        after = found[0].model_copy(deep=True)
        traffic.remove_version(after, version, self._clock(), reason)
        split = {self._deployed_id(dataset, v): share for v, share in after.traffic.items()}
        endpoint.undeploy(
            deployed_model_id=self._deployed_id(dataset, version), traffic_split=split or None
        )
        self._update(
            dataset,
            endpoint.resource_name,
            lambda state, now: traffic.remove_version(state, version, now, reason),
        )

    def retire(self, dataset: str, keep: int) -> list[str]:
        endpoint = self._endpoint(dataset, create=False)
        found = read_serving_state(self._artifacts, dataset)
        assert found is not None
        planned = traffic.retire_beyond(found[0].model_copy(deep=True), keep, self._clock())
        for entry in planned:
            # A version is listed before its deploy: one whose deploy failed has no
            # deployed model, and nothing to undeploy.
            if entry.vertex_deployed_model_id is not None:
                endpoint.undeploy(deployed_model_id=entry.vertex_deployed_model_id)
        self._update(
            dataset,
            endpoint.resource_name,
            lambda state, now: traffic.retire_beyond(state, keep, now),
        )
        return [entry.version for entry in planned]

    def restore_previous(
        self, dataset: str, *, actor: str = "", reason: str = ""
    ) -> tuple[str, str]:
        endpoint = self._endpoint(dataset, create=False)
        found = read_serving_state(self._artifacts, dataset)
        if found is None:
            raise BadRequestError(f"{dataset} was never deployed")
        rolled_back, serving = traffic.restore_previous(
            found[0].model_copy(deep=True), self._clock()
        )
        endpoint.update(traffic_split={self._deployed_id(dataset, serving.version): 100})
        endpoint.undeploy(deployed_model_id=self._deployed_id(dataset, rolled_back.version))
        self._update(
            dataset,
            endpoint.resource_name,
            lambda state, now: traffic.restore_previous(state, now, actor=actor, reason=reason),
        )
        return rolled_back.version, serving.version

    # -- serving.json ---------------------------------------------------------------------------

    def _deployed_id(self, dataset: str, version: str) -> str:
        found = read_serving_state(self._artifacts, dataset)
        entry = None if found is None else found[0].version(version)
        if entry is None or entry.vertex_deployed_model_id is None:
            raise BadRequestError(f"{dataset} v{version} is not deployed on its endpoint")
        return entry.vertex_deployed_model_id

    def _update(
        self,
        dataset: str,
        endpoint_name: str,
        change: Callable[[ServingState, datetime], object],
        *,
        mode: ServingMode = "dynamic",
    ) -> None:
        """Apply ``change`` to serving.json; a first one is created in ``mode`` (the
        dataset's, so no reader ever sees a static dataset as dynamic)."""

        def mutate(state: ServingState | None) -> ServingState:
            if state is None:
                state = ServingState(
                    dataset=dataset,
                    target="vertex",
                    endpoint=endpoint_name,
                    updated_at=self._clock(),
                    mode=mode,
                )
            state.endpoint = endpoint_name
            change(state, self._clock())
            return state

        update_serving_state(self._artifacts, dataset, mutate)


def _predictions(response: Any) -> int:
    """How many predictions a rawPredict answer holds; -1 when it is not a 200 with a
    ``predictions`` list."""
    if response.status_code != 200:
        return -1
    try:
        predictions = response.json()["predictions"]
    except (ValueError, KeyError, TypeError):
        return -1
    return len(predictions) if isinstance(predictions, list) else -1
