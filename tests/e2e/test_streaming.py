"""Streaming ingestion end to end: records published to the dataset's ingestion topic land
in batches as Avro files, are validated, deduplicated, trained on and served.

5,030 rows are published with ``publish_records`` (what ``cascade publish-records`` runs)
to the stream of the topology's ``credit`` dataset: 4,980 good rows, 20 rows the topic's
schema takes but that are no usable row (a field the schema does not name: validate
reads the stream's schema that provisioning deployed, and splits them out), and 30 the
topic refuses at publish (not JSON, a wrong type, a missing field).
The local cloud's gcs-subscriber writes the 5,000 published messages as five files of
``max_messages`` (1,000) each. Then one message batch is delivered twice, as the
service's at-least-once delivery does after a lost acknowledgement: a sixth file with
100 messages of the first (same message ids). The four counts are asserted exactly:
published 5,000; landed 5,100 (in 6 files); deduplicated 100; dead-lettered 50 (30 at
publish, 20 at validation).
"""

from __future__ import annotations

import io
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import pytest

from cascade.cli.publish_records import publish_records, stream_publisher
from cascade.cli.sample_data import sample_csv
from cascade.core.runs import RunRecord
from cascade.core.streams import StreamDeadLetter, stream_names
from cascade.localcloud.gcs_subscriber import Message, avro_file_bytes, object_name
from tests.conftest import LocalCloud
from tests.e2e.conftest import NO_THRESHOLDS, Scenario

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DATASET = "credit"  # the topology's stream (infra/topology.yaml, streams)
GOOD, SPLIT_OUT, REFUSED, REDELIVERED = 4980, 20, 30, 100
_INTS = ("age", "term_months", "credit_score", "num_late_payments", "defaulted")


def _good_rows(rows: int) -> list[dict[str, object]]:
    header, *lines = sample_csv(rows, seed=11).decode().splitlines()
    names = header.split(",")
    typed = []
    for line in lines:
        row: dict[str, object] = dict(zip(names, line.split(","), strict=True))
        for column in _INTS:
            row[column] = int(str(row[column]))
        for column in ("income", "loan_amount"):
            row[column] = float(str(row[column]))
        typed.append(row)
    return typed


def _records_file(path: Path) -> Path:
    rows = _good_rows(GOOD + SPLIT_OUT + REFUSED)
    lines = [json.dumps(row) for row in rows[:GOOD]]
    lines += [json.dumps({**row, "note": {"nested": True}}) for row in rows[GOOD : GOOD + 20]]
    refused = rows[GOOD + SPLIT_OUT :]
    lines += ["{not json" for _ in refused[:10]]
    lines += [json.dumps({**row, "age": "forty"}) for row in refused[10:20]]
    lines += [json.dumps({k: v for k, v in row.items() if k != "income"}) for row in refused[20:]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _landed(scenario: Scenario, count: int, timeout: float = 120) -> dict[str, int]:
    """The stream's landed objects (name -> generation), once there are ``count``."""
    bucket = scenario.cloud.storage_client.bucket(scenario.cloud.settings.landing_bucket)
    deadline = time.monotonic() + timeout
    while True:
        found = {
            blob.name: blob.generation
            for blob in bucket.list_blobs(prefix=f"{DATASET}/stream-")
            if blob.name.endswith(".avro")
        }
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} of {count} stream files landed"
        time.sleep(0.5)  # polling a condition with a deadline


def _redelivery(scenario: Scenario, name: str) -> tuple[str, bytes]:
    """A file of the first ``REDELIVERED`` messages of ``name``, as a second delivery."""
    bucket = scenario.cloud.storage_client.bucket(scenario.cloud.settings.landing_bucket)
    records = list(fastavro.reader(io.BytesIO(bucket.blob(name).download_as_bytes())))
    again = [
        Message(
            message_id=record["message_id"],
            publish_time=record["publish_time"],
            attributes=record["attributes"],
            data=record["data"],
        )
        for record in records[:REDELIVERED]
    ]
    subscription = records[0]["subscription_name"]
    names = stream_names(DATASET, scenario.cloud.settings.topic_prefix)
    return object_name(names, datetime.now(UTC), uuid.uuid4()), avro_file_bytes(subscription, again)


def test_published_records_land_in_batches_and_train_a_served_model(
    e2e_cloud: LocalCloud, tmp_path: Path
) -> None:
    scenario = Scenario(e2e_cloud, DATASET)
    scenario.configure(NO_THRESHOLDS)  # about delivery and counts: every candidate blessed
    settings = e2e_cloud.settings

    report = publish_records(
        settings,
        DATASET,
        _records_file(tmp_path / "records.ndjson"),
        stream_publisher(settings),
        e2e_cloud.artifacts,
    )
    landed = _landed(scenario, 5)
    runs = [scenario.wait(e2e_cloud.run_id_for(n, g), timeout=300) for n, g in landed.items()]
    assert all("manifest" in run.steps["validate"].outputs for run in runs), [r.error for r in runs]
    name, data = _redelivery(scenario, sorted(landed)[0])
    generation = e2e_cloud.upload(name, data, content_type="application/avro")
    last = scenario.wait(e2e_cloud.run_id_for(name, generation), timeout=300)
    runs = scenario.settle(timeout=900)

    stream_runs = [run for run in runs if run.trigger.kind == "object"]
    validated = [run.steps["validate"].outputs for run in stream_runs]
    transforms = [
        run.steps["transform"].outputs
        for run in runs
        if "transform" in run.steps and run.steps["transform"].state == "succeeded"
    ]
    complete = [t for t in transforms if t.get("files") == 6]
    assert complete, [(r.run_id, {n: s.state for n, s in r.steps.items()}) for r in runs]
    published = report.published
    landed_records = sum(int(out["records_landed"]) for out in validated)
    deduplicated = max(int(t["duplicates_removed"]) for t in complete)
    dead_lettered = report.dead_lettered + sum(int(out["records_rejected"]) for out in validated)
    print(
        f"\nstreaming counts: published {published}, landed {landed_records} in "
        f"{len(stream_runs)} files, deduplicated {deduplicated}, dead-lettered {dead_lettered}"
    )

    assert (published, landed_records, deduplicated, dead_lettered) == (5000, 5100, 100, 50)
    assert len(stream_runs) == 6
    assert sorted(int(out["records_landed"]) for out in validated) == [100] + [1000] * 5
    assert report.dead_lettered == REFUSED
    assert all("the topic refused" in letter.reason for letter in report.dead_letters)
    assert last.steps["validate"].outputs["records_rejected"] == 0
    assert _split_out_reasons(e2e_cloud, validated) == {
        "field 'note' is not in the stream's schema": SPLIT_OUT
    }
    assert all(run.state == "succeeded" for run in runs), [_why(run) for run in runs]
    assert all(t["train_rows"] + t["eval_rows"] == GOOD for t in complete)
    serving = scenario.serving()
    assert serving is not None
    assert serving.versions
    answer = scenario.predict()
    assert answer.status_code == 200, answer.text
    [prediction] = answer.json()["predictions"]
    assert sum(prediction["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def _split_out_reasons(cloud: LocalCloud, validated: list[dict[str, object]]) -> dict[str, int]:
    """The reasons of every record validate split out of the stream's files, counted."""
    reasons: dict[str, int] = {}
    for outputs in validated:
        if not outputs.get("dead_letters"):
            continue
        name = str(outputs["dead_letters"]).removeprefix(f"gs://{cloud.settings.artifacts_bucket}/")
        stored = cloud.artifacts.read(name)
        assert stored is not None, name
        for line in stored.data.splitlines():
            reason = StreamDeadLetter.model_validate_json(line).reason
            reasons[reason] = reasons.get(reason, 0) + 1
    return reasons


def _why(run: RunRecord) -> str:
    return f"{run.run_id}: {run.state} {run.error}"
