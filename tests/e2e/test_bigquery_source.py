"""BigQuery as a source, end to end through the local cloud: a table in the local BigQuery
with two increments gives two extractions (the scheduled sweep, every few seconds here),
the second holding only the new rows; every landed Parquet shard starts a run that
validation accepts; requests published again land nothing twice.

The extract function runs as ``cascade up`` runs it (functions-framework, its topology
identity): its EXPORT DATA goes to the local BigQuery's export folder, its bridge uploads
the shards into the GCS emulator, and its copies into the landing bucket are finalized
objects the router delivers to validate, as Eventarc would.
"""

from __future__ import annotations

import contextlib
import io
import time

import google.cloud.bigquery as bigquery
import pyarrow.parquet as pq
import pytest

from cascade.core.clients import make_publisher
from cascade.core.errors import TransientError
from cascade.core.extraction import ExtractionPaths, ExtractionState, ExtractRequest
from cascade.core.warehouse import insert_rows, make_bigquery_client
from cascade.localcloud.control import running_settings
from tests.e2e.conftest import Scenario

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SCHEMA = [
    bigquery.SchemaField("seq", "INT64", mode="REQUIRED"),
    bigquery.SchemaField("amount", "FLOAT64"),
    bigquery.SchemaField("region", "STRING"),
]


def source_config(table: str) -> str:
    return (
        f"bigquery_source:\n  table: sources.{table}\n  watermark: {{column: seq, type: INT64}}\n"
    )


def insert(scenario: Scenario, first: int, count: int) -> None:
    settings = running_settings(scenario.cloud.local)
    table_id = f"{settings.project}.{settings.warehouse_dataset('sources')}.{scenario.dataset}"
    with contextlib.closing(make_bigquery_client(settings)) as client:
        table = client.create_table(bigquery.Table(table_id, SCHEMA), exists_ok=True)
        rows = [
            {"seq": seq, "amount": seq * 0.5, "region": ["north", "south", "east"][seq % 3]}
            for seq in range(first, first + count)
        ]
        insert_rows(client, table, rows)


def configure(scenario: Scenario, pipeline_yaml: str, timeout: float = 30) -> None:
    """Replace the config the fixture just wrote: Cloud Storage (and its local twin)
    allows one write per second to an object, so a 429 is retried until a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            scenario.configure(pipeline_yaml)
            return
        except TransientError:
            assert time.monotonic() < deadline, "the config could not be written"
            time.sleep(0.5)  # polling a condition with a deadline


def extraction_state(scenario: Scenario) -> ExtractionState | None:
    found = scenario.cloud.artifacts.read_model(
        ExtractionPaths(scenario.dataset).state, ExtractionState
    )
    return None if found is None else found[0]


def wait_for_state(scenario: Scenario, sequence: int, timeout: float = 120) -> ExtractionState:
    deadline = time.monotonic() + timeout
    while (state := extraction_state(scenario)) is None or state.sequence < sequence:
        assert time.monotonic() < deadline, f"no extraction {sequence}: {state}"
        time.sleep(0.5)  # polling a condition with a deadline
    return state


def landed(scenario: Scenario, extraction_id: str) -> dict[str, list[int]]:
    """Each landed shard of the extraction and the ``seq`` of its rows."""
    shards = {}
    prefix = f"{scenario.dataset}/extracts/{extraction_id}{'/' if extraction_id else ''}"
    for name in scenario.cloud.landing.list_names(prefix):
        stored = scenario.cloud.landing.read(name)
        assert stored is not None
        shards[name] = pq.read_table(io.BytesIO(stored.data)).column("seq").to_pylist()
    return shards


def accepted(scenario: Scenario, name: str) -> None:
    info = scenario.cloud.landing.stat(name)
    assert info is not None
    run = scenario.wait(
        scenario.cloud.run_id_for(name, info.generation),
        until=lambda run: "validate" in run.steps and run.steps["validate"].state != "running",
    )
    assert run.steps["validate"].state == "succeeded", run


def request_extraction(scenario: Scenario, request_id: str) -> None:
    settings = running_settings(scenario.cloud.local)
    body = ExtractRequest(dataset=scenario.dataset, request_id=request_id).model_dump_json()
    publisher = make_publisher(settings)
    publisher.publish(settings.topic_path("extract-requests"), body.encode()).result(timeout=30)
    scenario.sent += 1


def test_a_table_with_two_increments_lands_two_extractions_of_only_new_rows(
    scenario: Scenario,
) -> None:
    insert(scenario, 1, 40)
    configure(scenario, source_config(scenario.dataset))

    first = wait_for_state(scenario, 1)
    insert(scenario, 41, 15)
    second = wait_for_state(scenario, 2)

    assert (first.watermark, second.watermark) == (40, 55)
    assert first.extraction_id is not None
    assert second.extraction_id is not None
    one, two = landed(scenario, first.extraction_id), landed(scenario, second.extraction_id)
    assert sorted(seq for rows in one.values() for seq in rows) == list(range(1, 41))
    assert sorted(seq for rows in two.values() for seq in rows) == list(range(41, 56))
    for name in [*one, *two]:
        accepted(scenario, name)

    # Requests published again, racing the sweeps, then a third increment: every row of
    # the table has landed exactly once.
    request_extraction(scenario, "again-1")
    request_extraction(scenario, "again-1")
    insert(scenario, 56, 5)
    third = wait_for_state(scenario, 3)
    assert third.extraction_id is not None
    everything = landed(scenario, "")
    assert sorted(seq for rows in everything.values() for seq in rows) == list(range(1, 61))
    assert set(everything) == {*one, *two, *landed(scenario, third.extraction_id)}
