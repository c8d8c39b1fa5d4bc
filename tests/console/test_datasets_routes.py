"""The dataset pages' routes, served by uvicorn on loopback over the validate step's
in-memory storage: schema table and editor, accepted and quarantined files, release and
discard, the drift JSON, the serving plan line and the datasets index."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from cascade.console.datasets import save_schema
from cascade.core.messages import DataValidated
from cascade.core.paths import DatasetPaths
from cascade.core.runs import RunRecord
from cascade.report.serving_plan import StoredServingPlan, save_serving_plan, serving_plan_path
from cascade.serving.plan import advise
from cascade.steps.quarantine_review import read_review, release_run_id
from cascade.validation.schema_store import read_schema
from tests.console.datasets_builders import (
    DATASET,
    LOCAL_USER,
    DatasetConsole,
    csv_rows,
    dataset_console,
)
from tests.console.server import serving

HOSTILE = "<img src=x onerror=alert(1)>"
REASON = "checked with the data owner: new cities opened"


@pytest.fixture
def console() -> DatasetConsole:
    return dataset_console(page_size=2)


@pytest.fixture
def client(console: DatasetConsole) -> Iterator[httpx.Client]:
    with serving(console.app) as url, httpx.Client(base_url=url, follow_redirects=False) as client:
        yield client


@pytest.fixture
def quarantined(console: DatasetConsole) -> RunRecord:
    """Two accepted files, then one with new cities (a blocking domain finding)."""
    console.land(f"{DATASET}/day-1.csv", csv_rows(1))
    console.land(f"{DATASET}/day-2.csv", csv_rows(2, shift=2.0))
    run = console.land(f"{DATASET}/day-3.csv", csv_rows(3, shift=15.0, cities=("a", "b", "z")))
    assert run.state == "rejected"
    console.bus.published.clear()
    return run


def _csrf(client: httpx.Client, path: str = f"/datasets/{DATASET}") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def _post(client: httpx.Client, path: str, data: dict[str, str]) -> httpx.Response:
    return client.post(path, data=data, headers={"origin": str(client.base_url).rstrip("/")})


def _token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


# ------------------------------------------------------------------ the page


def test_the_dataset_page_shows_schema_files_quarantine_and_its_runs(
    client: httpx.Client, quarantined: RunRecord
) -> None:
    page = client.get(f"/datasets/{DATASET}")

    assert page.status_code == 200
    text = page.text
    assert 'id="runs"' in text  # the runs list and retrain form stay
    assert f'action="/datasets/{DATASET}/retrain"' in text
    schema = re.search(r'<table class="schema".*?</table>', text, re.S)
    assert schema is not None
    for feature in ("amount", "age", "city"):
        assert f'<td class="feature">{feature}</td>' in schema.group(0)
    assert "FLOAT" in schema.group(0)
    assert "active: checked and trained on" in schema.group(0)
    accepted = re.search(r'id="accepted-files".*?</table>', text, re.S)
    assert accepted is not None
    assert "gs://cascade-landing/credit/day-1.csv" in accepted.group(0)
    assert "gs://cascade-landing/credit/day-2.csv" in accepted.group(0)
    rows = re.search(r'id="quarantined-files".*?</table>', text, re.S)
    assert rows is not None
    assert quarantined.run_id in rows.group(0)
    assert "day-3.csv" in rows.group(0)
    assert "city" in rows.group(0)  # the blocking finding
    assert f'/quarantine/{quarantined.run_id}/release"' in rows.group(0)
    assert f'/quarantine/{quarantined.run_id}/discard"' in rows.group(0)
    assert "cascade serving-plan credit --save" in text
    assert "<script>" not in text.replace('<script src="', "")


def test_a_dataset_without_data_says_so(client: httpx.Client) -> None:
    page = client.get("/datasets/empty")

    assert page.status_code == 200
    assert 'id="schema-none"' in page.text
    assert 'id="accepted-none"' in page.text
    assert 'id="quarantined-none"' in page.text


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/datasets/Credit", "dataset"),
        ("/datasets/a..b", "dataset"),
        ("/api/datasets/Credit/drift", "dataset"),
        (f"/datasets/{DATASET}?files=%25%25", "files"),
        (f"/datasets/{DATASET}?files={_token('runs/x/run.json')}", "files"),
        (f"/datasets/{DATASET}?quarantined={_token('quarantine/other/r/x')}", "quarantined"),
        (f"/api/datasets/{DATASET}/drift?files={_token('datasets/other/accepted/x')}", "files"),
        (f"/api/datasets/{DATASET}/drift?feature=nope", "feature"),
        (f"/api/datasets/{DATASET}/drift?feature={'x' * 300}", "feature"),
        ("/datasets?page=bm90LWEtZGF0YXNldA", "page"),
    ],
)
def test_bad_names_and_tokens_are_a_400_naming_the_field(
    client: httpx.Client, quarantined: RunRecord, path: str, field: str
) -> None:
    answer = client.get(path)

    assert answer.status_code == 400, answer.text
    message = answer.json()["error"] if path.startswith("/api/") else html.unescape(answer.text)
    assert f"{field}:" in message or "dataset" in message


# ------------------------------------------------------------------ release and discard


def test_a_release_without_its_csrf_token_is_403_and_reviews_nothing(
    console: DatasetConsole, client: httpx.Client, quarantined: RunRecord
) -> None:
    _csrf(client)
    path = f"/datasets/{DATASET}/quarantine/{quarantined.run_id}/release"

    missing = _post(client, path, {"reason": REASON})
    wrong = _post(client, path, {"reason": REASON, "csrf_token": "x" * 43})

    assert (missing.status_code, wrong.status_code) == (403, 403)
    assert read_review(console.ctx, DATASET, quarantined.run_id) is None
    assert console.bus.published == []


def test_a_release_records_who_and_why_and_the_file_goes_on(
    console: DatasetConsole, client: httpx.Client, quarantined: RunRecord
) -> None:
    token = _csrf(client)

    answer = _post(
        client,
        f"/datasets/{DATASET}/quarantine/{quarantined.run_id}/release",
        {"reason": REASON, "csrf_token": token},
    )

    assert answer.status_code == 303, answer.text
    assert f"reviewed={quarantined.run_id}" in answer.headers["location"]
    review = read_review(console.ctx, DATASET, quarantined.run_id)
    assert review is not None
    assert (review.action, review.actor, review.reason, review.via) == (
        "release",
        LOCAL_USER,
        REASON,
        "console",
    )
    new_run = release_run_id(DATASET, quarantined.run_id)
    [validated] = console.bus.of_type(DataValidated)
    assert validated.run_id == new_run
    run = console.ctx.ledger.get(quarantined.run_id)
    assert run is not None
    assert run.steps["review"].outputs["review"]["actor"] == LOCAL_USER
    page = client.get(answer.headers["location"])
    assert f"released by {LOCAL_USER} as run {new_run}: {REASON}" in html.unescape(page.text)

    again = _post(
        client,
        f"/datasets/{DATASET}/quarantine/{quarantined.run_id}/discard",
        {"reason": REASON, "csrf_token": token},
    )
    assert again.status_code == 409
    assert "already released" in html.unescape(again.text)


def test_a_discard_deletes_the_quarantine_copy_and_ends_the_file(
    console: DatasetConsole, client: httpx.Client, quarantined: RunRecord
) -> None:
    token = _csrf(client)
    copy = f"{DatasetPaths(DATASET).quarantine(quarantined.run_id)}/day-3.csv"
    assert console.ctx.artifacts.stat(copy) is not None

    answer = _post(
        client,
        f"/datasets/{DATASET}/quarantine/{quarantined.run_id}/discard",
        {"reason": f"a broken export {HOSTILE}", "csrf_token": token},
    )

    assert answer.status_code == 303, answer.text
    page = client.get(answer.headers["location"])
    assert f"discarded by {LOCAL_USER}: a broken export &lt;img src=x" in page.text
    assert HOSTILE not in page.text
    review = read_review(console.ctx, DATASET, quarantined.run_id)
    assert review is not None
    assert (review.action, review.actor, review.via) == ("discard", LOCAL_USER, "console")
    assert console.ctx.artifacts.stat(copy) is None
    assert console.bus.of_type(DataValidated) == []


@pytest.mark.parametrize(
    ("dataset", "status"),
    [("other", 404), (DATASET, 400)],
)
def test_a_review_names_a_run_of_its_dataset_and_a_reason(
    console: DatasetConsole,
    client: httpx.Client,
    quarantined: RunRecord,
    dataset: str,
    status: int,
) -> None:
    token = _csrf(client)
    reason = REASON if dataset == "other" else " "

    answer = _post(
        client,
        f"/datasets/{dataset}/quarantine/{quarantined.run_id}/release",
        {"reason": reason, "csrf_token": token},
    )

    assert answer.status_code == status, answer.text
    assert read_review(console.ctx, DATASET, quarantined.run_id) is None


@pytest.mark.parametrize("run_id", ["..%2F..%2Fetc", "credit-zz", "Credit-0123456789abcdef"])
def test_a_review_of_a_run_id_the_system_would_not_derive_is_a_400(
    client: httpx.Client, quarantined: RunRecord, run_id: str
) -> None:
    token = _csrf(client)

    answer = _post(
        client,
        f"/datasets/{DATASET}/quarantine/{run_id}/release",
        {"reason": REASON, "csrf_token": token},
    )

    assert answer.status_code in (400, 404), answer.text


def test_an_accepted_run_cannot_be_released(
    console: DatasetConsole, client: httpx.Client, quarantined: RunRecord
) -> None:
    accepted = console.land(f"{DATASET}/day-4.csv", csv_rows(4))
    token = _csrf(client)

    answer = _post(
        client,
        f"/datasets/{DATASET}/quarantine/{accepted.run_id}/release",
        {"reason": REASON, "csrf_token": token},
    )

    assert answer.status_code == 409
    assert "not quarantined" in html.unescape(answer.text)


# ------------------------------------------------------------------ the schema editor


def _schema_form(client: httpx.Client, text: str, generation: int, reason: str) -> httpx.Response:
    return _post(
        client,
        f"/datasets/{DATASET}/schema",
        {
            "schema": text,
            "generation": str(generation),
            "reason": reason,
            "csrf_token": _csrf(client),
        },
    )


def test_a_broken_schema_is_refused_with_the_parse_error_and_nothing_saved(
    console: DatasetConsole, client: httpx.Client, quarantined: RunRecord
) -> None:
    before = read_schema(console.ctx.artifacts, DATASET)
    assert before is not None
    broken = before.text.replace("type: FLOAT", "type: FLAOT", 1)

    answer = _schema_form(client, broken, before.generation, "fix the amount type")

    assert answer.status_code == 400
    shown = html.unescape(answer.text)
    assert 'id="schema-error"' in answer.text
    assert "FLAOT" in shown
    assert re.search(r"\d+:\d+ :", shown), shown  # the parser's line:column
    assert broken in shown  # the edit is kept in the editor
    after = read_schema(console.ctx.artifacts, DATASET)
    assert after is not None
    assert after.generation == before.generation


def test_a_schema_listing_a_feature_twice_is_refused(
    console: DatasetConsole, client: httpx.Client, quarantined: RunRecord
) -> None:
    before = read_schema(console.ctx.artifacts, DATASET)
    assert before is not None

    answer = _schema_form(
        client, before.text + 'feature { name: "age" type: INT }\n', before.generation, "twice"
    )

    assert answer.status_code == 400
    assert "features listed twice: age" in html.unescape(answer.text)


def test_a_good_schema_is_saved_with_who_and_why(
    console: DatasetConsole, client: httpx.Client, quarantined: RunRecord
) -> None:
    before = read_schema(console.ctx.artifacts, DATASET)
    assert before is not None
    edited = before.text.replace("min_fraction: 0.95", "min_fraction: 0.5", 1)
    assert edited != before.text

    answer = _schema_form(client, edited, before.generation, "ages may be missing")

    assert answer.status_code == 303, answer.text
    after = read_schema(console.ctx.artifacts, DATASET)
    assert after is not None
    assert after.generation != before.generation
    assert after.text.startswith(edited)
    assert f"# Edited by {LOCAL_USER} at " in after.text
    assert f"(from generation {before.generation}): ages may be missing" in after.text
    page = client.get(answer.headers["location"])
    assert "Schema saved." in page.text


def test_a_save_over_a_schema_changed_meanwhile_is_a_409_and_keeps_the_change(
    console: DatasetConsole, client: httpx.Client, quarantined: RunRecord
) -> None:
    shown = read_schema(console.ctx.artifacts, DATASET)
    assert shown is not None
    token = _csrf(client)
    meanwhile = save_schema(
        console.ctx.artifacts,
        DATASET,
        shown.text,
        generation=shown.generation,
        actor="bob@desk",
        reason="someone else's edit",
        now=console.clock(),
    )

    answer = _post(
        client,
        f"/datasets/{DATASET}/schema",
        {
            "schema": shown.text.replace("min_fraction: 0.95", "min_fraction: 0.1", 1),
            "generation": str(shown.generation),
            "reason": "my edit",
            "csrf_token": token,
        },
    )

    assert answer.status_code == 409
    assert "changed since generation" in html.unescape(answer.text)
    now = read_schema(console.ctx.artifacts, DATASET)
    assert now is not None
    assert now.generation == meanwhile
    assert "someone else's edit" in now.text
    assert "my edit" not in now.text


def test_a_stored_schema_that_does_not_parse_is_shown_and_can_be_fixed(
    console: DatasetConsole, client: httpx.Client, quarantined: RunRecord
) -> None:
    good = read_schema(console.ctx.artifacts, DATASET)
    assert good is not None
    broken = good.text.replace("type: INT", "type: <b>INT</b>", 1)
    generation = console.ctx.artifacts.write(DatasetPaths(DATASET).schema, broken.encode())

    page = client.get(f"/datasets/{DATASET}")

    assert page.status_code == 200
    assert 'id="schema-problem"' in page.text
    assert "invalid schema text" in page.text
    assert "type: &lt;b&gt;INT&lt;/b&gt;" in page.text  # the raw text, in the editor
    assert f'name="generation" value="{generation}"' in page.text
    answer = _schema_form(client, good.text, generation or 0, "put the type back")
    assert answer.status_code == 303, answer.text
    fixed = read_schema(console.ctx.artifacts, DATASET)
    assert fixed is not None
    assert fixed.text.startswith(good.text)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"schema": "", "generation": "x1", "reason": "why not"}, "generation"),
        ({"generation": "1", "reason": "why not"}, "schema"),
        ({"schema": "# x", "generation": "1", "reason": ""}, "reason"),
        ({"schema": "# no feature", "generation": "1", "reason": "why not"}, "no feature"),
    ],
)
def test_a_bad_schema_form_is_a_400_naming_the_field(
    console: DatasetConsole,
    client: httpx.Client,
    quarantined: RunRecord,
    fields: dict[str, str],
    field: str,
) -> None:
    answer = _post(client, f"/datasets/{DATASET}/schema", {**fields, "csrf_token": _csrf(client)})

    assert answer.status_code == 400
    assert field in html.unescape(answer.text)


def test_a_schema_save_without_csrf_is_403(
    console: DatasetConsole, client: httpx.Client, quarantined: RunRecord
) -> None:
    before = read_schema(console.ctx.artifacts, DATASET)
    assert before is not None
    _csrf(client)

    answer = _post(
        client,
        f"/datasets/{DATASET}/schema",
        {"schema": "", "generation": str(before.generation), "reason": "empty it"},
    )

    assert answer.status_code == 403
    after = read_schema(console.ctx.artifacts, DATASET)
    assert after is not None
    assert after.generation == before.generation


def test_a_schema_larger_than_a_plain_form_is_saved(
    console: DatasetConsole, client: httpx.Client, quarantined: RunRecord
) -> None:
    before = read_schema(console.ctx.artifacts, DATASET)
    assert before is not None
    padded = before.text + "".join(f"# note {n}: {'x' * 60}\n" for n in range(400))
    assert len(padded) > 16 * 1024

    answer = _schema_form(client, padded, before.generation, "long comments")

    assert answer.status_code == 303, answer.text


# ------------------------------------------------------------------ hostile data


def test_hostile_feature_names_and_findings_are_shown_as_text(
    console: DatasetConsole, client: httpx.Client
) -> None:
    console.land(f"{DATASET}/day-1.csv", csv_rows(1))
    console.land(f"{DATASET}/day-2.csv", csv_rows(2, cities=("a", "b", HOSTILE)))
    stored = read_schema(console.ctx.artifacts, DATASET)
    assert stored is not None
    hostile_feature = "feature { name: \"<script>alert('f')</script>\" type: BYTES }\n"
    save_schema(
        console.ctx.artifacts,
        DATASET,
        stored.text + hostile_feature,
        generation=stored.generation,
        actor=LOCAL_USER,
        reason="<b>why</b>",
        now=console.clock(),
    )

    page = client.get(f"/datasets/{DATASET}")

    assert page.status_code == 200
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(&#39;f&#39;)&lt;/script&gt;" in page.text
    assert "<img src=x" not in page.text
    assert "&lt;img src=x" in page.text  # the finding names the unexpected value


# ------------------------------------------------------------------ drift


def test_the_drift_endpoint_gives_each_accepted_files_measurement_in_order(
    console: DatasetConsole, client: httpx.Client
) -> None:
    console.land(f"{DATASET}/day-1.csv", csv_rows(1))
    second = console.land(f"{DATASET}/day-2.csv", csv_rows(2, shift=1.0))
    third = console.land(f"{DATASET}/day-3.csv", csv_rows(3, shift=4.0))

    series = client.get(f"/api/datasets/{DATASET}/drift?feature=amount").json()

    assert series["features"] == ["age", "amount", "city"]
    assert series["feature"] == "amount"
    assert series["measure"] == "Kolmogorov-Smirnov statistic"
    assert [point["run_id"] for point in series["points"]] == [second.run_id, third.run_id]
    assert [point["t"] for point in series["points"]] == sorted(
        point["t"] for point in series["points"]
    )
    first, last = series["points"]
    assert 0 < first["value"] < last["value"]  # the later file moved further
    assert all(point["threshold"] > 0 for point in series["points"])
    assert series["files"] == 3


# ------------------------------------------------------------------ pagination


def test_accepted_files_are_paginated_by_tokens_without_gaps(
    console: DatasetConsole, client: httpx.Client
) -> None:
    names = [f"{DATASET}/day-{n}.csv" for n in range(1, 6)]
    for n, name in enumerate(names, start=1):
        console.land(name, csv_rows(n, shift=n / 10))
    seen: list[str] = []
    path: str | None = f"/datasets/{DATASET}"
    pages = 0
    while path is not None:
        page = client.get(path)
        assert page.status_code == 200
        table = re.search(r'id="accepted-files".*?</table>', page.text, re.S)
        assert table is not None
        seen += re.findall(r"gs://cascade-landing/(credit/day-\d\.csv)", table.group(0))
        following = re.search(r'href="([^"]+)#files" id="files-next"', page.text)
        path = html.unescape(following.group(1)) if following else None
        pages += 1

    assert pages == 3
    assert sorted(seen) == names


def test_the_datasets_index_lists_each_dataset_once_in_pages(
    console: DatasetConsole, client: httpx.Client
) -> None:
    store = console.ctx.artifacts
    for name in ("churn", "credit", "credit-eu", "fraud", "fraud0"):
        store.write(DatasetPaths(name).pipeline_config, b"validation: {}\n")
        store.write(f"{DatasetPaths(name).accepted_prefix}a.json", b"{}")
    store.write("datasets/Not A Dataset/x", b"")
    seen: list[str] = []
    path: str | None = "/datasets"
    while path is not None:
        page = client.get(path)
        assert page.status_code == 200
        seen += re.findall(r'<li><a href="/datasets/([^"]+)">', page.text)
        following = re.search(r'href="([^"]+)" id="next-page"', page.text)
        path = html.unescape(following.group(1)) if following else None

    assert sorted(seen) == ["churn", "credit", "credit-eu", "fraud", "fraud0"]
    assert len(seen) == len(set(seen))


def test_the_dataset_page_loads_only_the_packages_static_scripts(
    client: httpx.Client, quarantined: RunRecord
) -> None:
    page = client.get(f"/datasets/{DATASET}")

    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, flags=re.S)
    assert [attributes for attributes, body in scripts if body] == []
    assert [attributes.strip() for attributes, _ in scripts] == [
        'src="/static/runs.js" defer',
        'src="/static/vendor/uplot/uPlot.iife.min.js" defer',
        'src="/static/datasets.js" defer',
    ]
    for path in ("/static/vendor/uplot/uPlot.iife.min.js", "/static/datasets.js"):
        served = client.get(path)
        assert served.status_code == 200
        assert "javascript" in served.headers["content-type"]
    assert "(v1.6.32)" in client.get("/static/vendor/uplot/uPlot.iife.min.js").text[:100]


# ------------------------------------------------------------------ serving plan


def test_a_stored_serving_plan_is_shown_as_the_advisors_table(
    console: DatasetConsole, client: httpx.Client
) -> None:
    counts = {f"user-{index}": 100 if index < 1_000 else 1 for index in range(20_000)}
    plan = advise(counts, window_s=3600.0)
    now = console.clock()
    save_serving_plan(
        console.ctx.artifacts,
        StoredServingPlan(
            dataset=DATASET,
            endpoint="projects/1/locations/us-central1/endpoints/42",
            table="p.d.request_response_logging",
            key_field=HOSTILE,
            start=now - timedelta(days=7),
            end=now,
            computed_at=now,
            plan=plan,
        ),
    )

    page = client.get(f"/datasets/{DATASET}")

    table = re.search(r'id="serving-plan">.*?</table>', page.text, re.S)
    assert table is not None
    rows = re.findall(r"<tr[^>]*><td>([a-z]+)", table.group(0))
    assert sorted(rows) == sorted(cost.mode for cost in plan.costs)
    assert f"<td>{plan.mode} (recommended)</td>" in table.group(0)
    assert f"Recommended: <strong>{plan.mode}</strong>" in page.text
    assert 'id="serving-missing"' not in page.text


def test_an_unreadable_serving_plan_is_a_line_not_a_5xx(
    console: DatasetConsole, client: httpx.Client
) -> None:
    console.ctx.artifacts.write(serving_plan_path(DATASET), b'{"dataset": "credit"}')

    page = client.get(f"/datasets/{DATASET}")

    assert page.status_code == 200
    assert "the stored serving plan is not a plan this version reads" in html.unescape(page.text)
