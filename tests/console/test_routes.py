"""The console's routes, served by uvicorn on loopback: pages, JSON, security, retrain."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import escape

import httpx
import pytest

from cascade.console.security import CONTENT_SECURITY_POLICY, CSRF_COOKIE
from cascade.console.vertex_links import vertex_run_links
from cascade.core.messages import TrainRequest
from cascade.core.runs import run_id_for_request
from tests.console.builders import LOCAL_USER, ConsoleUnderTest, console_under_test, step
from tests.console.server import serving


@pytest.fixture
def console() -> ConsoleUnderTest:
    return console_under_test(page_size=3)


@pytest.fixture
def client(console: ConsoleUnderTest) -> Iterator[httpx.Client]:
    with serving(console.app) as url, httpx.Client(base_url=url, follow_redirects=False) as client:
        yield client


def _form_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'name="(csrf_token|form_id)" value="([^"]+)"', html))


def test_the_runs_page_lists_runs_newest_first(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    older = console.add_run("credit", 1)
    newer = console.add_run("churn", 2, state="failed", error="bad column")

    page = client.get("/runs")

    assert page.status_code == 200
    assert page.text.index(newer.run_id) < page.text.index(older.run_id)
    assert "bad column" in page.text


def test_every_page_carries_the_security_headers(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    run = console.add_run("credit", 1)

    for path in ["/runs", f"/runs/{run.run_id}", "/api/runs", "/runs/nope", "/static/runs.js"]:
        headers = client.get(path).headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"


def test_no_page_has_an_inline_script(console: ConsoleUnderTest, client: httpx.Client) -> None:
    run = console.add_run("credit", 1, steps={"validate": step("succeeded", 0, 1.5)})

    for path in [
        "/runs",
        f"/runs/{run.run_id}",
        "/datasets/credit",
        f"/runs/{run.run_id}/artifacts",
    ]:
        html = client.get(path).text
        scripts = re.findall(r"<script[^>]*>(.*?)</script>", html, flags=re.S)
        assert all(body == "" for body in scripts), path
        assert re.findall(r"<script[^>]*>", html) == re.findall(
            r'<script src="/static/(?:vendor/[a-z]+/)?[A-Za-z.]+\.js" defer>', html
        )


def test_the_json_endpoint_pages_with_tokens(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    runs = [console.add_run("credit", number) for number in range(7)]

    seen: list[str] = []
    token = None
    while True:
        answer = client.get("/api/runs", params={"page": token} if token else {}).json()
        seen += [row["run_id"] for row in answer["runs"]]
        token = answer["next"]
        if token is None:
            break

    assert seen == [run.run_id for run in reversed(runs)]


def test_filters_narrow_the_list(console: ConsoleUnderTest, client: httpx.Client) -> None:
    console.add_run("credit", 1)
    failed = console.add_run("credit", 2, state="failed")
    console.add_run("churn", 3, state="failed")

    answer = client.get("/api/runs", params={"dataset": "credit", "state": "failed"}).json()

    assert [row["run_id"] for row in answer["runs"]] == [failed.run_id]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"dataset": "../etc"}, "dataset"),
        ({"dataset": "<script>"}, "dataset"),
        ({"state": "exploded"}, "state"),
        ({"trigger": "cron"}, "trigger"),
        ({"page": "!!!"}, "token"),
    ],
)
def test_bad_filters_are_a_400_naming_the_field(
    client: httpx.Client, query: dict[str, str], field: str
) -> None:
    page = client.get("/runs", params=query)
    api = client.get("/api/runs", params=query)

    assert page.status_code == 400
    assert field in page.text
    assert "<script>" not in page.text
    assert api.status_code == 400
    assert field in api.json()["error"]


@pytest.mark.parametrize(
    "run_id", ["..%2F..%2Fetc", "credit-0123", "CREDIT-0123456789abcdef", "credit-0123456789abcdeg"]
)
def test_a_run_id_the_system_would_not_derive_is_a_400(client: httpx.Client, run_id: str) -> None:
    for path in [f"/runs/{run_id}", f"/runs/{run_id}/report", f"/runs/{run_id}/artifacts"]:
        answer = client.get(path)
        assert answer.status_code in (400, 404), path
        assert "run" in answer.text


def test_an_unknown_run_is_a_404(client: httpx.Client) -> None:
    assert client.get("/runs/credit-0123456789abcdef").status_code == 404
    assert client.get("/runs/credit-0123456789abcdef/artifacts").status_code == 404
    assert client.get("/runs/credit-0123456789abcdef/report").status_code == 404


def test_a_run_page_shows_trigger_steps_errors_and_links(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    run = console.add_run(
        "credit",
        1,
        state="rejected",
        error="column <b>age</b> missing",
        steps={
            "validate": step("rejected", 1, 2.25, error="credit/1.csv: column 'age' is missing"),
        },
    )

    html = client.get(f"/runs/{run.run_id}").text

    assert "gs://landing/credit/1.csv" in html
    assert "rejected" in html
    assert "2.2 s" in html
    assert "column &#39;age&#39; is missing" in html
    assert "column &lt;b&gt;age&lt;/b&gt; missing" in html
    assert f'href="/runs/{run.run_id}/report"' in html
    assert f'href="/runs/{run.run_id}/artifacts"' in html


def test_in_the_cloud_a_run_page_links_to_its_vertex_ai_experiment_run() -> None:
    tensorboard = "projects/proj-1/locations/europe-west4/tensorboards/77"
    local = console_under_test()
    cloud = console_under_test(vertex_tensorboard=tensorboard)
    runs = [console.add_run("credit", 1) for console in (local, cloud)]

    with serving(local.app) as url:
        assert 'id="vertex-links"' not in httpx.get(f"{url}/runs/{runs[0].run_id}").text
    with serving(cloud.app) as url:
        html = httpx.get(f"{url}/runs/{runs[1].run_id}").text

    links = vertex_run_links(tensorboard, dataset="credit", run_id=runs[1].run_id)
    assert links is not None
    assert 'id="vertex-links"' in html
    assert f'href="{escape(links.experiment_run_url)}"' in html
    assert f'href="{escape(links.tensorboard_url)}"' in html
    assert "experiments/cascade-credit/" in links.experiment_run_url


def test_the_report_and_artifacts_of_a_run(console: ConsoleUnderTest, client: httpx.Client) -> None:
    run = console.add_run("credit", 1)
    console.artifacts.write(f"runs/{run.run_id}/validation/stats.pb", b"12345")

    report = client.get(f"/runs/{run.run_id}/report")
    artifacts = client.get(f"/runs/{run.run_id}/artifacts")

    assert report.status_code == 200
    assert run.run_id in report.text
    assert f"gs://cascade-artifacts/runs/{run.run_id}/validation/stats.pb" in artifacts.text


def test_a_foreign_host_header_is_refused(client: httpx.Client) -> None:
    assert client.get("/runs", headers={"host": "attacker.example"}).status_code == 400
    assert client.get("/runs", headers={"host": "localhost"}).status_code == 200


def test_retrain_without_its_csrf_token_is_403_and_publishes_nothing(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    fields = _form_fields(client.get("/datasets/credit").text)

    without = client.post(
        "/datasets/credit/retrain", data={"reason": "drift", "form_id": fields["form_id"]}
    )
    wrong = client.post(
        "/datasets/credit/retrain",
        data={"reason": "drift", "form_id": fields["form_id"], "csrf_token": "x" * 43},
    )

    assert (without.status_code, wrong.status_code) == (403, 403)
    assert console.bus.published == []


def test_retrain_from_another_origin_is_403(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    fields = _form_fields(client.get("/datasets/credit").text)

    answer = client.post(
        "/datasets/credit/retrain",
        data={"reason": "drift", **fields},
        headers={"origin": "http://attacker.example"},
    )

    assert answer.status_code == 403
    assert console.bus.published == []


def test_retrain_publishes_a_train_request_naming_who_and_why(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    fields = _form_fields(client.get("/datasets/credit").text)
    assert client.cookies.get(CSRF_COOKIE) == fields["csrf_token"]

    answer = client.post(
        "/datasets/credit/retrain",
        data={"reason": "  new  labels arrived ", **fields},
        headers={"origin": str(client.base_url).rstrip("/")},
    )
    again = client.post("/datasets/credit/retrain", data={"reason": "new labels arrived", **fields})

    assert answer.status_code == again.status_code == 303
    requests = console.bus.of_type(TrainRequest)
    assert len(requests) == 2
    first = requests[0]
    assert isinstance(first, TrainRequest)
    assert first.dataset == "credit"
    assert first.reason == f"retrain by {LOCAL_USER} from the console: new labels arrived"
    assert first.request_id is not None
    assert first.request_id.startswith("console-")
    assert first.run_id is None
    assert requests[1] == first  # the same form sent twice: one request id, one run
    run_id = run_id_for_request("credit", first.request_id)
    assert answer.headers["location"] == f"/datasets/credit?requested={run_id}"
    assert f'href="/runs/{run_id}"' in client.get(answer.headers["location"]).text


@pytest.mark.parametrize(
    ("data", "status"),
    [
        ({"reason": ""}, 400),
        ({"reason": "   "}, 400),
        ({"reason": "x" * 501}, 400),
        ({"reason": "ok", "form_id": "short"}, 400),
    ],
)
def test_retrain_with_a_bad_form_is_a_400(
    console: ConsoleUnderTest, client: httpx.Client, data: dict[str, str], status: int
) -> None:
    fields = _form_fields(client.get("/datasets/credit").text)

    answer = client.post("/datasets/credit/retrain", data={**fields, **data})

    assert answer.status_code == status
    assert "reason" in answer.text or "form_id" in answer.text
    assert console.bus.published == []


def test_retrain_of_a_hostile_dataset_name_is_a_400(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    fields = _form_fields(client.get("/runs").text)

    answer = client.post("/datasets/..%2Fx/retrain", data={"reason": "r", **fields})

    assert answer.status_code in (400, 404)
    assert console.bus.published == []


def test_a_retrain_form_of_another_type_or_size_is_refused(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    fields = _form_fields(client.get("/datasets/credit").text)

    as_json = client.post("/datasets/credit/retrain", json={"reason": "r", **fields})
    huge = client.post("/datasets/credit/retrain", data={"reason": "r" * 20_000, **fields})

    assert (as_json.status_code, huge.status_code) == (415, 413)
    assert console.bus.published == []


def test_a_get_never_acts(console: ConsoleUnderTest, client: httpx.Client) -> None:
    assert client.get("/datasets/credit/retrain").status_code == 405
    assert console.bus.published == []


def test_a_requested_runs_page_shows_who_asked_and_why(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    fields = _form_fields(client.get("/datasets/credit").text)
    client.post("/datasets/credit/retrain", data={"reason": "labels <fixed>", **fields})
    request = console.bus.of_type(TrainRequest)[0]
    assert isinstance(request, TrainRequest)
    assert request.request_id is not None
    run_id = run_id_for_request("credit", request.request_id)
    record = {
        "run_id": run_id,
        "dataset": "credit",
        "trigger": {"kind": "request", "request_id": request.request_id, "reason": request.reason},
        "created_at": "2026-11-27T12:00:00Z",
        "updated_at": "2026-11-27T12:00:00Z",
    }
    console.artifacts.write_json(f"runs/{run_id}/run.json", record)

    html = client.get(f"/runs/{run_id}").text

    assert (
        f'<td id="run-reason">retrain by {LOCAL_USER} from the console: labels &lt;fixed&gt;</td>'
        in html
    )
