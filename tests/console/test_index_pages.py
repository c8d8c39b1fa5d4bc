"""The console's pages over the index's state entries and the dead-letter index: a state
filter reads the runs of that state only; dead letters page newest first across pages."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest

from cascade.console import Caller, ConsoleConfig, create_app
from cascade.core.dead_letter_index import DEAD_LETTER_INDEX_PREFIX, index_dead_letter
from cascade.core.fakes import MemoryArtifactStore, RecordingBus
from cascade.core.paths import RunPaths, dead_letter_record
from cascade.core.run_index import StoreLister, record_run_created, record_run_state
from cascade.core.runs import RunRecord, Trigger, run_id_for_object
from cascade.core.store import StoredObject
from cascade.steps.dead_letter import DeadLetter
from tests.console.builders import T0
from tests.console.server import serving

PAGE_SIZE = 3


class ReadCountingStore(MemoryArtifactStore):
    """The in-memory bucket, counting the reads of run records."""

    def __init__(self) -> None:
        super().__init__("cascade-artifacts")
        self.record_reads = 0

    def read(
        self, name: str, *, generation: int | None = None, metadata: bool = False
    ) -> StoredObject | None:
        if name.endswith("/run.json"):
            self.record_reads += 1
        return super().read(name, generation=generation, metadata=metadata)


@dataclass
class Console:
    artifacts: ReadCountingStore
    client: httpx.Client

    def start(self, dataset: str, number: int) -> RunRecord:
        """A run as the first step leaves it: run.json and its ``running`` entries."""
        name = f"{dataset}/{number}.csv"
        created = T0 + timedelta(seconds=number)
        record = RunRecord(
            run_id=run_id_for_object(dataset, "landing", name, number + 1),
            dataset=dataset,
            trigger=Trigger(kind="object", uri=f"gs://landing/{name}", generation=number + 1),
            created_at=created,
            updated_at=created,
        )
        self.artifacts.create(RunPaths(record.run_id).record, record.model_dump_json().encode())
        record_run_created(self.artifacts, record)
        return record

    def end(self, record: RunRecord, state: str, error: str | None = None) -> RunRecord:
        """What the step that ends the run does: run.json's end, then its entries."""
        ended = record.model_copy(update={"state": state, "error": error})
        self.artifacts.write(RunPaths(record.run_id).record, ended.model_dump_json().encode())
        record_run_state(self.artifacts, ended)
        return ended

    def letter(self, message_id: str, minute: int, *, indexed: bool = True) -> None:
        letter = DeadLetter(
            message_id=message_id,
            source_subscription="projects/p/subscriptions/eventarc-validate",
            delivery_attempts=5,
            last_error="validate: timeout",
            message_type="object_finalize",
            dataset="credit",
            run_id=None,
            attributes={},
            data="{}",
            recorded_at=T0 + timedelta(minutes=minute),
        )
        self.artifacts.create(dead_letter_record(message_id), letter.model_dump_json().encode())
        if indexed:
            index_dead_letter(self.artifacts, message_id, letter.recorded_at)


@pytest.fixture
def console() -> Iterator[Console]:
    artifacts = ReadCountingStore()
    config = ConsoleConfig(
        artifacts=artifacts,
        lister=StoreLister(artifacts),
        bus=RecordingBus,
        caller_of=lambda request: Caller("ada@laptop"),
        page_size=PAGE_SIZE,
        poll_ms=500,
    )
    with serving(create_app(config)) as url, httpx.Client(base_url=url) as client:
        yield Console(artifacts, client)


def _run_ids(console: Console, path: str) -> list[str]:
    """Every run the JSON list pages through for ``path``'s filters."""
    runs: list[str] = []
    params: dict[str, str] = dict(httpx.URL(path).params)
    while True:
        answer = console.client.get("/api/runs", params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        runs += [row["run_id"] for row in body["runs"]]
        if body["next"] is None:
            return runs
        params["page"] = body["next"]


def test_a_state_filter_reads_only_that_state_s_runs(console: Console) -> None:
    runs = [console.start("credit", number) for number in range(60)]
    failed = [console.end(run, "failed", "train: boom") for run in runs[::15]]
    for run in runs:
        if run not in runs[::15]:
            console.end(run, "succeeded")
    console.artifacts.record_reads = 0

    page = console.client.get("/runs", params={"state": "failed"})

    assert page.status_code == 200
    shown = re.findall(r'data-run-id="([^"]+)"', page.text)
    assert shown == [run.run_id for run in reversed(failed)][:PAGE_SIZE]
    assert "train: boom" in page.text
    assert console.artifacts.record_reads == PAGE_SIZE  # the rows shown, nothing more
    assert _run_ids(console, "/?state=failed") == [run.run_id for run in reversed(failed)]


def test_dataset_and_state_together_list_that_dataset_s_runs_in_that_state(
    console: Console,
) -> None:
    credit = console.end(console.start("credit", 1), "rejected")
    console.end(console.start("churn", 2), "rejected")
    console.end(console.start("credit", 3), "succeeded")
    busy = console.start("credit", 4)

    assert _run_ids(console, "/?dataset=credit&state=rejected") == [credit.run_id]
    assert _run_ids(console, "/?dataset=credit&state=running") == [busy.run_id]
    page = console.client.get("/runs", params={"dataset": "credit", "state": "rejected"})
    assert page.status_code == 200
    assert re.findall(r'data-run-id="([^"]+)"', page.text) == [credit.run_id]


def test_a_run_that_ended_leaves_the_running_filter(console: Console) -> None:
    run = console.start("credit", 1)
    assert _run_ids(console, "/?state=running") == [run.run_id]

    console.end(run, "succeeded")

    assert _run_ids(console, "/?state=running") == []
    assert _run_ids(console, "/?state=succeeded") == [run.run_id]


@pytest.mark.parametrize("state", ["unknown", "../failed", "FAILED", "failed/../running"])
def test_a_hostile_state_is_a_400(console: Console, state: str) -> None:
    page = console.client.get("/runs", params={"state": state})

    assert page.status_code == 400
    assert "state" in page.text


def test_a_token_of_one_state_is_refused_by_another(console: Console) -> None:
    for number in range(5):
        console.end(console.start("credit", number), "failed")
    token = console.client.get("/api/runs", params={"state": "failed"}).json()["next"]
    assert token is not None

    answer = console.client.get("/api/runs", params={"state": "rejected", "page": token})

    assert answer.status_code == 400
    assert "token" in answer.json()["error"]


def test_alerts_show_failed_runs_however_many_runs_came_after(console: Console) -> None:
    failed = console.end(console.start("credit", 0), "failed", "deploy: endpoint refused")
    for number in range(1, 80):  # more than the page examined of the newest runs
        console.end(console.start("credit", number), "succeeded")

    html = console.client.get("/alerts").text

    assert f'data-run-id="{failed.run_id}"' in html
    assert "deploy: endpoint refused" in html


def _letters(html: str) -> list[str]:
    return re.findall(r'data-message-id="([^"]+)"', html)


def _older(html: str) -> str | None:
    found = re.search(r'href="/alerts\?page=([A-Za-z0-9_-]+)"', html)
    return None if found is None else found.group(1)


def test_indexed_dead_letters_page_newest_first_across_pages(console: Console) -> None:
    for number, minute in enumerate([3, 0, 6, 1, 5, 2, 4]):  # recorded out of name order
        console.letter(f"50{number}", minute)

    pages = []
    token: str | None = None
    while True:
        html = console.client.get("/alerts", params={"page": token} if token else {}).text
        pages.append(_letters(html))
        token = _older(html)
        if token is None:
            break

    assert pages == [["502", "504", "506"], ["500", "505", "503"], ["501"]]


def test_an_indexed_letter_deleted_since_is_named_and_a_foreign_entry_skipped(
    console: Console,
) -> None:
    console.letter("601", 1)
    console.letter("602", 2)
    console.artifacts.delete(dead_letter_record("601"))
    console.artifacts.create(f"{DEAD_LETTER_INDEX_PREFIX}0000000000000000-../../runs/x", b"{}")

    page = console.client.get("/alerts")

    assert page.status_code == 200
    assert _letters(page.text) == ["602"]
    assert "deleted since it was listed" in page.text


@pytest.mark.parametrize(
    "name",
    [
        "index/runs/all/0000000000000000-x",
        "index/dead-letters-x/1",
        "runs/credit-0123456789abcdef/run.json",
    ],
)
def test_a_token_outside_the_dead_letter_listings_is_a_400(console: Console, name: str) -> None:
    token = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")

    page = console.client.get("/alerts", params={"page": token})

    assert page.status_code == 400
