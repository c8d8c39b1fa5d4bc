"""Links from a run's page to what the cloud trainer logged to Vertex AI Experiments.

In the cloud (``Settings.vertex_tensorboard`` set) the trainer logs each run to an
experiment run of its dataset's experiment (``cascade.trainer.vertex_experiments``), backed
by that Vertex AI TensorBoard; these are the Google Cloud console's page of that experiment
run (parameters, metrics and time series, with its "Open TensorBoard" button) and the
TensorBoard web app's page of the experiment. Locally there is no such link: the run page
starts TensorBoard on demand instead.

The names come only from Cascade's own dataset name and run id, as the trainer derives
them, never from a request; every part of a URL is quoted.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict

from cascade.trainer.vertex_experiments import experiment_names

__all__ = [
    "VertexRunLinks",
    "parse_tensorboard",
    "tensorboard_web_app_url",
    "vertex_run_links",
    "vertex_tensorboard_url",
]

_TENSORBOARD = re.compile(
    r"projects/(?P<project>[a-z0-9.:-]+)/locations/(?P<location>[a-z0-9-]+)"
    r"/tensorboards/(?P<tensorboard>[a-z0-9-]+)"
)
_CONSOLE = "https://console.cloud.google.com/vertex-ai/experiments"
_TENSORBOARD_DOMAIN = "tensorboard.googleusercontent.com"


def parse_tensorboard(tensorboard_resource: str) -> dict[str, str]:
    """Project, location and id of ``projects/P/locations/R/tensorboards/ID``."""
    match = _TENSORBOARD.fullmatch(tensorboard_resource)
    if match is None:
        raise ValueError(f"not a Vertex AI TensorBoard resource name: {tensorboard_resource!r}")
    return match.groupdict()


def vertex_tensorboard_url(tensorboard_resource: str, experiment: str, run: str) -> str:
    """The console page of the experiment run ``run`` of ``experiment`` (the SDK's own
    "View Experiment Run" link: the run's resource id is ``<experiment>-<run>``), in the
    TensorBoard's project and location."""
    parts = parse_tensorboard(tensorboard_resource)
    path = "/".join(
        (
            _CONSOLE,
            "locations",
            quote(parts["location"], safe=""),
            "experiments",
            quote(experiment, safe=""),
            "runs",
            quote(f"{experiment}-{run}", safe=""),
        )
    )
    return f"{path}?{urlencode({'project': parts['project']})}"


def tensorboard_web_app_url(tensorboard_resource: str, experiment: str) -> str:
    """The Vertex AI TensorBoard web app's page of the experiment's TensorBoard
    experiment (its id is the experiment's name): every run's curves side by side."""
    parts = parse_tensorboard(tensorboard_resource)
    name = f"{tensorboard_resource}/experiments/{experiment}".replace("/", "+")
    return f"https://{parts['location']}.{_TENSORBOARD_DOMAIN}/experiment/{quote(name, safe='+')}"


class VertexRunLinks(BaseModel):
    """What a run's page links to in the cloud."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: str
    run: str
    experiment_run_url: str
    tensorboard_url: str


def vertex_run_links(
    tensorboard_resource: str | None, *, dataset: str, run_id: str, trial_id: str | None = None
) -> VertexRunLinks | None:
    """The links of a run (or a tuning trial), None without a Vertex AI TensorBoard (the
    local cloud)."""
    if tensorboard_resource is None:
        return None
    names = experiment_names(dataset, run_id, trial_id)
    return VertexRunLinks(
        experiment=names.experiment,
        run=names.run,
        experiment_run_url=vertex_tensorboard_url(
            tensorboard_resource, names.experiment, names.run
        ),
        tensorboard_url=tensorboard_web_app_url(tensorboard_resource, names.experiment),
    )
