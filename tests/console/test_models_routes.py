"""The models pages and their actions over an in-memory bucket, served by uvicorn on
loopback: versions, traffic, lineage and verdicts; rollback, promote and force-bless as
the CLI does them, recorded with who and why; CSRF; hostile names; TensorBoard."""

from __future__ import annotations

import re
from collections.abc import Iterator
from unittest.mock import call

import httpx
import pytest

from cascade.console import Caller, ConsoleConfig, create_app
from cascade.console.security import CONTENT_SECURITY_POLICY, CSRF_COOKIE
from cascade.core.errors import TransientError
from cascade.core.messages import Alert, ModelBlessed
from cascade.core.paths import RunPaths
from cascade.core.run_index import StoreLister
from cascade.core.runs import RunRecord
from cascade.deploy.local_deployer import LocalDeployer
from cascade.evaluation.record import EvaluationRecord, evaluation_path
from cascade.serving.state import ServingState, read_serving_state
from tests.console.builders import LOCAL_USER
from tests.console.models_builders import (
    MODEL_SERVER,
    ModelsConsole,
    deploy,
    evaluation,
    models_console,
)
from tests.console.server import serving

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert('y')>"


class Launches:
    def __init__(self) -> None:
        self.run_ids: list[str] = []

    def __call__(self, run_id: str) -> str:
        self.run_ids.append(run_id)
        return "http://127.0.0.1:6123/"


@pytest.fixture
def launches() -> Launches:
    return Launches()


@pytest.fixture
def console(launches: Launches) -> ModelsConsole:
    return models_console(page_size=3, tensorboard=launches)


@pytest.fixture
def client(console: ModelsConsole) -> Iterator[httpx.Client]:
    with serving(console.app) as url, httpx.Client(base_url=url, follow_redirects=False) as client:
        yield client


def _csrf(client: httpx.Client, path: str) -> str:
    """The browser's CSRF token: the cookie any page sets (and its forms carry)."""
    client.get(path)
    token = client.cookies.get(CSRF_COOKIE)
    assert token is not None, path
    return token


def _two_versions(console: ModelsConsole) -> tuple[RunRecord, RunRecord]:
    first = console.add_run("credit", 1)
    second = console.add_run("credit", 2)
    deploy(console, first, ["credit/jan.csv"])
    deploy(console, second, ["credit/jan.csv", "credit/feb.csv"])
    return first, second


def _state(console: ModelsConsole) -> ServingState:
    found = read_serving_state(console.artifacts, "credit")
    assert found is not None
    return found[0]


def test_the_models_list_names_each_dataset_with_a_deployed_model(
    console: ModelsConsole, client: httpx.Client
) -> None:
    _two_versions(console)

    page = client.get("/models")

    assert page.status_code == 200
    assert 'href="/models/credit"' in page.text
    assert "v2: 100%" in page.text


def test_a_models_page_shows_traffic_lineage_files_and_verdicts(
    console: ModelsConsole, client: httpx.Client
) -> None:
    first, second = _two_versions(console)

    page = client.get("/models/credit")

    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    html = page.text
    assert re.search(r'<tr data-version="2"><th>Version 2</th><td class="share">.*100%', html)
    assert f'href="/runs/{first.run_id}"' in html
    assert f'href="/runs/{second.run_id}"' in html
    assert "gs://landing/credit/feb.csv#2 (100 rows)" in html
    assert "snapshot_files: 2" in html
    assert "transform_fingerprint" in html
    assert "blessed" in html
    assert "<th>auc</th><td>0.91 (baseline 0.88) · pass</td>" in html
    assert html.index("<td>v2<br>") < html.index("<td>v1<br>")  # newest first
    assert "Promote v1" in html
    assert "Promote v2" not in html


@pytest.mark.parametrize("dataset", ["Credit", "a..b", "x" * 80, "%3Cscript%3E"])
def test_a_dataset_name_the_system_would_not_use_is_a_400(
    client: httpx.Client, dataset: str
) -> None:
    page = client.get(f"/models/{dataset}")

    assert page.status_code == 400
    assert "dataset" in page.text


def test_a_dataset_without_a_deployed_model_is_a_404(client: httpx.Client) -> None:
    page = client.get("/models/credit")

    assert page.status_code == 404
    assert "no model of dataset credit has been deployed" in page.text


def test_rollback_sends_all_traffic_back_and_records_who_and_why(
    console: ModelsConsole, client: httpx.Client
) -> None:
    _two_versions(console)
    token = _csrf(client, "/models/credit")

    answer = client.post(
        "/models/credit/rollback", data={"csrf_token": token, "reason": "v2 over-predicts"}
    )

    assert answer.status_code == 303
    assert answer.headers["location"] == "/models/credit?done=rollback"
    state = _state(console)
    assert state.traffic == {"1": 100}
    assert state.primary is not None
    assert state.primary.version == "1"
    version_two = state.version("2")
    assert version_two is not None
    assert version_two.state == "rolled_back"
    event = state.history[-1]
    assert (event.action, event.version, event.detail) == ("rollback", "2", "to version 1")
    assert (event.actor, event.reason) == (LOCAL_USER, "v2 over-predicts")
    assert console.session.post.call_args_list[-1] == call(  # type: ignore[attr-defined]
        f"{MODEL_SERVER}/v1/models/credit:reload", timeout=10
    )
    shown = client.get("/models/credit").text
    assert f'<td class="actor">{LOCAL_USER}</td><td class="why">v2 over-predicts</td>' in shown


def test_rollback_without_its_csrf_token_is_403_and_changes_nothing(
    console: ModelsConsole, client: httpx.Client
) -> None:
    _two_versions(console)
    _csrf(client, "/models/credit")  # the browser has its cookie

    for data in [{"reason": "why"}, {"reason": "why", "csrf_token": "x" * 43}]:
        answer = client.post("/models/credit/rollback", data=data)
        assert answer.status_code == 403

    assert _state(console).traffic == {"2": 100}


def test_rollback_from_another_origin_is_403(console: ModelsConsole, client: httpx.Client) -> None:
    _two_versions(console)
    token = _csrf(client, "/models/credit")

    answer = client.post(
        "/models/credit/rollback",
        data={"csrf_token": token, "reason": "why"},
        headers={"Origin": "http://evil.example"},
    )

    assert answer.status_code == 403
    assert _state(console).traffic == {"2": 100}


def test_rollback_with_one_version_is_refused_with_the_clis_message(
    console: ModelsConsole, client: httpx.Client
) -> None:
    deploy(console, console.add_run("credit", 1), ["credit/jan.csv"])
    token = _csrf(client, "/models/credit")

    answer = client.post("/models/credit/rollback", data={"csrf_token": token, "reason": "why"})

    assert answer.status_code == 400
    assert (
        "credit: version 1 is the only deployed version; there is nothing to roll back to"
        in answer.text
    )
    assert _state(console).traffic == {"1": 100}


def test_rollback_needs_a_reason(console: ModelsConsole, client: httpx.Client) -> None:
    _two_versions(console)
    token = _csrf(client, "/models/credit")

    answer = client.post("/models/credit/rollback", data={"csrf_token": token, "reason": "  "})

    assert answer.status_code == 400
    assert "reason: say why the serving version should be rolled back" in answer.text
    assert _state(console).traffic == {"2": 100}


def test_promote_gives_a_canary_all_traffic_and_records_who_and_why(
    console: ModelsConsole, client: httpx.Client
) -> None:
    deploy(console, console.add_run("credit", 1), ["credit/jan.csv"])
    deploy(console, console.add_run("credit", 2), ["credit/feb.csv"], share=10)
    assert _state(console).traffic == {"1": 90, "2": 10}
    token = _csrf(client, "/models/credit")

    answer = client.post(
        "/models/credit/promote",
        data={"csrf_token": token, "version": "2", "reason": "canary looks good"},
    )

    assert answer.status_code == 303
    state = _state(console)
    assert state.traffic == {"2": 100}
    assert [(v.version, v.state) for v in state.versions] == [("1", "standby"), ("2", "serving")]
    event = state.history[-1]
    assert (event.action, event.version, event.actor, event.reason) == (
        "promote",
        "2",
        LOCAL_USER,
        "canary looks good",
    )


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("7", "credit: version 7 is not deployed"),
        ("../1", "version: a version number"),
        (HOSTILE, "version: a version number"),
        ("", "version: a version number"),
    ],
)
def test_promote_of_a_version_not_deployed_is_a_400(
    console: ModelsConsole, client: httpx.Client, version: str, message: str
) -> None:
    _two_versions(console)
    token = _csrf(client, "/models/credit")

    answer = client.post(
        "/models/credit/promote", data={"csrf_token": token, "version": version, "reason": "r"}
    )

    assert answer.status_code == 400
    assert message in answer.text
    assert "<script>alert" not in answer.text
    assert _state(console).traffic == {"2": 100}


def test_an_action_on_a_hostile_dataset_name_is_a_400(
    console: ModelsConsole, client: httpx.Client
) -> None:
    token = _csrf(client, "/models")

    answer = client.post("/models/No..pe/rollback", data={"csrf_token": token, "reason": "r"})

    assert answer.status_code == 400
    assert "dataset" in answer.text


def _rejected_run(console: ModelsConsole, *, infra_passed: bool = True) -> RunRecord:
    run = console.add_run("credit", 3, state="rejected", error="model not blessed")
    console.artifacts.write_json(
        evaluation_path(run.run_id), evaluation(run, "not_blessed", infra_passed=infra_passed)
    )
    return run


def test_force_bless_of_a_rejected_run_calls_the_override_as_cascade_bless_does(
    console: ModelsConsole, client: httpx.Client
) -> None:
    run = _rejected_run(console)
    page = client.get(f"/runs/{run.run_id}")
    assert 'id="bless-form"' in page.text
    token = _csrf(client, f"/runs/{run.run_id}")

    answer = client.post(
        f"/runs/{run.run_id}/bless", data={"csrf_token": token, "reason": "known regression"}
    )

    assert answer.status_code == 303
    found = console.artifacts.read_model(evaluation_path(run.run_id), EvaluationRecord)
    assert found is not None
    record = found[0]
    assert record.verdict == "force_blessed"
    assert record.override is not None
    assert (record.override.actor, record.override.reason, record.override.via) == (
        LOCAL_USER,
        "known regression",
        "console",
    )
    assert record.override.previous_verdict == "not_blessed"
    stored = console.artifacts.read_model(RunPaths(run.run_id).record, RunRecord)
    assert stored is not None
    assert stored[0].state == "running"
    published = [type(message) for message in console.bus.published]
    assert ModelBlessed in published
    assert Alert in published
    after = client.get(f"/runs/{run.run_id}").text
    assert 'id="bless-form"' not in after
    assert f"force-blessed by {LOCAL_USER} via console (was not_blessed): known regression" in after


def test_force_bless_is_refused_with_the_overrides_messages(
    console: ModelsConsole, client: httpx.Client
) -> None:
    unservable = _rejected_run(console, infra_passed=False)
    blessed = console.add_run("credit", 4)
    console.artifacts.write_json(evaluation_path(blessed.run_id), evaluation(blessed))
    never = console.add_run("credit", 5, state="failed")
    token = _csrf(client, "/runs")

    expected = {
        unservable.run_id: "failed its load-and-probe check and cannot be served; it cannot "
        "be force-blessed (train a new model)",
        blessed.run_id: f"run {blessed.run_id} is already blessed",
        never.run_id: f"run {never.run_id} has no evaluation.json: nothing was evaluated",
    }
    for run_id, message in expected.items():
        answer = client.post(f"/runs/{run_id}/bless", data={"csrf_token": token, "reason": "ok!"})
        assert answer.status_code == 400, run_id
        assert message in answer.text, run_id
    assert console.bus.published == []
    assert 'id="bless-form"' not in client.get(f"/runs/{unservable.run_id}").text


def test_force_bless_without_csrf_or_a_reason_is_refused(
    console: ModelsConsole, client: httpx.Client
) -> None:
    run = _rejected_run(console)
    token = _csrf(client, f"/runs/{run.run_id}")

    assert client.post(f"/runs/{run.run_id}/bless", data={"reason": "r!!"}).status_code == 403
    short = client.post(f"/runs/{run.run_id}/bless", data={"csrf_token": token, "reason": "ok"})
    assert short.status_code == 400
    assert "reason: at least 3 characters" in short.text
    assert console.bus.published == []


def test_tensorboard_starts_through_the_configured_launcher(
    console: ModelsConsole, client: httpx.Client, launches: Launches
) -> None:
    run = console.add_run("credit", 1)
    page = client.get(f"/runs/{run.run_id}")
    assert 'id="tensorboard-form"' in page.text
    token = _csrf(client, f"/runs/{run.run_id}")

    refused = client.post(f"/runs/{run.run_id}/tensorboard", data={"reason": ""})
    assert refused.status_code == 403
    answer = client.post(f"/runs/{run.run_id}/tensorboard", data={"csrf_token": token})

    assert answer.status_code == 200
    assert 'href="http://127.0.0.1:6123/"' in answer.text
    assert launches.run_ids == [run.run_id]


def test_without_a_launcher_or_deployer_the_actions_are_hidden_and_off() -> None:
    bare = models_console()
    config = ConsoleConfig(
        artifacts=bare.artifacts,
        lister=StoreLister(bare.artifacts),
        bus=lambda: bare.bus,
        caller_of=lambda request: Caller(LOCAL_USER),
    )
    run, _ = _two_versions(bare)
    with serving(create_app(config)) as url, httpx.Client(base_url=url) as client:
        run_page = client.get(f"/runs/{run.run_id}").text
        models_page = client.get("/models/credit").text
        token = _csrf(client, "/models/credit")
        rollback = client.post("/models/credit/rollback", data={"csrf_token": token, "reason": "r"})
        started = client.post(f"/runs/{run.run_id}/tensorboard", data={"csrf_token": token})

    assert 'id="tensorboard-form"' not in run_page
    assert 'id="rollback-form"' not in models_page
    assert "Promote v1" not in models_page
    assert rollback.status_code == 404
    assert started.status_code == 404
    assert _state(bare).traffic == {"2": 100}


def test_an_action_while_the_deployer_cannot_be_made_is_a_503_naming_why() -> None:
    console = models_console()

    def down() -> LocalDeployer:
        raise TransientError("the local cloud is not running (start it with `cascade up`)")

    config = ConsoleConfig(
        artifacts=console.artifacts,
        lister=StoreLister(console.artifacts),
        bus=lambda: console.bus,
        caller_of=lambda request: Caller(LOCAL_USER),
        deployer=down,
    )
    _two_versions(console)
    with serving(create_app(config)) as url, httpx.Client(base_url=url) as client:
        token = _csrf(client, "/models/credit")
        answer = client.post("/models/credit/rollback", data={"csrf_token": token, "reason": "r"})

    assert answer.status_code == 503
    assert "the local cloud is not running (start it with `cascade up`)" in answer.text
    assert _state(console).traffic == {"2": 100}


def test_a_hostile_reason_is_recorded_as_given_and_shown_as_text(
    console: ModelsConsole, client: httpx.Client
) -> None:
    _two_versions(console)
    token = _csrf(client, "/models/credit")

    client.post("/models/credit/rollback", data={"csrf_token": token, "reason": HOSTILE})

    assert _state(console).history[-1].reason == HOSTILE
    html = client.get("/models/credit").text
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
