"""The run page's links to Vertex AI Experiments and the Vertex AI TensorBoard.

URL forms as google-cloud-aiplatform itself builds them (googleapis/python-aiplatform:
google/cloud/aiplatform/utils/_ipython_utils.py, ``display_experiment_run_button``;
google/cloud/aiplatform/utils/tensorboard_utils.py, ``get_experiment_url``)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from google.cloud.aiplatform.utils import tensorboard_utils

from cascade.console.vertex_links import (
    parse_tensorboard,
    tensorboard_web_app_url,
    vertex_run_links,
    vertex_tensorboard_url,
)
from cascade.trainer.vertex_experiments import experiment_name, run_name

TENSORBOARD = "projects/acme-ml/locations/europe-west4/tensorboards/1234567890"


def test_experiment_run_page_in_the_console() -> None:
    url = vertex_tensorboard_url(TENSORBOARD, "cascade-sales", "sales-0123456789abcdef")

    assert url == (
        "https://console.cloud.google.com/vertex-ai/experiments/locations/europe-west4/"
        "experiments/cascade-sales/runs/cascade-sales-sales-0123456789abcdef?project=acme-ml"
    )


def test_tensorboard_web_app_page_is_the_sdks_own() -> None:
    experiment = f"{TENSORBOARD}/experiments/cascade-sales"

    assert tensorboard_web_app_url(TENSORBOARD, "cascade-sales") == (
        tensorboard_utils.get_experiment_url(experiment)
    )
    assert tensorboard_web_app_url(TENSORBOARD, "cascade-sales") == (
        "https://europe-west4.tensorboard.googleusercontent.com/experiment/"
        "projects+acme-ml+locations+europe-west4+tensorboards+1234567890+experiments+cascade-sales"
    )


def test_run_links_use_the_trainers_names() -> None:
    links = vertex_run_links(TENSORBOARD, dataset="Sales_EU", run_id="sales_eu-r0123456789abcdef")

    assert links is not None
    assert links.experiment == experiment_name("Sales_EU")
    assert links.run == run_name("sales_eu-r0123456789abcdef")
    assert f"/experiments/{links.experiment}/runs/{links.experiment}-{links.run}?" in (
        links.experiment_run_url
    )
    trial = vertex_run_links(TENSORBOARD, dataset="sales", run_id="sales-r1", trial_id="3")
    assert trial is not None
    assert trial.run == "sales-r1-trial-3"


def test_no_links_without_a_vertex_tensorboard() -> None:
    assert vertex_run_links(None, dataset="sales", run_id="sales-r1") is None


@pytest.mark.parametrize(
    "resource",
    [
        "",
        "1234567890",
        "projects/acme-ml/locations/europe-west4/tensorboards/1/experiments/x",
        "projects/acme-ml/locations/europe-west4/tensorboards/../1",
        "projects/a?b/locations/europe-west4/tensorboards/1",
        "projects/acme-ml/locations/evil.example.com#/tensorboards/1",
        "projects/acme-ml/locations/europe-west4/endpoints/1",
    ],
)
def test_a_malformed_tensorboard_gives_no_url(resource: str) -> None:
    with pytest.raises(ValueError, match="not a Vertex AI TensorBoard"):
        parse_tensorboard(resource)
    with pytest.raises(ValueError, match="not a Vertex AI TensorBoard"):
        vertex_tensorboard_url(resource, "cascade-sales", "sales-r1")


def test_names_are_quoted_into_the_path() -> None:
    """The names are Cascade's own resource ids; were one odd, it still stays in its segment."""
    url = vertex_tensorboard_url(TENSORBOARD, "a/b?c", "d#e")

    parts = urlsplit(url)
    assert parts.netloc == "console.cloud.google.com"
    assert parts.path.endswith("/experiments/a%2Fb%3Fc/runs/a%2Fb%3Fc-d%23e")
    assert parse_qs(parts.query) == {"project": ["acme-ml"]}
    assert parts.fragment == ""
