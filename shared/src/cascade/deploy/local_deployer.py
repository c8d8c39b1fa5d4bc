"""The local deployer: ``serving.json`` plus the local model server on loopback.

Every change is a read-modify-write of ``models/<dataset>/serving.json`` under a
generation precondition; the model server follows the file (it polls it, and syncs at
once when asked about a version it does not have). A new version is first added with
no traffic — the server downloads, loads and warms it up — and only once the server
reports it ``AVAILABLE`` does it get canary traffic.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import requests

from cascade.core.deployment_config import DeploymentConfig
from cascade.core.errors import BadRequestError, TransientError
from cascade.core.serving_config import ServingMode
from cascade.core.store import ArtifactStore
from cascade.deploy import traffic
from cascade.deploy.canary import judge_canary
from cascade.deploy.deployer import Answer, CanaryReport, Candidate, prediction_list
from cascade.deploy.smoke import fit_to_signature, inputs_from_metadata, key_from_metadata
from cascade.serving.request_rules import MODEL_ANSWERS
from cascade.serving.state import DeployedVersion, ServingState, update_serving_state

__all__ = ["LocalDeployer"]


class LocalDeployer:
    target = "local"

    def __init__(
        self,
        artifacts: ArtifactStore,
        model_server_url: str,
        *,
        clock: Callable[[], datetime],
        session: requests.Session | None = None,
        load_timeout_s: float = 120.0,
    ) -> None:
        self._artifacts = artifacts
        self._url = model_server_url.rstrip("/")
        self._clock = clock
        self._session = session or requests.Session()
        self._load_timeout_s = load_timeout_s

    # -- Deployer ---------------------------------------------------------------------------

    def register(self, candidate: Candidate, config: DeploymentConfig) -> DeployedVersion:
        registered: list[DeployedVersion] = []

        def mutate(state: ServingState | None) -> ServingState:
            # A first serving.json starts in the dataset's mode: the model server must never
            # see a static dataset as dynamic, not even until the deploy step records it.
            state = state or self._new_state(candidate.dataset, candidate.serving_mode)
            # A retry after the registration (the step failed later and its claim was
            # released) reuses the run's version, as Vertex AI's deployer reuses the
            # model version under the run's alias: no orphan version, no second deploy.
            for existing in state.versions:
                if existing.run_id == candidate.run_id:
                    registered[:] = [existing]
                    return state
            entry = DeployedVersion(
                version=state.next_version(),
                run_id=candidate.run_id,
                model_uri=candidate.model_uri,
                state="standby",
                deployed_at=self._clock(),
                lineage=candidate.lineage,
            )
            registered[:] = [traffic.add_version(state, entry)]
            return state

        update_serving_state(self._artifacts, candidate.dataset, mutate)
        self._notify(candidate.dataset)
        return registered[0]

    def start_canary(
        self, candidate: Candidate, version: DeployedVersion, config: DeploymentConfig
    ) -> int:
        self._wait_until_available(candidate.dataset, version.version)
        shares: list[int] = []

        def mutate(state: ServingState | None) -> ServingState:
            assert state is not None, "register() wrote serving.json"
            now = self._clock()
            shares[:] = [
                traffic.start_canary(state, version.version, config.canary_traffic_percent, now)
            ]
            return state

        update_serving_state(self._artifacts, candidate.dataset, mutate)
        self._notify(candidate.dataset)
        return shares[0]

    def check_canary(
        self, dataset: str, version: str, instances: list[dict[str, Any]], config: DeploymentConfig
    ) -> CanaryReport:
        url = f"{self._url}/v1/models/{dataset}/versions/{version}:predict"
        signature = self._signature(dataset, version)
        if signature is not None:  # the model's own inputs: the rows must fit them exactly
            instances = fit_to_signature(instances, *signature)
        errors, latencies, last_error = 0, [], ""
        for index in range(config.canary_requests):
            batch = [instances[index % len(instances)]] if instances else []
            started = time.perf_counter()
            try:
                response = self._session.post(
                    url,
                    # NaN stands for a missing float: TF Serving's JSON reads it, and
                    # requests' json= refuses it, so the body is encoded here.
                    data=json.dumps({"instances": batch, "parameters": MODEL_ANSWERS}),
                    headers={"Content-Type": "application/json"},
                    timeout=30,
                )
                answered = len(response.json().get("predictions", [])) if response.ok else -1
            except (requests.RequestException, ValueError) as error:
                response, answered = None, -1
                last_error = str(error)
            latencies.append((time.perf_counter() - started) * 1000)
            if answered != len(batch):
                errors += 1
                if response is not None:
                    last_error = f"HTTP {response.status_code}: {response.text[:300]}"
        return judge_canary(
            config, errors, latencies, last_error, answered_by_canary=len(latencies)
        )

    def promote(self, dataset: str, version: str, *, actor: str = "", reason: str = "") -> None:
        self._update(
            dataset,
            lambda state, now: traffic.promote(state, version, now, actor=actor, reason=reason),
        )

    def roll_back(self, dataset: str, version: str, reason: str) -> None:
        self._update(
            dataset, lambda state, now: traffic.remove_version(state, version, now, reason)
        )

    def retire(self, dataset: str, keep: int) -> list[str]:
        retired: list[str] = []

        def change(state: ServingState, now: datetime) -> None:
            retired[:] = [entry.version for entry in traffic.retire_beyond(state, keep, now)]

        self._update(dataset, change)
        return retired

    def restore_previous(
        self, dataset: str, *, actor: str = "", reason: str = ""
    ) -> tuple[str, str]:
        result: list[str] = []

        def change(state: ServingState, now: datetime) -> None:
            rolled_back, serving = traffic.restore_previous(state, now, actor=actor, reason=reason)
            result[:] = [rolled_back.version, serving.version]

        self._update(dataset, change)
        return result[0], result[1]

    def predict(self, dataset: str, version: str, instances: list[dict[str, Any]]) -> Answer:
        if not instances:
            return Answer([], version)
        signature = self._signature(dataset, version)
        if signature is None:
            raise TransientError(f"the model server has no metadata for {dataset} v{version}")
        rows = fit_to_signature(instances, *signature)
        url = f"{self._url}/v1/models/{dataset}/versions/{version}:predict"
        try:
            response = self._session.post(
                url,
                # NaN: a missing float (see above); the model's answers in every mode
                data=json.dumps({"instances": rows, "parameters": MODEL_ANSWERS}),
                headers={"Content-Type": "application/json"},
                timeout=60,
            )
            body = response.json() if response.ok else None
        except requests.RequestException as error:
            raise TransientError(f"{url}: {error}") from error
        except ValueError as error:
            raise BadRequestError(f"{url}: the answer is not JSON: {error}") from None
        where = f"the model server ({dataset} v{version})"
        return Answer(
            prediction_list(response.status_code, response.text, body, len(rows), where), version
        )

    # -- helpers -----------------------------------------------------------------------------

    def _new_state(self, dataset: str, mode: ServingMode = "dynamic") -> ServingState:
        return ServingState(
            dataset=dataset, target="local", endpoint=dataset, updated_at=self._clock(), mode=mode
        )

    def _update(self, dataset: str, change: Callable[[ServingState, datetime], None]) -> None:
        def mutate(state: ServingState | None) -> ServingState:
            if state is None:
                state = self._new_state(dataset)
            change(state, self._clock())
            return state

        update_serving_state(self._artifacts, dataset, mutate)
        self._notify(dataset)

    def _notify(self, dataset: str) -> None:
        """Ask the model server to apply serving.json now (else its poll does, within ~1 s)."""
        with contextlib.suppress(requests.RequestException):
            self._session.post(f"{self._url}/v1/models/{dataset}:reload", timeout=10)

    def _signature(self, dataset: str, version: str) -> tuple[dict[str, str], str | None] | None:
        """The version's inputs (name → dtype) and passthrough key, from the server's
        metadata route; None when it does not answer (the check then says why)."""
        url = f"{self._url}/v1/models/{dataset}/versions/{version}/metadata"
        try:
            metadata = self._session.get(url, timeout=30).json()
            return inputs_from_metadata(metadata), key_from_metadata(metadata)
        except (requests.RequestException, ValueError, KeyError, TypeError, AttributeError):
            return None

    def _wait_until_available(self, dataset: str, version: str) -> None:
        """Until the model server has loaded and warmed up ``version`` (or failed to)."""
        url = f"{self._url}/v1/models/{dataset}/versions/{version}"
        deadline = time.monotonic() + self._load_timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                response = self._session.get(url, timeout=30)
                statuses = response.json().get("model_version_status", []) if response.ok else []
            except (requests.RequestException, ValueError) as error:
                statuses, last = [], f"model server unreachable at {self._url}: {error}"
            for status in statuses:
                if status.get("state") == "AVAILABLE":
                    return
                if status.get("state") == "END":
                    return  # failed to load: the canary check fails and says why
                last = f"version {version} is {status.get('state')}"
            time.sleep(0.1)
        raise TransientError(
            f"{dataset} v{version} not loaded after {self._load_timeout_s}s: {last}"
        )
