"""Every message the infrastructure sends, fed through the code that reads it.

The bodies are not restated here: the scheduler's is evaluated from infra/scheduler.tf
(python-hcl2 + tests/infra/hcl_expressions.py) for the example schedule of
infra/terraform.tfvars.example, the log sink's and Pub/Sub's dead-letter shapes are the
golden payloads of tests/data (from Google's docs). Each travels the way Google Cloud
delivers it — a Pub/Sub push body or an Eventarc CloudEvent, as Terraform wires the
trigger — through functions-framework and the function's real main.py. A change to the
Terraform body, the trigger wiring or the parsers that breaks the contract fails here.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import hcl2
import pytest
import yaml

import cascade.steps.training_job as training_job
from cascade.core.job_spec import JobState
from cascade.core.messages import TrainRequest
from cascade.core.paths import dead_letter_record
from cascade.core.runs import run_id_for_object
from cascade.core.topology import Topology, load_topology, parse_topology
from cascade.jobs.beam_jobs import LocalDataflowJob, dataflow_job_end_log_entry
from cascade.jobs.beam_spec import dataflow_job_name
from cascade.jobs.job_events import JobLogEntry, parse_job_event
from cascade.steps.dead_letter import DeadLetter
from tests.function_client import REPO_ROOT, golden, load_function
from tests.infra.hcl_expressions import evaluate, unwrap

pytestmark = pytest.mark.infra

INFRA = REPO_ROOT / "infra"
_OPTIONS = hcl2.SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True
)
TOPOLOGY: Topology = load_topology(INFRA / "topology.yaml")


def _hcl(name: str) -> dict[str, Any]:
    with (INFRA / name).open(encoding="utf-8") as handle:
        document: dict[str, Any] = hcl2.load(handle, serialization_options=_OPTIONS)
    return document


def _locals(name: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in _hcl(name).get("locals", []):
        merged.update(block)
    return merged


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _push(data: bytes, attributes: dict[str, str]) -> tuple[str, dict[str, str], bytes, datetime]:
    """Google's push request example (tests/data) carrying this message."""
    sample = golden("pubsub_push_request.json")
    body = sample["body"]
    body["message"]["data"] = base64.b64encode(data).decode()
    body["message"]["attributes"] = attributes
    return (
        sample["path"],
        sample["headers"],
        json.dumps(body).encode(),
        _time(body["message"]["publishTime"]),
    )


# ------------------------------------------------------------------ delivery rule


def _terraform_delivery_rule() -> str:
    functions = _locals("locals.tf")["functions"]
    match = re.search(r"delivery = (\(.*\))\}\}\}$", functions)
    assert match, "infra/locals.tf: the functions record has no delivery = (...) rule"
    return match.group(1)


def _variants() -> list[dict[str, Any]]:
    """The real topology, and one where every kind of trigger flips its retry policy."""
    document = yaml.safe_load((INFRA / "topology.yaml").read_text())
    flipped = copy.deepcopy(document)
    for name, spec in flipped["functions"].items():
        if spec["trigger"]["type"] == "http" or name == "dead-letters":
            continue  # dead-letters must not retry: its own dead letters would loop
        if "retry" in spec:
            del spec["retry"]
        else:
            spec["retry"] = {"policy": "do_not_retry"}
    return [document, flipped]


@pytest.mark.parametrize("document", _variants(), ids=["topology", "retry-flipped"])
def test_terraform_and_the_topology_model_deliver_alike(document: dict[str, Any]) -> None:
    """infra/locals.tf's `delivery` (which picks local.push_functions) evaluated the way
    Terraform does — merge(defaults, spec) — equals FunctionSpec.delivery, which the local
    router uses to choose between a push body and an Eventarc CloudEvent."""
    rule = _terraform_delivery_rule()
    topology = parse_topology(copy.deepcopy(document))

    for name, raw in document["functions"].items():
        merged = {**document["defaults"], **raw}
        assert evaluate(rule, {"spec": merged}) == topology.functions[name].delivery, name


def test_the_rule_without_a_retry_block_falls_back_like_the_model() -> None:
    rule = _terraform_delivery_rule()

    assert evaluate(rule, {"spec": {"trigger": {"type": "topic"}}}) == "push"
    assert evaluate(rule, {"spec": {"trigger": {"type": "storage"}}}) == "eventarc"
    assert evaluate(rule, {"spec": {"trigger": {"type": "http"}}}) == "http"


# ------------------------------------------------------------------ Cloud Scheduler


def _example_schedule() -> tuple[str, dict[str, Any]]:
    """The example's first schedule, with the variable type's optional() defaults."""
    example = _hcl("terraform.tfvars.example")["retrain_schedules"]
    dataset, schedule = next(iter(example.items()))
    variable = next(
        block["retrain_schedules"]
        for block in _hcl("variables.tf")["variable"]
        if "retrain_schedules" in block
    )
    defaults = {
        key: json.loads(default)
        for key, default in re.findall(
            r"(\w+) = optional\((?:\w+\(\w+\)|\w+), (\"[^\"]*\"|true|false|\{\}|\d+)\)",
            variable["type"],
        )
    }
    return dataset, {**defaults, **schedule}


def _scheduler_message() -> tuple[bytes, dict[str, str]]:
    """The Pub/Sub message a retrain job publishes: data and attributes as Terraform
    configures them (pubsub_target.data is base64; Pub/Sub delivers the decoded bytes)."""
    job = _hcl("scheduler.tf")["resource"][0]["google_cloud_scheduler_job"]["retrain"]
    [target] = job["pubsub_target"]
    dataset, schedule = _example_schedule()
    scope = {"each": {"key": dataset, "value": schedule}}
    data = base64.b64decode(evaluate(unwrap(target["data"]), scope))
    attributes = {k: str(evaluate(unwrap(v), scope)) for k, v in target["attributes"].items()}
    return data, attributes


def test_the_scheduler_body_is_a_valid_train_request() -> None:
    data, _ = _scheduler_message()

    request = TrainRequest.model_validate_json(data)

    assert request.dataset == "taxi"
    assert request.request_id is None  # each tick's Pub/Sub message id becomes the request id
    assert request.reason == "scheduled retrain (0 3 * * 1, Europe/Brussels)"


def test_a_scheduled_retrain_reaches_the_train_step(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = TOPOLOGY.functions["train"]
    assert spec.delivery == "push"
    data, attributes = _scheduler_message()
    path, headers, body, published = _push(data, attributes)
    function, ctx = load_function(spec, monkeypatch, published)
    monkeypatch.setattr(function.module, "handle_train_request", function.record)

    assert function.post(path, headers, body) == 200

    assert ctx.bus.published == []  # type: ignore[attr-defined]  # not rejected
    [(request, event_id)] = function.calls
    assert isinstance(request, TrainRequest)
    assert (request.dataset, request.tune, request.hyperparameters) == ("taxi", False, {})
    assert request.reason.startswith("scheduled retrain")
    assert event_id == "2070443601311540"


# ------------------------------------------------------------------ log sink job events


def _sink_filter_clauses(kind: str) -> list[str]:
    """infra/observability.tf's clauses for one kind of job (``vertex``, ``dataflow``);
    the default filter is the OR of each kind's clauses joined by AND."""
    found = _locals("observability.tf")
    expression = found["default_job_event_log_filter"]
    kinds = re.findall(r"local\.(\w+)_job_event_clauses", expression)
    assert kinds == ["vertex", "dataflow"], expression
    assert expression.startswith('${join(" OR ", [for clauses in ['), expression
    assert expression.endswith(' : "(${join(" AND ", clauses)})"])}'), expression
    clauses: list[str] = found[f"{kind}_job_event_clauses"]
    return clauses


def _matches(entry: dict[str, Any], clause: str) -> bool:
    """One clause of the Logging query language, of the four forms the sink uses."""
    if found := re.fullmatch(r'log_id\("([^"]+)"\)', clause):
        return str(entry["logName"]).endswith("/logs/" + quote(found.group(1), safe=""))
    if found := re.fullmatch(r'([\w.]+)=\"([^"]*)\"', clause):
        return bool(_field(entry, found.group(1)) == found.group(2))
    if found := re.fullmatch(r'([\w.]+):\"([^"]*)\"', clause):
        return found.group(2) in str(_field(entry, found.group(1)) or "")
    if found := re.fullmatch(r'([\w.]+)=~\"([^"]*)\"', clause):  # an RE2 search
        return re.search(found.group(2), str(_field(entry, found.group(1)) or "")) is not None
    raise AssertionError(f"a clause this test cannot read: {clause}")


def _field(document: dict[str, Any], dotted: str) -> Any:
    value: Any = document
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def test_the_sink_filter_selects_the_entries_the_parser_reads() -> None:
    entry = golden("logging_sink_job_event.json")["data"]

    assert all(_matches(entry, clause) for clause in _sink_filter_clauses("vertex"))
    assert not all(_matches(entry, clause) for clause in _sink_filter_clauses("dataflow"))
    parsed = parse_job_event(json.dumps(entry).encode())
    assert parsed == JobLogEntry(
        job_id="1234567890123456789",
        resource_type="ml_job",
        severity="ERROR",
        text=entry["textPayload"],
        insert_id=entry["insertId"],
    )
    assert parsed.announces_end


@pytest.mark.parametrize("kind", ["stats", "split"])
@pytest.mark.parametrize("state", ["succeeded", "failed", "cancelled"])
def test_the_sink_filter_selects_the_end_of_a_beam_job(state: JobState, kind: str) -> None:
    """The entry the local job service announces a Beam job's end with (a file's
    statistics, a run's split) is the one the sink's Dataflow clauses select (Dataflow's
    job-message log, the job's name); another job's name is not."""
    job = LocalDataflowJob(
        job_id="0123456789abcdef",
        name=dataflow_job_name("credit-0123456789abcdef", kind=kind),
        parameters={},
        state=state,
        error="worker lost",
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
    )
    entry = dataflow_job_end_log_entry(
        project="p", region="us-central1", job=job, timestamp="t", insert_id="i"
    )

    assert all(_matches(entry, clause) for clause in _sink_filter_clauses("dataflow"))
    assert not all(_matches(entry, clause) for clause in _sink_filter_clauses("vertex"))
    other = {**entry, "resource": {**entry["resource"], "labels": {"job_name": "etl-cascade-x"}}}
    assert not all(_matches(other, clause) for clause in _sink_filter_clauses("dataflow"))
    parsed = parse_job_event(json.dumps(entry).encode())
    assert isinstance(parsed, JobLogEntry)
    assert (parsed.job_id, parsed.resource_type) == ("0123456789abcdef", "dataflow_step")
    assert parsed.announces_end


def test_a_sink_log_entry_reaches_the_job_event_step(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = next(
        s
        for s in TOPOLOGY.event_functions()
        if getattr(s.trigger, "topic", None) == _locals("observability.tf")["job_events_topic"]
    )
    sample = golden("logging_sink_job_event.json")
    path, headers, body, published = _push(
        json.dumps(sample["data"]).encode(), sample["attributes"]
    )
    assert spec.delivery == "push"
    function, ctx = load_function(spec, monkeypatch, published)
    monkeypatch.setattr(training_job, "handle_job_event", function.record)

    assert function.post(path, headers, body) == 200

    assert ctx.bus.published == []  # type: ignore[attr-defined]
    [(entry, _event_id)] = function.calls
    assert isinstance(entry, JobLogEntry)
    assert entry.job_id == "1234567890123456789"


# ------------------------------------------------------------------ dead letters


def _dead_letter_attributes() -> dict[str, str]:
    return {k: v for k, v in golden("pubsub_dead_letter_attributes.json").items() if k[0] != "_"}


def test_a_dead_lettered_storage_notification_fails_its_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pub/Sub forwards validate's notification (GCS attributes kept) to the dead-letter
    topic; the dead-letters function (an Eventarc trigger) names the run it belongs to."""
    spec = TOPOLOGY.functions["dead-letters"]
    assert spec.delivery == "eventarc"
    sample = golden("pubsub_message_published.json")
    data = sample["data"]
    data["message"]["attributes"] = {
        "eventType": "OBJECT_FINALIZE",
        "bucketId": "landing",
        "objectId": "credit/a.csv",
        "objectGeneration": "7",
        "payloadFormat": "JSON_API_V1",
        **_dead_letter_attributes(),
    }
    function, ctx = load_function(spec, monkeypatch, _time(sample["headers"]["ce-time"]))

    assert function.post("/", sample["headers"], json.dumps(data).encode()) == 200

    stored = ctx.artifacts.read_model(dead_letter_record("1413058901901494"), DeadLetter)
    assert stored is not None
    letter = stored[0]
    assert letter.delivery_attempts == 5
    assert letter.source_subscription == "my-subscription-name"
    assert letter.message_type == "object_finalize"
    assert letter.run_id == run_id_for_object("credit", "landing", "credit/a.csv", 7)
