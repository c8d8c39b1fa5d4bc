"""The Experiments page (``/datasets/<d>/compare``) over an in-memory bucket holding runs
as the steps and the trainer leave them, served by uvicorn on loopback: the tables side
by side with differing cells marked, the union of slices and hyperparameters, the
tuning trials, the files only one run trained on, the curves JSON; refused run lists
(too few, too many, foreign, hostile); data rendered as text; and, in headless Chromium,
the overlaid curves. Synchronised with Playwright's ``expect``, never with sleeps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from cascade.console.experiments import MAX_RUNS, MAX_TRIALS_PROBED
from cascade.core.paths import RunPaths
from cascade.core.runs import RunRecord
from cascade.evaluation.record import evaluation_path
from cascade.jobs.records import training_folder
from tests.console.builders import ConsoleUnderTest, console_under_test
from tests.console.conftest import screenshot
from tests.console.experiments_builders import (
    DATASET,
    add_trained_run,
    first_model,
    second_model,
)
from tests.console.server import serving

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert('y')>"


# ------------------------------------------------------------------ reading the page


class _Tables(HTMLParser):
    """Each table's rows by id: ``{table: {label: [(cell class, cell text), ...]}}``
    (rows of ``data-label``), and every table cell's text (``texts``)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, list[tuple[str, str]]]] = {}
        self._table: str | None = None
        self._label: str | None = None
        self._cell: list[str] | None = None
        self._cell_class = ""
        self.texts: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "script":
            self.scripts += 1
        elif tag == "table":
            self._table = found.get("id", "")
            self.tables.setdefault(self._table, {})
        elif tag == "tr" and self._table is not None and "data-label" in found:
            self._label = found["data-label"]
            self.tables[self._table].setdefault(self._label, [])
        elif tag == "td":
            self._cell, self._cell_class = [], found.get("class", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            text = "".join(self._cell).strip()
            self.texts.append(text)
            if self._table is not None and self._label is not None:
                self.tables[self._table][self._label].append((self._cell_class, text))
            self._cell = None
        elif tag == "tr":
            self._label = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _tables(html: str) -> _Tables:
    parser = _Tables()
    parser.feed(html)
    return parser


def _texts(row: list[tuple[str, str]]) -> list[str]:
    return [text for _, text in row]


def _differs(row: list[tuple[str, str]]) -> list[bool]:
    return ["differs" in css.split() for css, _ in row]


def _compare_url(*run_ids: str, dataset: str = DATASET) -> str:
    return f"/datasets/{dataset}/compare?" + "&".join(f"run={run_id}" for run_id in run_ids)


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def console() -> ConsoleUnderTest:
    return console_under_test()


@pytest.fixture
def two(console: ConsoleUnderTest) -> tuple[RunRecord, RunRecord]:
    return add_trained_run(console, first_model()), add_trained_run(console, second_model())


@pytest.fixture
def base_url(console: ConsoleUnderTest) -> Iterator[str]:
    with serving(console.app) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, follow_redirects=False) as opened:
        yield opened


# ------------------------------------------------------------------ the tables


def test_hyperparameters_side_by_side_mark_the_cells_that_differ_from_run_a(
    client: httpx.Client, two: tuple[RunRecord, RunRecord]
) -> None:
    first, second = two
    answer = client.get(_compare_url(first.run_id, second.run_id))
    assert answer.status_code == 200
    tables = _tables(answer.text).tables
    hyper = tables["compare-hyperparameters"]
    assert _texts(hyper["learning_rate"]) == ["0.01", "0.003"]
    assert _differs(hyper["learning_rate"]) == [False, True]
    assert _texts(hyper["dropout"]) == ["0.1", "0.1"]
    assert _differs(hyper["dropout"]) == [False, False]
    assert f'href="/runs/{first.run_id}"' in answer.text
    assert f'href="/runs/{second.run_id}"' in answer.text
    training = tables["compare-training"]
    assert _texts(training["model family"]) == ["network", "network"]
    assert _texts(training["epochs trained"]) == ["3", "5"]
    assert _differs(training["epochs trained"]) == [False, True]


def test_columns_are_the_runs_oldest_first_whatever_the_order_asked(
    client: httpx.Client, two: tuple[RunRecord, RunRecord]
) -> None:
    first, second = two
    html = client.get(_compare_url(second.run_id, first.run_id)).text
    hyper = _tables(html).tables["compare-hyperparameters"]
    assert _texts(hyper["learning_rate"]) == ["0.01", "0.003"]
    assert html.index(f'data-run-id="{first.run_id}"') < html.index(
        f'data-run-id="{second.run_id}"'
    )
    curves = client.get(
        f"/datasets/{DATASET}/compare/curves.json?run={second.run_id}&run={first.run_id}"
    ).json()
    assert curves["charts"][0]["series"][0] == [0.69, 0.52, 0.45, None, None]


def test_a_hyperparameter_only_one_run_has_is_a_row_with_an_empty_cell(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    first = add_trained_run(console, first_model())
    changed = second_model().hyperparameters | {"l2": 0.001}
    second = add_trained_run(console, second_model(hyperparameters=changed))
    hyper = _tables(client.get(_compare_url(first.run_id, second.run_id)).text).tables[
        "compare-hyperparameters"
    ]
    assert _texts(hyper["l2"]) == ["", "0.001"]
    assert _differs(hyper["l2"]) == [False, True]
    assert sorted(hyper) == ["dropout", "hidden_units", "l2", "learning_rate"]


def test_metrics_rows_are_the_union_of_the_runs_slices_overall_first(
    client: httpx.Client, two: tuple[RunRecord, RunRecord]
) -> None:
    first, second = two
    html = client.get(_compare_url(first.run_id, second.run_id)).text
    rows = _scoped_metric_rows(html)
    assert list(rows) == [
        ("overall", "loss"),
        ("overall", "auc"),
        ("city=a", "loss"),
        ("city=a", "auc"),
        ("city=b", "loss"),
        ("city=b", "auc"),
        ("city=z", "loss"),
        ("city=z", "auc"),
    ]
    assert rows[("overall", "auc")] == [("", "0.81"), ("differs", "0.84")]
    assert rows[("city=b", "auc")] == [("", "0.79"), ("differs absent", "")]
    assert rows[("city=z", "loss")] == [("absent", ""), ("differs", "0.52")]


def _scoped_metric_rows(html: str) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """The metrics table's rows keyed by (scope, metric), in page order."""

    class Rows(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.inside = False
            self.rows: dict[tuple[str, str], list[tuple[str, str]]] = {}
            self.key: tuple[str, str] | None = None
            self.in_scope = False
            self.scope = ""
            self.label = ""
            self.cell: list[str] | None = None
            self.css = ""

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found = {name: value or "" for name, value in attrs}
            if tag == "table":
                self.inside = found.get("id") == "compare-metrics"
            elif self.inside and tag == "tr" and "data-label" in found:
                self.label, self.scope = found["data-label"], ""
            elif self.inside and tag == "span" and found.get("class") == "scope":
                self.in_scope = True
            elif self.inside and tag == "td":
                self.cell, self.css = [], found.get("class", "").strip()

        def handle_endtag(self, tag: str) -> None:
            if tag == "span":
                self.in_scope = False
            elif tag == "td" and self.cell is not None:
                key = (self.scope, self.label)
                self.rows.setdefault(key, []).append((self.css, "".join(self.cell).strip()))
                self.cell = None
            elif tag == "table":
                self.inside = False

        def handle_data(self, data: str) -> None:
            if self.in_scope:
                self.scope += data
            elif self.cell is not None:
                self.cell.append(data)

    parser = Rows()
    parser.feed(html)
    return parser.rows


def test_the_snapshot_lists_files_and_rows_and_the_files_one_run_added(
    client: httpx.Client, two: tuple[RunRecord, RunRecord]
) -> None:
    first, second = two
    html = client.get(_compare_url(first.run_id, second.run_id)).text
    snapshot = _tables(html).tables["compare-snapshot"]
    assert _texts(snapshot["files"]) == ["2", "3"]
    assert _texts(snapshot["rows"]) == ["200", "300"]
    assert _differs(snapshot["rows"]) == [False, True]
    assert _texts(snapshot["transform of run"]) == [first.run_id, second.run_id]
    only = _only_files(html)
    assert only == [[], ["gs://landing/credit/day-3.csv#3"]]


def _only_files(html: str) -> list[list[str]]:
    start = html.index('id="compare-files"')
    table = html[start : html.index("</table>", start)]
    cells = table.split("<td>")[1:]
    return [[item.split("</li>")[0] for item in cell.split("<li>")[1:]] for cell in cells]


def test_tuning_trials_count_those_with_metrics_and_name_the_best(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    plain = add_trained_run(console, first_model())
    tuned = add_trained_run(console, second_model(tuning_trials=4))
    html = client.get(_compare_url(plain.run_id, tuned.run_id)).text
    trials = _tables(html).tables["compare-trials"]
    assert _texts(trials["trials"]) == ["", "3 of 4 wrote metrics"]
    assert _texts(trials["best trial"]) == ["", "2"]
    assert _texts(trials["best value"]) == ["", "0.41"]
    assert _texts(trials["metric"]) == ["", "minimize eval_loss"]
    # the tuned run's hyperparameters are its best trial's metrics.json
    hyper = _tables(html).tables["compare-hyperparameters"]
    assert _texts(hyper["learning_rate"]) == ["0.01", "0.003"]


def test_trials_probed_are_capped(console: ConsoleUnderTest, client: httpx.Client) -> None:
    plain = add_trained_run(console, first_model())
    tuned = add_trained_run(console, second_model(tuning_trials=MAX_TRIALS_PROBED + 5))
    html = client.get(_compare_url(plain.run_id, tuned.run_id)).text
    trials = _tables(html).tables["compare-trials"]
    expected = f"{MAX_TRIALS_PROBED - 1} of {MAX_TRIALS_PROBED + 5} wrote metrics"
    assert _texts(trials["trials"])[1] == f"{expected} (of the first {MAX_TRIALS_PROBED} looked at)"


def test_a_run_without_training_artifacts_says_what_is_missing(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    trained = add_trained_run(console, first_model())
    bare = console.add_run(DATASET, 9, state="rejected", error="validate: rejected")
    answer = client.get(_compare_url(trained.run_id, bare.run_id))
    assert answer.status_code == 200
    tables = _tables(answer.text)
    assert _texts(tables.tables["compare-hyperparameters"]["learning_rate"]) == ["0.01", ""]
    assert any("metrics.json does not exist" in text for text in tables.texts)
    assert _texts(tables.tables["compare-overview"]["state"]) == ["succeeded", "rejected"]


# ------------------------------------------------------------------ the curves


def test_curves_json_has_one_chart_per_metric_and_one_series_per_run(
    client: httpx.Client, two: tuple[RunRecord, RunRecord]
) -> None:
    first, second = two
    answer = client.get(
        f"/datasets/{DATASET}/compare/curves.json?run={first.run_id}&run={second.run_id}"
    )
    assert answer.status_code == 200
    curves = answer.json()
    assert curves["epochs"] == [1, 2, 3, 4, 5]
    assert [run["letter"] for run in curves["runs"]] == ["A", "B"]
    assert [chart["metric"] for chart in curves["charts"]] == ["loss", "val_loss", "auc", "val_auc"]
    loss = curves["charts"][0]
    assert loss["label"] == "train loss"
    assert loss["series"] == [[0.69, 0.52, 0.45, None, None], [0.70, 0.55, 0.47, 0.43, 0.41]]
    assert curves["charts"][1]["label"] == "eval loss"


def test_curves_of_a_tuned_run_are_its_best_trials_history(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    plain = add_trained_run(console, first_model())
    tuned = add_trained_run(console, second_model(tuning_trials=3))
    curves = client.get(
        f"/datasets/{DATASET}/compare/curves.json?run={plain.run_id}&run={tuned.run_id}"
    ).json()
    assert curves["charts"][0]["series"][1] == [0.70, 0.55, 0.47, 0.43, 0.41]
    assert [run["has_history"] for run in curves["runs"]] == [True, True]


def test_curves_of_a_run_without_history_are_empty_series(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    trained = add_trained_run(console, first_model())
    bare = console.add_run(DATASET, 9)
    curves = client.get(
        f"/datasets/{DATASET}/compare/curves.json?run={trained.run_id}&run={bare.run_id}"
    ).json()
    assert [run["has_history"] for run in curves["runs"]] == [True, False]
    assert curves["charts"][0]["series"][1] == [None, None, None]


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize("count", [0, 1, MAX_RUNS + 1])
def test_fewer_than_two_or_more_than_six_runs_are_refused(
    console: ConsoleUnderTest, client: httpx.Client, count: int
) -> None:
    runs = [console.add_run(DATASET, number) for number in range(1, count + 1)]
    for path in ("compare", "compare/curves.json"):
        answer = client.get(
            f"/datasets/{DATASET}/{path}?" + "&".join(f"run={run.run_id}" for run in runs)
        )
        assert answer.status_code == 400
        assert f"run: choose 2 to 6 runs, got {count}" in answer.text


def test_six_runs_are_shown(console: ConsoleUnderTest, client: httpx.Client) -> None:
    runs = [add_trained_run(console, first_model(number=n)) for n in range(1, MAX_RUNS + 1)]
    answer = client.get(_compare_url(*(run.run_id for run in runs)))
    assert answer.status_code == 200
    assert (
        _texts(_tables(answer.text).tables["compare-hyperparameters"]["dropout"])
        == ["0.1"] * MAX_RUNS
    )


def test_a_run_of_another_dataset_is_refused(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    ours = add_trained_run(console, first_model())
    theirs = add_trained_run(console, first_model(number=2, dataset="loans"))
    answer = client.get(_compare_url(ours.run_id, theirs.run_id))
    assert answer.status_code == 400
    assert "run: " in answer.text
    assert "is not a run of dataset credit" in answer.text
    assert "0.01" not in answer.text


def test_a_record_naming_another_dataset_is_refused(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    """A run id of this dataset's form whose record says otherwise is not shown."""
    ours = add_trained_run(console, first_model())
    other = add_trained_run(console, first_model(number=2))
    record = other.model_copy(update={"dataset": "loans"})
    console.artifacts.write(RunPaths(other.run_id).record, record.model_dump_json().encode())
    answer = client.get(_compare_url(ours.run_id, other.run_id))
    assert answer.status_code == 400
    assert f"run: {other.run_id} is not a run of dataset credit" in answer.text


def test_an_unknown_run_is_not_found(console: ConsoleUnderTest, client: httpx.Client) -> None:
    ours = add_trained_run(console, first_model())
    answer = client.get(_compare_url(ours.run_id, f"{DATASET}-00000000000000ff"))
    assert answer.status_code == 404
    assert f"run: no run {DATASET}-00000000000000ff" in answer.text


@pytest.mark.parametrize(
    "hostile",
    [
        HOSTILE,
        "../../datasets/credit/schema.pbtxt",
        "credit-0123456789abcdef/../../x",
        "credit-0123456789ABCDEF",
        "credit-0123456789abcdef\n",
        "x" * 5000,
        "",
    ],
)
def test_hostile_run_ids_are_refused_and_echoed_as_text(
    console: ConsoleUnderTest, client: httpx.Client, hostile: str
) -> None:
    ours = add_trained_run(console, first_model())
    answer = client.get(
        f"/datasets/{DATASET}/compare", params=[("run", ours.run_id), ("run", hostile)]
    )
    assert answer.status_code == 400
    assert "run: " in answer.text
    assert "<script>alert" not in answer.text
    assert "<img src=x" not in answer.text


def test_the_same_run_twice_is_refused(console: ConsoleUnderTest, client: httpx.Client) -> None:
    ours = add_trained_run(console, first_model())
    answer = client.get(_compare_url(ours.run_id, ours.run_id))
    assert answer.status_code == 400
    assert "run: each run may be chosen once" in answer.text


def test_a_hostile_dataset_name_is_refused(client: httpx.Client) -> None:
    answer = client.get("/datasets/Cr%3Cscript%3E/compare?run=a&run=b")
    assert answer.status_code == 400
    assert "<script>" not in answer.text


def test_hostile_names_in_the_artifacts_are_rendered_as_text(
    console: ConsoleUnderTest, client: httpx.Client
) -> None:
    first = add_trained_run(console, first_model(hyperparameters={HOSTILE: HOSTILE}))
    second = add_trained_run(
        console,
        second_model(
            slices={f"city={HOSTILE}": {"auc": 0.5}},
            history={f"val_{HOSTILE}": [0.1, 0.2]},
        ),
    )
    answer = client.get(_compare_url(first.run_id, second.run_id))
    assert answer.status_code == 200
    assert HOSTILE not in answer.text
    assert "&lt;script&gt;alert(" in answer.text
    parsed = _tables(answer.text)
    assert parsed.scripts == 2  # uPlot and compare.js: nothing from data
    assert _texts(parsed.tables["compare-hyperparameters"][HOSTILE]) == [HOSTILE, ""]
    curves = client.get(
        f"/datasets/{DATASET}/compare/curves.json?run={first.run_id}&run={second.run_id}"
    ).json()
    assert f"eval {HOSTILE}" in [chart["label"] for chart in curves["charts"]]


def test_no_object_of_another_run_or_dataset_is_read(
    console: ConsoleUnderTest, client: httpx.Client, two: tuple[RunRecord, RunRecord]
) -> None:
    """Reads are bounded to the two runs' folders (and no listing outside them)."""
    first, second = two
    add_trained_run(console, first_model(number=3))
    read: list[str] = []
    listed: list[str] = []
    original_read, original_list = console.artifacts.read, console.artifacts.list_objects

    def spy_read(name: str, *args: Any, **kwargs: Any) -> Any:
        read.append(name)
        return original_read(name, *args, **kwargs)

    def spy_list(prefix: str, *args: Any, **kwargs: Any) -> Any:
        listed.append(prefix)
        return original_list(prefix, *args, **kwargs)

    console.artifacts.read = spy_read  # type: ignore[method-assign]
    console.artifacts.list_objects = spy_list  # type: ignore[method-assign]
    assert client.get(_compare_url(first.run_id, second.run_id)).status_code == 200
    folders = (RunPaths(first.run_id).root + "/", RunPaths(second.run_id).root + "/")
    assert read
    assert all(name.startswith(folders) for name in read)
    assert all(prefix.startswith(folders) for prefix in listed)
    assert evaluation_path(first.run_id) in read
    assert not any(name.startswith(training_folder(first.run_id) + "/1/") for name in read)


def test_server_time_for_two_and_six_runs(console: ConsoleUnderTest, client: httpx.Client) -> None:
    """Not a benchmark: the page stays well under a second on the in-memory bucket."""
    runs = [
        add_trained_run(console, second_model(number=n, tuning_trials=8))
        for n in range(1, MAX_RUNS + 1)
    ]
    for count in (2, MAX_RUNS):
        url = _compare_url(*(run.run_id for run in runs[:count]))
        started = time.perf_counter()
        assert client.get(url).status_code == 200
        elapsed = time.perf_counter() - started
        print(f"compare of {count} runs: {elapsed * 1000:.0f} ms")
        assert elapsed < 5


# ------------------------------------------------------------------ the dataset page


def test_the_dataset_page_offers_its_runs_to_compare(
    client: httpx.Client, two: tuple[RunRecord, RunRecord]
) -> None:
    html = client.get(f"/datasets/{DATASET}").text
    assert f'action="/datasets/{DATASET}/compare"' in html
    for run in two:
        assert f'name="run" value="{run.run_id}"' in html


# ------------------------------------------------------------------ in the browser


def test_the_compare_page_overlays_the_curves_and_marks_the_changed_hyperparameter(
    base_url: str, two: tuple[RunRecord, RunRecord], page: Page
) -> None:
    first, second = two
    page.goto(f"{base_url}/datasets/{DATASET}")
    page.locator(f'#compare-picker input[value="{first.run_id}"]').check()
    page.locator(f'#compare-picker input[value="{second.run_id}"]').check()
    page.locator("#compare-picker button").click()
    # the runs list is newest first; the page orders its columns oldest first
    expect(page).to_have_url(f"{base_url}{_compare_url(second.run_id, first.run_id)}")
    expect(page.locator("#compare-runs tr[data-run-id]").first).to_have_attribute(
        "data-run-id", first.run_id
    )

    charts = page.locator("#compare-curves figure.compare-chart")
    expect(charts).to_have_count(4)
    loss = page.locator('#compare-curves figure[data-metric="loss"]')
    expect(loss).to_have_attribute("data-series", "2")
    expect(loss.locator("figcaption")).to_have_text("train loss")
    # uPlot's legend: the x series and one series per run, labelled by letter
    expect(loss.locator(".u-legend .u-series")).to_have_count(3)
    expect(loss.locator(".u-legend .u-series").nth(1)).to_contain_text("A")
    expect(loss.locator(".u-legend .u-series").nth(2)).to_contain_text("B")
    expect(loss.locator("canvas")).to_have_count(1)

    rate = page.locator('#compare-hyperparameters tr[data-label="learning_rate"] td')
    expect(rate.nth(0)).not_to_have_class("differs")
    expect(rate.nth(1)).to_have_class("differs")
    expect(rate.nth(1)).to_have_text("0.003")
    expect(
        page.locator('#compare-hyperparameters tr[data-label="dropout"] td.differs')
    ).to_have_count(0)
    expect(page.locator("#curves-error")).to_be_hidden()
    screenshot(page, "compare")
