"""Vertex AI Experiments: the cloud trainer's parameters, metrics and curves, where users
of the Vertex AI console look.

One experiment per dataset (``cascade-<dataset>``) and one experiment run per training
run (its run id) or tuning trial (``<run id>-trial-<trial id>``), backed by the Vertex AI
TensorBoard a cloud deployment names (``Settings.vertex_tensorboard``, which the Vertex
AI runner passes to its jobs as ``CASCADE_VERTEX_TENSORBOARD``). The chief logs the
hyperparameters when training starts, and at its end the per-epoch history (step = epoch)
and the final eval metrics, then ends the run (``FAILED`` when training failed).

Off unless that setting is there, and always off in the local cloud (an emulator or a
local identity in the settings): locally nothing here calls Vertex AI, and the SDK is
not even imported.

Best effort: logging must never fail or stall training. Each call is tried once, on a
daemon thread the trainer waits for at most ``timeout_s``; the first failure or timeout
is logged as a warning and turns the logging off for the rest of the run. A retried job
(same run id) resumes its experiment run instead of failing to create it again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cascade.core.job_spec import HyperparameterValue, category_text
from cascade.core.settings import Settings

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAX_NAME_CHARS",
    "ExperimentNames",
    "VertexExperiments",
    "experiment_name",
    "experiment_names",
    "resource_id",
    "run_name",
    "tensorboard_location",
]

MAX_NAME_CHARS = 60
"""Experiment and run names are at most this long: the SDK makes the run's metadata
context id ``<experiment>-<run>`` and refuses one over 121 characters (128 less the
``-tb-run`` suffix of its TensorBoard run artifact); TensorBoard experiment and run ids
take 1-128 characters."""
DEFAULT_TIMEOUT_S = 60.0
_VALID_ID = re.compile(r"[a-z][a-z0-9-]*")
_NOT_ID = re.compile(r"[^a-z0-9-]+")
_TENSORBOARD = re.compile(r"projects/[^/]+/locations/([^/]+)/tensorboards/[^/]+")
_DIGEST_CHARS = 10

_log = logging.getLogger("cascade.trainer")


def resource_id(text: str, *, max_chars: int = MAX_NAME_CHARS) -> str:
    """``text`` as a Vertex AI resource id: lowercase letters, digits and hyphens, starting
    with a letter, at most ``max_chars`` long. A valid ``text`` is kept as it is; any other
    is cleaned, cut and ends in a hash of the whole ``text``, so two inputs never share a
    name (``a_b`` and ``a-b`` stay apart) and the same input always gets the same one."""
    if len(text) <= max_chars and _VALID_ID.fullmatch(text):
        return text
    cleaned = _NOT_ID.sub("-", text.lower()).strip("-")
    if not cleaned[:1].isalpha():
        cleaned = f"x{cleaned}"
    digest = hashlib.sha256(text.encode()).hexdigest()[:_DIGEST_CHARS]
    head = cleaned[: max_chars - _DIGEST_CHARS - 1].rstrip("-")
    return f"{head}-{digest}"


def experiment_name(dataset: str) -> str:
    """The dataset's experiment: ``cascade-<dataset>`` as a resource id."""
    return resource_id(f"cascade-{dataset}")


def run_name(run_id: str, trial_id: str | None = None) -> str:
    """A training run's experiment run (a tuning trial's has its trial id too)."""
    return resource_id(run_id if not trial_id else f"{run_id}-trial-{trial_id}")


@dataclass(frozen=True)
class ExperimentNames:
    experiment: str
    run: str


def experiment_names(dataset: str, run_id: str, trial_id: str | None = None) -> ExperimentNames:
    """Both names, derived only from Cascade's own dataset name and run id."""
    return ExperimentNames(experiment_name(dataset), run_name(run_id, trial_id))


def tensorboard_location(tensorboard: str) -> str | None:
    """The region of a TensorBoard resource name, None when it is not one."""
    match = _TENSORBOARD.fullmatch(tensorboard)
    return None if match is None else match.group(1)


def experiment_params(values: Mapping[str, HyperparameterValue]) -> dict[str, float | int | str]:
    """Flat scalars as ``log_params`` takes them: numbers stay numbers, booleans become
    ``true``/``false`` (as categorical values travel to Vertex AI), non-finite numbers text."""
    params: dict[str, float | int | str] = {}
    for name, value in values.items():
        if isinstance(value, bool):
            params[name] = category_text(value)
        elif isinstance(value, float) and not math.isfinite(value):
            params[name] = str(value)
        else:
            params[name] = value
    return params


def finite_metrics(values: Mapping[str, float]) -> dict[str, float]:
    """The finite values (a NaN or infinite metric is left out: Vertex AI stores JSON)."""
    return {name: float(v) for name, v in values.items() if math.isfinite(float(v))}


class VertexExperiments:
    """One training run's experiment run. ``from_settings`` decides whether there is one."""

    def __init__(
        self,
        *,
        project: str,
        region: str,
        tensorboard: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.project = project
        self.region = region
        self.tensorboard = tensorboard
        self._timeout_s = timeout_s
        self._names: ExperimentNames | None = None
        self._started = False
        self._off: str | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> VertexExperiments | None:
        """On only in the cloud: a TensorBoard is named and nothing in the settings is
        local (an emulator, a local identity). None: nothing is logged to Vertex AI."""
        tensorboard = settings.vertex_tensorboard
        if tensorboard is None or _is_local(settings):
            return None
        location = tensorboard_location(tensorboard)
        if location != settings.region:
            _log.warning(
                "not logging to Vertex AI Experiments: TensorBoard %s is not in region %s",
                tensorboard,
                settings.region,
            )
            return None
        return cls(
            project=settings.project,
            region=settings.region,
            tensorboard=tensorboard,
            timeout_s=timeout_s,
        )

    @property
    def names(self) -> ExperimentNames | None:
        return self._names

    @property
    def active(self) -> bool:
        """Started, not ended, and no call has failed."""
        return self._started and self._off is None

    def start(
        self,
        *,
        dataset: str,
        run_id: str,
        trial_id: str | None,
        params: Mapping[str, HyperparameterValue],
    ) -> None:
        """Opens (or, for a retried job, resumes) the run's experiment run and logs its
        hyperparameters."""
        names = experiment_names(dataset, run_id, trial_id)
        self._names = names
        if not self._call("init", lambda api: self._init(api, names.experiment)):
            return
        if not self._call("start_run", lambda api: _start_or_resume(api, names.run)):
            return
        self._started = True
        self._call("log_params", lambda api: api.log_params(experiment_params(params)))

    def log_history(self, history: Mapping[str, Sequence[float]]) -> None:
        """Per-epoch curves (Keras's ``History.history`` or the trees' eval results) as
        time series, one write per epoch with ``step`` = epoch (1-based)."""
        epochs = max((len(values) for values in history.values()), default=0)
        for epoch in range(epochs):
            values = finite_metrics(
                {name: series[epoch] for name, series in history.items() if epoch < len(series)}
            )
            if not values:
                continue
            if not self._call(
                "log_time_series_metrics", _time_series(values, step=epoch + 1), needs_run=True
            ):
                return

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """The run's final metrics (the candidate's overall eval metrics)."""
        values = finite_metrics(metrics)
        if values:
            self._call("log_metrics", lambda api: api.log_metrics(values), needs_run=True)

    def end(self, *, failed: bool = False) -> None:
        """Ends the experiment run (COMPLETE, or FAILED when training failed); once."""
        if not self.active:
            self._started = False
            return
        self._started = False
        self._call("end_run", lambda api: api.end_run(state=_end_state(failed=failed)))

    # -- calls -----------------------------------------------------------------------------

    def _init(self, api: Any, experiment: str) -> None:
        api.init(
            project=self.project,
            location=self.region,
            experiment=experiment,
            experiment_tensorboard=self.tensorboard,
        )

    def _call(self, what: str, call: Callable[[Any], object], *, needs_run: bool = False) -> bool:
        """One attempt at ``call(aiplatform)``, waited for at most ``timeout_s``. The first
        failure turns the logging off (with one warning); later calls do nothing."""
        if self._off is not None or (needs_run and not self._started):
            return False
        outcome: list[BaseException] = []
        done = threading.Event()

        def attempt() -> None:
            try:
                call(_aiplatform())
            except Exception as error:  # noqa: BLE001 - any failure only turns logging off
                outcome.append(error)
            finally:
                done.set()

        threading.Thread(target=attempt, name="vertex-experiments", daemon=True).start()
        if not done.wait(self._timeout_s):
            return self._turn_off(f"{what} took longer than {self._timeout_s:g} s")
        if outcome:
            error = outcome[0]
            return self._turn_off(f"{what} failed: {type(error).__name__}: {error}")
        return True

    def _turn_off(self, reason: str) -> bool:
        self._off = reason
        _log.warning("Vertex AI Experiments logging is off for this run (%s)", reason)
        return False


def _is_local(settings: Settings) -> bool:
    return any(
        value is not None
        for value in (
            settings.local_identity,
            settings.storage_emulator_host,
            settings.pubsub_emulator_host,
            settings.job_service_url,
        )
    )


def _aiplatform() -> Any:
    """The SDK, imported on first use (only ever in the cloud: the import is slow, and the
    local trainer must not need it)."""
    from google.cloud import aiplatform

    return aiplatform


def _start_or_resume(api: Any, run: str) -> None:
    """Creates the experiment run; a retried job's run exists already (the SDK refuses to
    create it again with a RuntimeError), so it is resumed instead."""
    try:
        api.start_run(run=run, resume=False)
    except RuntimeError as error:
        if "already exists" not in str(error):
            raise
        api.start_run(run=run, resume=True)


def _time_series(values: dict[str, float], *, step: int) -> Callable[[Any], object]:
    """One epoch's write (a function of its own, so each call keeps its own values)."""
    return lambda api: api.log_time_series_metrics(values, step=step)


def _end_state(*, failed: bool) -> Any:
    """The state ``end_run`` records: the SDK's own enum (``aiplatform_v1.Execution.State``)."""
    from google.cloud.aiplatform_v1 import Execution

    return Execution.State.FAILED if failed else Execution.State.COMPLETE
