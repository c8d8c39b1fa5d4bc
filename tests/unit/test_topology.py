from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from cascade.core.errors import InvalidConfigError
from cascade.core.topology import (
    FUNCTION_DEPENDENCY_GROUPS,
    HttpTrigger,
    StorageTrigger,
    TopicTrigger,
    load_topology,
    parse_topology,
)

REPO_TOPOLOGY = Path(__file__).resolve().parents[2] / "infra" / "topology.yaml"


def _document() -> dict[str, object]:
    return yaml.safe_load(REPO_TOPOLOGY.read_text())


def test_repository_topology_wires_the_event_chain() -> None:
    topology = load_topology(REPO_TOPOLOGY)

    triggers = {name: spec.trigger for name, spec in topology.functions.items()}
    assert triggers["validate"] == StorageTrigger(type="storage", bucket="landing")
    assert triggers["transform"] == TopicTrigger(type="topic", topic="data-validated")
    assert triggers["train"] == TopicTrigger(type="topic", topic="train-requests")
    assert isinstance(triggers["train-http"], HttpTrigger)
    assert triggers["evaluate"] == TopicTrigger(type="topic", topic="model-trained")
    assert triggers["evaluate-job-events"] == TopicTrigger(type="topic", topic="job-events")
    assert triggers["deploy"] == TopicTrigger(type="topic", topic="model-blessed")
    assert triggers["dead-letters"] == TopicTrigger(type="topic", topic="dead-letter")
    assert triggers["report"] == TopicTrigger(type="topic", topic="run-ended")


def test_the_dead_letter_consumer_never_dead_letters_into_its_own_topic() -> None:
    topology = load_topology(REPO_TOPOLOGY)

    assert topology.functions["dead-letters"].dead_letters_to is None
    assert topology.functions["transform"].dead_letters_to == "dead-letter"


def test_a_retrying_consumer_of_its_own_dead_letter_topic_is_rejected() -> None:
    document = _document()
    del document["functions"]["dead-letters"]["retry"]  # type: ignore[index]

    with pytest.raises(InvalidConfigError, match="dead-letters consumes its own dead-letter"):
        parse_topology(document)


def test_defaults_apply_unless_a_function_overrides_them() -> None:
    topology = load_topology(REPO_TOPOLOGY)

    assert topology.functions["validate"].memory == "2Gi"
    assert topology.functions["train"].memory == topology.defaults.memory
    assert topology.functions["deploy"].retry == topology.defaults.retry
    assert topology.functions["deploy"].dead_letter_topic == "dead-letter"


def test_backoff_doubles_from_the_minimum_and_stops_at_the_maximum() -> None:
    retry = load_topology(REPO_TOPOLOGY).defaults.retry

    delays = [retry.backoff_s(attempt) for attempt in range(1, 9)]

    assert delays == [10, 20, 40, 80, 160, 320, 600, 600]


def test_unknown_topic_is_rejected_with_the_function_name() -> None:
    document = _document()
    document["functions"]["transform"]["trigger"]["topic"] = "no-such-topic"  # type: ignore[index]

    with pytest.raises(InvalidConfigError, match="transform: unknown topic 'no-such-topic'"):
        parse_topology(document)


def test_http_signature_requires_an_http_trigger() -> None:
    document = _document()
    document["functions"]["train-http"]["signature"] = "cloudevent"  # type: ignore[index]

    with pytest.raises(InvalidConfigError, match="train-http"):
        parse_topology(document)


def test_max_delivery_attempts_follow_pubsub_bounds() -> None:
    document = _document()
    document["defaults"]["retry"]["max_delivery_attempts"] = 3  # type: ignore[index]

    with pytest.raises(InvalidConfigError, match="max_delivery_attempts"):
        parse_topology(document)


def test_every_repository_function_names_its_dependency_group() -> None:
    topology = load_topology(REPO_TOPOLOGY)

    groups = {name: spec.dependencies for name, spec in topology.functions.items()}

    # Vertex AI's client only where the step calls Vertex AI (and iam.tf grants it a role);
    # the data libraries (pyarrow, numpy...) only where the step reads data or reports.
    assert groups == {
        "validate": "function-beam",
        "transform": "function-beam",
        "monitor": "function-vertex-data",
        "train": "function-vertex",
        "train-http": "function-vertex",
        "evaluate": "function",
        "evaluate-job-events": "function-vertex-beam",
        "evaluate-http": "function",
        "review-http": "function-beam",
        "deploy": "function-vertex",
        "batch-predict": "function-vertex",
        "batch-collect": "function-batch",
        "dead-letters": "function",
        "report": "function-data",
        "reconcile": "function-beam",
        "extract": "function-warehouse",
    }


def test_an_unknown_dependency_group_is_rejected() -> None:
    document = _document()
    document["functions"]["validate"]["dependencies"] = "trainer"  # type: ignore[index]

    with pytest.raises(InvalidConfigError, match=r"validate\.dependencies"):
        parse_topology(document)


def test_a_topology_that_is_never_packaged_may_leave_the_group_out() -> None:
    document = _document()
    del document["functions"]["validate"]["dependencies"]  # type: ignore[index]

    assert parse_topology(document).functions["validate"].dependencies is None


def test_the_function_groups_are_defined_in_the_shared_pyproject() -> None:
    pyproject = REPO_TOPOLOGY.parents[1] / "shared" / "pyproject.toml"
    groups = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]

    assert set(FUNCTION_DEPENDENCY_GROUPS) <= set(groups)
    assert FUNCTION_DEPENDENCY_GROUPS == (
        "function",
        "function-data",
        "function-vertex",
        "function-vertex-data",
        "function-batch",
        "function-warehouse",
        "function-beam",
        "function-vertex-beam",
    )


def _document_with(function: str, **access: object) -> dict[str, object]:
    import yaml

    document = yaml.safe_load(REPO_TOPOLOGY.read_text())
    document["functions"][function]["access"] = {
        **document["functions"][function].get("access", {}),
        **access,
    }
    return document


@pytest.mark.parametrize(
    ("access", "kind", "name"),
    [
        ({"publish": ["model-traind"]}, "topic", "model-traind"),
        ({"write": ["artefacts"]}, "bucket", "artefacts"),
        ({"read": ["landng"]}, "bucket", "landng"),
        ({"apis": ["vertex"]}, "api", "vertex"),
        ({"act_as": ["nobody"]}, "service account", "nobody"),
    ],
)
def test_an_unknown_name_in_access_is_rejected_naming_function_and_name(
    access: dict[str, object], kind: str, name: str
) -> None:
    with pytest.raises(InvalidConfigError) as raised:
        parse_topology(_document_with("train", **access))

    assert f"function train: access names unknown {kind} {name!r}" in str(raised.value)


def test_only_http_functions_name_invokers() -> None:
    import yaml

    document = yaml.safe_load(REPO_TOPOLOGY.read_text())
    document["functions"]["train"]["invokers"] = "retrain"

    with pytest.raises(InvalidConfigError, match="only HTTP functions name invokers"):
        parse_topology(document)


def test_retrain_and_bless_callers_are_separate_groups() -> None:
    topology = load_topology(REPO_TOPOLOGY)

    assert topology.functions["train-http"].invokers == "retrain"
    assert topology.functions["evaluate-http"].invokers == "bless"
    assert topology.functions["review-http"].invokers == "review"


def test_the_vertex_jobs_account_is_declared_with_its_access() -> None:
    jobs = load_topology(REPO_TOPOLOGY).service_accounts["vertex-jobs"]

    assert jobs.access.publish == ("model-trained",)
    assert "artifacts" in jobs.access.write
