"""Hostile inputs through the local cloud, each with the outcome the design promises.

Seven tables of attacks, as data: data files, object names, forged CloudEvents posted
straight to a function, forged Pub/Sub messages, and the three HTTP surfaces
(``train-http``, ``evaluate-http``, the model server). Each case says what must come of
it: a JSON 4xx naming the problem (never a 5xx), or, for what arrives asynchronously, a
run record / alert / dead letter that names the file and the row, column or field. The
``attack`` fixture (conftest.py) then checks what must hold after every attack: nothing
written outside the state folder, no reference run changed, no failed delivery (so no
retry loop), no dead letter the design does not call for. The session ends with the
table input → outcome.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc

from cascade.cli.sample_data import COLUMNS, sample_csv
from cascade.core.clients import make_publisher
from cascade.core.messages import ModelBlessed, ModelTrained, TrainRequest
from cascade.core.runs import run_id_for_object
from cascade.core.topology import PUBSUB_PUBLISHED, STORAGE_FINALIZED
from cascade.localcloud.id_tokens import bearer_header
from cascade.validation.names import INVALID_NAMES_DATASET, normalised_alias
from tests.attack.arena import Arena, poll
from tests.attack.conftest import Attack
from tests.attack.payloads import (
    INJECTION,
    SCRIPT,
    csv_bytes,
    gzip_bomb,
    long_single_line,
    sample_rows,
    with_cell,
)

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}
MIB = 1024 * 1024


def _deep(prefix: bytes, depth: int = 10_000) -> bytes:
    return prefix + b"[" * depth + b"]" * depth + b"}"


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


# ---------------------------------------------------------------------------- files


@dataclass(frozen=True)
class FileCase:
    id: str
    file: str
    shows: str
    content: Callable[[], bytes]
    state: str
    words: tuple[str, ...]
    big: bool = False
    """Upload to the dataset with the default limits (not the 1 MiB gzip limit)."""


def _rows_with(index: int, row: list[str]) -> bytes:
    rows = sample_rows()
    rows[index - 1] = row
    return csv_bytes(rows)


FILE_CASES = [
    FileCase("empty-file", "empty.csv", "0 bytes", lambda: b"", "failed", ("is empty",)),
    FileCase(
        "header-only",
        "header.csv",
        "the header line, no rows",
        lambda: csv_bytes([]),
        "failed",
        ("line 2", "header but no data rows"),
    ),
    FileCase(
        "binary-garbage",
        "garbage.csv",
        "16 KiB of bytes 0x00..0xff",
        lambda: bytes(range(256)) * 64,
        "failed",
        ("line 1", "binary file", "NUL byte"),
    ),
    FileCase(
        "utf16-bom",
        "utf16.csv",
        "sample rows saved as UTF-16 (BOM)",
        lambda: sample_csv(5).decode().encode("utf-16"),
        "failed",
        ("line 1, column #1", "UTF-16"),
    ),
    FileCase(
        "utf8-bom",
        "bom.csv",
        "sample rows behind a UTF-8 BOM",
        lambda: b"\xef\xbb\xbf" + sample_csv(5),
        "failed",
        ("line 1, column #1", "byte-order mark"),
    ),
    FileCase(
        "too-many-columns",
        "wide.csv",
        "row 3 has a 13th value",
        lambda: _rows_with(3, [*sample_rows()[2], "extra"]),
        "failed",
        ("row 3 (line 4)", "ragged row", "column #13"),
    ),
    FileCase(
        "too-few-columns",
        "narrow.csv",
        "row 3 stops after 9 values",
        lambda: _rows_with(3, sample_rows()[2][:9]),
        "failed",
        ("row 3 (line 4)", "ragged row", "column 'region' (#10)"),
    ),
    FileCase(
        "unterminated-quote",
        "quote.csv",
        'row 6: c1,"unterminated,1',
        lambda: sample_csv(5) + b'c1,"unterminated,1\n',
        "failed",
        ("row 6 (line 7)", "ragged row"),
    ),
    FileCase(
        "wrong-types",
        "types.csv",
        "age='old' in row 2 (schema: INT)",
        lambda: with_cell(2, {"age": "old"}),
        "rejected",
        ("1 blocking anomaly", "feature 'age'", "Expected data of type: INT"),
    ),
    FileCase(
        "nan-inf-strings",
        "naninf.csv",
        "income='nan', loan_amount='inf' in row 3",
        lambda: with_cell(3, {"income": "nan", "loan_amount": "inf"}),
        "rejected",
        ("feature 'income'", "NaN values", "feature 'loan_amount'", "Inf values"),
    ),
    FileCase(
        "csv-injection",
        "inject.csv",
        f"region={INJECTION!r}, purpose={SCRIPT!r}",
        lambda: with_cell(4, {"region": INJECTION, "purpose": SCRIPT}),
        "rejected",
        ("feature 'region'", "feature 'purpose'", "missing from the schema"),
    ),
    FileCase(
        "missing-column",
        "nokey.csv",
        "no customer_id column",
        lambda: csv_bytes([r[1:] for r in sample_rows()], header=list(COLUMNS[1:])),
        "rejected",
        ("feature 'customer_id'", "Column dropped"),
    ),
    FileCase(
        "duplicate-header",
        "dup.csv",
        "customer_id twice in the header",
        lambda: csv_bytes(sample_rows(), header=[*COLUMNS[:-1], "customer_id"]),
        "failed",
        ("line 1, column 'customer_id' (#12)", "duplicate column name"),
    ),
    FileCase(
        "empty-header-name",
        "noname.csv",
        "the first header name is empty",
        lambda: csv_bytes(sample_rows(), header=["", *COLUMNS[1:]]),
        "failed",
        ("line 1, column '' (#1)", "empty column name"),
    ),
    FileCase(
        "non-utf8-bytes",
        "latin1.csv",
        "employment='s\\xe4l' (Latin-1) in row 2",
        lambda: with_cell(2, {"employment": "sal"}).replace(b"sal,", b"s\xe4l,", 1),
        "failed",
        ("row 2 (line 3), column 'employment' (#7)", "not valid UTF-8"),
    ),
    FileCase(
        "wrong-delimiter",
        "semi.csv",
        "sample rows delimited by ';'",
        lambda: sample_csv(5).replace(b",", b";"),
        "failed",
        ("line 1", "wrong delimiter", "';'"),
    ),
    FileCase(
        "gzip-named-csv",
        "zipped.csv",
        "gzip bytes under a .csv name",
        lambda: gzip.compress(sample_csv(5)),
        "failed",
        ("line 1", "gzip-compressed"),
    ),
    FileCase(
        "gzip-bomb",
        "bomb.csv.gz",
        "~100 KB of gzip inflating to 32 MiB",
        gzip_bomb,
        "failed",
        ("more than 1048576 bytes once decompressed", "validation.max_uncompressed_bytes"),
    ),
    FileCase(
        "50mb-single-line",
        "long.csv",
        "row 3 is one 50 MiB line",
        long_single_line,
        "failed",
        ("row 3", "validation.read_block_bytes"),
        big=True,
    ),
    FileCase(
        "not-parquet",
        "fake.parquet",
        "text under a .parquet name",
        lambda: b"this is not parquet",
        "failed",
        ("not a valid Parquet file",),
    ),
    FileCase(
        "bad-json-line",
        "bad.jsonl",
        "third NDJSON line cut short",
        lambda: b'{"age": 1}\n{"age": 2}\n{"age": \n',
        "failed",
        ("line 3", "not valid JSON"),
    ),
    FileCase(
        "unknown-extension",
        "book.xlsx",
        "a spreadsheet (.xlsx)",
        lambda: b"PK\x03\x04" + bytes(64),
        "failed",
        ("unsupported file extension",),
    ),
]


@pytest.mark.parametrize("case", FILE_CASES, ids=[case.id for case in FILE_CASES])
def test_a_hostile_file_fails_its_run_naming_the_file_and_place(
    arena: Arena, attack: Attack, case: FileCase
) -> None:
    attack.category, attack.shows, attack.new_runs = "file", case.shows, 1
    attack.counts = {"validate.delivered": 1}
    name = f"{arena.big_dataset if case.big else arena.dataset}/{case.file}"

    generation = arena.cloud.upload(name, case.content())

    run = arena.run(arena.cloud.run_id_for(name, generation))
    attack.outcome = f"run {run.state}: {run.error}"
    uri = f"gs://{arena.cloud.settings.landing_bucket}/{name}"
    assert run.state == case.state, run
    assert (run.error or "").startswith("validate: "), run
    _assert_words(run.error, uri, *case.words)
    assert set(run.steps) == {"validate"}  # nothing downstream ran
    assert run.steps["validate"].attempts == 1
    alert = arena.alerts.find(uri, case.words[0])
    assert alert["run_id"] == run.run_id
    assert alert["severity"] == "ERROR"
    if case.id == "csv-injection":  # data, never markup: the page shows it escaped
        page = arena.cloud.artifacts.read(f"runs/{run.run_id}/validation/report.html")
        assert page is not None
        assert SCRIPT.encode() not in page.data
        assert b"&lt;script&gt;" in page.data


# ---------------------------------------------------------------------------- object names


@dataclass(frozen=True)
class NameCase:
    id: str
    shows: str
    name: Callable[[str, str], str]
    """(dataset, marker) -> the object name."""
    words: tuple[str, ...] = ()
    """In the error of the failed ``invalid-uploads`` run."""
    storage_status: int | None = None
    """The storage API refuses the upload with this status instead (no event, no run)."""


NAME_CASES = [
    NameCase(
        "dotdot-traversal",
        "<ds>/../../../../../../<marker>/x.csv",
        lambda ds, marker: f"{ds}/" + "../" * 6 + f"{marker}/x.csv",
        ("(segment 2)", "'..' path segment"),
    ),
    NameCase(
        "deep-traversal",
        "<ds>/ + '../' x 40 + <marker>/x.csv",
        lambda ds, marker: f"{ds}/" + "../" * 40 + f"{marker}/x.csv",
        ("(segment 2)", "'..' path segment"),
    ),
    NameCase(
        "absolute-path",
        "/etc/passwd",
        lambda ds, marker: "/etc/passwd",
        ("(segment 1)", "empty, '.' or '..' path segment"),
    ),
    NameCase(
        "alias-of-a-good-name",
        "<ds>/../<ds>/a.csv",
        lambda ds, marker: f"{ds}/../{ds}/{marker}.csv",
        ("(segment 2)", "'..' path segment"),
    ),
    NameCase(
        "double-slash",
        "<ds>//a.csv",
        lambda ds, marker: f"{ds}//{marker}.csv",
        ("(segment 2)", "empty"),
    ),
    NameCase(
        "newline-in-name",
        "<ds>/a\\nb.csv",
        lambda ds, marker: f"{ds}/{marker}\nforged-log-line.csv",
        ("segment 2", "characters other than"),
    ),
    NameCase(
        "rtl-override",
        "<ds>/invoice\\u202ecsv.exe",
        lambda ds, marker: f"{ds}/{marker}-invoice\u202ecsv.exe",
        ("segment 2", "characters other than"),
    ),
    NameCase(
        "nul-in-name",
        "<ds>/a\\x00b.csv",
        lambda ds, marker: f"{ds}/{marker}\x00.csv",
        storage_status=500,
    ),
    NameCase(
        "backslash-traversal",
        "<ds>\\..\\..\\x.csv",
        lambda ds, marker: f"{ds}\\..\\..\\{marker}.csv",
        ("segment 1", "characters other than"),
    ),
    NameCase(
        "percent-encoded-dots",
        "<ds>/%2e%2e/%2e%2e/x.csv",
        lambda ds, marker: f"{ds}/%2e%2e/%2e%2e/{marker}.csv",
        ("segment 2 ('%2e%2e')", "characters other than"),
    ),
    NameCase(
        "leading-dash",
        "<ds>/-rf.csv",
        lambda ds, marker: f"{ds}/-rf-{marker}.csv",
        ("segment 2", "starts with one of those symbols"),
    ),
    NameCase(
        "name-over-1024-bytes",
        "<ds>/ + 5 folders of 200 'a' + 30 more bytes",
        lambda ds, marker: f"{ds}/" + "/".join(["a" * 200] * 5) + f"/{marker}-pad.csv",
        ("longer than 1024 bytes",),
    ),
    NameCase(
        "segment-over-255-bytes",
        "<ds>/ + one 1100-byte segment",
        lambda ds, marker: f"{ds}/{marker}" + "a" * 1100 + ".csv",
        storage_status=400,
    ),
    NameCase(
        "root-level-object",
        "stray.csv (no dataset folder)",
        lambda ds, marker: f"{marker}.csv",
        ("at the bucket's root",),
    ),
    NameCase(
        "invalid-dataset-name",
        "Credit/a.csv",
        lambda ds, marker: f"Credit/{marker}.csv",
        ("'Credit' is not a dataset name",),
    ),
    NameCase(
        "reserved-dataset",
        "invalid-uploads/a.csv",
        lambda ds, marker: f"{INVALID_NAMES_DATASET}/{marker}.csv",
        ("is reserved for the runs of refused names",),
    ),
]


def _upload_once(arena: Arena, name: str, data: bytes) -> int:
    """Upload without the client's retries (a refusal answers at once)."""
    bucket = arena.cloud.storage_client.bucket(arena.cloud.settings.landing_bucket)
    blob = bucket.blob(name)
    blob.upload_from_string(data, content_type="text/csv", retry=None)
    return int(blob.generation or 0)


@pytest.mark.parametrize("case", NAME_CASES, ids=[case.id for case in NAME_CASES])
def test_a_hostile_object_name_is_refused_and_recorded(
    arena: Arena, attack: Attack, case: NameCase
) -> None:
    marker = f"escaped-{uuid.uuid4().hex[:10]}"
    attack.category, attack.shows, attack.markers = "object name", case.shows, [marker]
    name = case.name(arena.dataset, marker)

    if case.storage_status is not None:
        with pytest.raises(gexc.GoogleAPICallError) as refused:
            _upload_once(arena, name, b"a,b\n1,2\n")
        attack.outcome = f"storage API refuses the upload: HTTP {refused.value.code}; no run"
        assert refused.value.code == case.storage_status
        assert arena.cloud.landing.stat(name) is None
        return

    attack.counts, attack.new_runs = {"validate.delivered": 1}, 1
    generation = _upload_once(arena, name, b"a,b\n1,2\n")

    landing = arena.cloud.settings.landing_bucket
    run = arena.run(run_id_for_object(INVALID_NAMES_DATASET, landing, name, generation))
    attack.outcome = f"run {run.state} ({run.dataset}): {run.error}"
    assert run.dataset == INVALID_NAMES_DATASET
    assert run.state == "failed"
    _assert_words(run.error, f"gs://{landing}/{name}", *case.words)
    assert run.steps["validate"].attempts == 1
    # never read: no statistics, no report, no accepted manifest
    assert list(arena.cloud.artifacts.list_names(f"runs/{run.run_id}/validation/")) == []
    alias = normalised_alias(name)  # where a path-cleaning store keeps it: no run there
    stored = None if alias is None else arena.cloud.landing.stat(alias)
    if alias is not None and stored is not None:
        assert arena.cloud.ledger.get(arena.cloud.run_id_for(alias, stored.generation)) is None


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True)
class EventCase:
    id: str
    function: str
    shows: str
    request: Callable[[Arena, str], tuple[dict[str, str], bytes]]
    """(arena, event id) -> headers and body of the POST."""
    status: int = 200
    alert: tuple[str, ...] = ()
    """Words of the alert that says the event was rejected."""
    run_error: tuple[str, ...] = ()
    """Words of the failed run the event records (of the object it names)."""
    log: str = ""
    """A line of the function's log that must mention the event id."""
    method: str = "POST"


def _storage_event(
    event_id: str,
    data: dict[str, Any] | bytes,
    *,
    event_type: str = STORAGE_FINALIZED,
    time: str = "",
    content_type: str = "application/json",
) -> tuple[dict[str, str], bytes]:
    headers = {
        "Content-Type": content_type,
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": event_type,
        "ce-source": "//storage.googleapis.com/projects/_/buckets/forged",
        "ce-subject": "objects/forged",
        "ce-time": time or _now(),
    }
    return headers, data if isinstance(data, bytes) else _json(data)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _seed_object(arena: Arena) -> dict[str, Any]:
    return {
        "bucket": arena.cloud.settings.landing_bucket,
        "name": arena.seed_name,
        "generation": str(arena.seed_generation),
    }


def _artifacts_object(arena: Arena) -> dict[str, Any]:
    name = f"datasets/{arena.dataset}/pipeline.yaml"
    info = arena.cloud.artifacts.stat(name)
    assert info is not None
    bucket = arena.cloud.settings.artifacts_bucket
    return {"bucket": bucket, "name": name, "generation": str(info.generation)}


def _pubsub_event(event_id: str, message: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    headers = {
        "Content-Type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": PUBSUB_PUBLISHED,
        "ce-source": "//pubsub.googleapis.com/projects/cascade-local/topics/forged",
        "ce-time": _now(),
    }
    return headers, _json({"message": message, "subscription": "forged"})


EVENT_CASES = [
    EventCase(
        "wrong-event-type",
        "validate",
        "ce-type: ...object.v1.deleted",
        lambda a, i: _storage_event(
            i, _seed_object(a), event_type="google.cloud.storage.object.v1.deleted"
        ),
        alert=("event type 'google.cloud.storage.object.v1.deleted'", STORAGE_FINALIZED),
    ),
    EventCase(
        "missing-bucket",
        "validate",
        "finalize event whose data has no bucket",
        lambda a, i: _storage_event(i, {"name": f"{a.dataset}/x.csv", "generation": "1"}),
        alert=("missing field 'bucket'",),
    ),
    EventCase(
        "artifacts-bucket",
        "validate",
        "finalize of datasets/<ds>/pipeline.yaml in artifacts",
        lambda a, i: _storage_event(i, _artifacts_object(a)),
        alert=("reads only the landing bucket", "no run is recorded"),
    ),
    EventCase(
        "object-that-does-not-exist",
        "validate",
        "finalize of <ds>/ghost.csv#1 (never uploaded)",
        lambda a, i: _storage_event(
            i,
            {
                "bucket": a.cloud.settings.landing_bucket,
                "name": f"{a.dataset}/ghost-{i}.csv",
                "generation": "1",
            },
        ),
        run_error=("the object no longer exists",),
    ),
    EventCase(
        "huge-event-body",
        "validate",
        "8 MiB finalize event (padding, no name)",
        lambda a, i: _storage_event(
            i, {"bucket": a.cloud.settings.landing_bucket, "padding": "x" * (8 * MIB)}
        ),
        alert=("missing field 'name'",),
    ),
    EventCase(
        "text-plain-event",
        "validate",
        "text/plain finalize event: 'landing/<ds>/x.csv'",
        lambda a, i: _storage_event(
            i, f"landing/{a.dataset}/x.csv".encode(), content_type="text/plain"
        ),
        alert=("data is not a JSON object",),
    ),
    EventCase(
        "non-json-event-data",
        "validate",
        "finalize event whose body is '{not json'",
        lambda a, i: _storage_event(i, b"{not json"),
        alert=("data is not a JSON object",),
    ),
    EventCase(
        "not-a-cloudevent",
        "validate",
        "plain JSON POST, no ce-* headers",
        lambda a, i: (JSON, _json(_seed_object(a))),
        status=400,
    ),
    EventCase(
        "stale-replay",
        "validate",
        "the seed file's event, ce-time 2020",
        lambda a, i: _storage_event(i, _seed_object(a), time="2020-01-01T00:00:00Z"),
        log="dropping event",
    ),
    EventCase(
        "fresh-replay",
        "validate",
        "the seed file's event again, new id",
        lambda a, i: _storage_event(i, _seed_object(a)),
    ),
    EventCase(
        "get-a-function",
        "validate",
        "GET on the validate function",
        lambda a, i: ({}, b""),
        status=405,
        method="GET",
    ),
    EventCase(
        "pubsub-data-not-base64",
        "transform",
        "messagePublished whose data is '%%%'",
        lambda a, i: _pubsub_event(i, {"data": "%%%", "messageId": i}),
        alert=("message.data is not base64",),
    ),
    EventCase(
        "pubsub-no-message",
        "train",
        "messagePublished without a message",
        lambda a, i: (_pubsub_event(i, {})[0], _json({"subscription": "forged"})),
        alert=("data has no 'message' object",),
    ),
]


@pytest.mark.parametrize("case", EVENT_CASES, ids=[case.id for case in EVENT_CASES])
def test_a_forged_cloudevent_is_acknowledged_and_alerted_never_retried(
    arena: Arena, attack: Attack, case: EventCase
) -> None:
    attack.category, attack.shows = f"event→{case.function}", case.shows
    event_id = f"forged-{uuid.uuid4().hex[:12]}"
    headers, body = case.request(arena, event_id)
    headers = {**headers, **arena.cloud.event_source_auth(case.function)}  # as Eventarc sends

    response = requests.request(
        case.method, arena.urls[case.function], headers=headers, data=body, timeout=120
    )

    attack.outcome = f"HTTP {response.status_code}"
    assert response.status_code == case.status, response.text[:500]
    if case.alert:
        alert = arena.alerts.find(f"event {event_id} rejected", *case.alert)
        attack.outcome += f"; alert: {alert['summary']}"
        assert alert["severity"] == "ERROR"
    if case.run_error:
        attack.new_runs = 1
        data = json.loads(body)
        run = arena.run(
            run_id_for_object(arena.dataset, data["bucket"], data["name"], int(data["generation"]))
        )
        attack.outcome += f"; run {run.state}: {run.error}"
        assert run.state == "failed"
        _assert_words(run.error, f"gs://{data['bucket']}/{data['name']}", *case.run_error)
    if case.log:
        log = arena.cloud.local.state_dir / "logs" / f"function-{case.function}.log"

        def logged() -> str | None:
            lines = log.read_text(errors="replace").splitlines()
            found = [line for line in lines if case.log in line and event_id in line]
            return found[-1] if found else None

        line = poll(logged, f"{case.log!r} in {log.name}")
        attack.outcome += f"; logged: {case.log}"
        assert case.log in line
    if response.status_code >= 400:
        attack.outcome += f": {' '.join(response.text.split())[:100]}"


# ---------------------------------------------------------------------------- Pub/Sub


@dataclass(frozen=True)
class MessageCase:
    id: str
    topic: str
    function: str
    shows: str
    data: Callable[[Arena], bytes]
    alert: Callable[[Arena], tuple[str, ...]]
    attributes: dict[str, str] = field(default_factory=dict)


MESSAGE_CASES = [
    MessageCase(
        "data-validated-not-json",
        "data-validated",
        "transform",
        "data-validated: '{this is not json'",
        lambda a: b"{this is not json",
        lambda a: ("invalid DataValidated", "Invalid JSON"),
    ),
    MessageCase(
        "train-request-wrong-schema",
        "train-requests",
        "train",
        "train-requests: dataset '../../etc', tune 'sometimes'",
        lambda a: _json({"dataset": "../../etc", "tune": "sometimes"}),
        lambda a: ("invalid TrainRequest", "invalid dataset name '../../etc'"),
    ),
    MessageCase(
        "train-request-names-a-run",
        "train-requests",
        "train",
        "train-requests: request_id run:<the seed's run>",
        lambda a: (
            TrainRequest(
                dataset=a.dataset,
                request_id=f"run:{a.references['upload']}",
                run_id=a.references["upload"],
            )
            .model_dump_json()
            .encode()
        ),
        lambda a: (a.references["upload"],),
    ),
    MessageCase(
        "model-trained-unknown-run",
        "model-trained",
        "evaluate",
        "model-trained for <ds>-0123456789abcdef",
        lambda a: (
            ModelTrained(
                dataset=a.dataset, run_id=f"{a.dataset}-0123456789abcdef", model_uri="gs://x/y"
            )
            .model_dump_json()
            .encode()
        ),
        lambda a: ("model-trained for unknown run", f"{a.dataset}-0123456789abcdef"),
    ),
    MessageCase(
        "model-blessed-unknown-run",
        "model-blessed",
        "deploy",
        "model-blessed for <ds>-fedcba9876543210",
        lambda a: (
            ModelBlessed(dataset=a.dataset, run_id=f"{a.dataset}-fedcba9876543210")
            .model_dump_json()
            .encode()
        ),
        lambda a: ("model-blessed for unknown run", f"{a.dataset}-fedcba9876543210"),
    ),
    MessageCase(
        "model-trained-wrong-schema",
        "model-trained",
        "evaluate",
        "model-trained: a JSON array",
        lambda a: b"[1, 2, 3]",
        lambda a: ("invalid ModelTrained",),
    ),
]


@pytest.mark.parametrize("case", MESSAGE_CASES, ids=[case.id for case in MESSAGE_CASES])
def test_a_forged_message_is_alerted_once_never_retried(
    arena: Arena, attack: Attack, case: MessageCase
) -> None:
    attack.category, attack.shows = f"pubsub→{case.function}", case.shows
    attack.counts = {f"{case.function}.delivered": 1}
    publisher = make_publisher(arena.cloud.settings)

    publisher.publish(
        arena.cloud.settings.topic_path(case.topic), case.data(arena), **case.attributes
    ).result(timeout=30)

    alert = arena.alerts.find(*case.alert(arena))
    attack.outcome = f"acknowledged, alert: {alert['summary']}"
    assert alert["severity"] == "ERROR"


def test_a_malformed_storage_notification_is_dead_lettered_once(
    arena: Arena, attack: Attack
) -> None:
    attack.name, attack.category = "malformed-notification", "pubsub→router"
    attack.shows = "notification: a JSON array, not an object"
    attack.counts = {"validate.malformed": 1, "dead-letters.delivered": 2}
    attack.dead_letters = {"validate.dead_lettered": 1, "recorder-storage.dead_lettered": 1}
    publisher = make_publisher(arena.cloud.settings)
    topic = (
        f"projects/{arena.cloud.settings.project}/topics/{arena.cloud.local.notifications_topic}"
    )

    message_id = publisher.publish(
        topic,
        b'["not", "an", "object"]',
        eventType="OBJECT_FINALIZE",
        bucketId=arena.cloud.settings.landing_bucket,
        objectId=f"{arena.dataset}/array.csv",
        objectGeneration="1",
    ).result(timeout=30)

    log = arena.cloud.local.state_dir / "logs" / "event-router.log"

    def logged() -> str | None:
        lines = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if f" message {message_id} " in line and "validate" in line
        ]
        return lines[0] if lines else None

    line = poll(logged, "the router's dead-letter line")
    attack.outcome = "dead-lettered after 1 attempt: malformed storage notification (array)"
    assert "dead-lettered after 1 attempts" in line
    assert "malformed storage notification" in line
    assert "not an object" in line


# ---------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class HttpCase:
    id: str
    surface: str
    """train-http, evaluate-http, or model (the model server)."""
    shows: str
    body: Callable[[Arena], bytes]
    status: int
    words: Callable[[Arena], tuple[str, ...]]
    bad_field: str | None = None
    """The ``field`` the 4xx answer names."""
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    method: str = "POST"
    path: str = "/v1/models/{model}:predict"
    """The model server's route ({model}: the served dataset)."""


def _train(**fields: Any) -> Callable[[Arena], bytes]:
    return lambda a: _json({"dataset": a.dataset, **fields})


def _words(*words: str) -> Callable[[Arena], tuple[str, ...]]:
    return lambda a: words


TRAIN_CASES = [
    HttpCase(
        "train-run-id-in-body",
        "train-http",
        "run_id: the reference request's run",
        lambda a: _json(
            {"dataset": a.dataset, "request_id": "x", "run_id": a.references["request"]}
        ),
        400,
        _words("run_id: not allowed"),
        bad_field="run_id",
    ),
    HttpCase(
        "train-extra-field",
        "train-http",
        '{"dataset", "force": true}',
        _train(force=True),
        400,
        _words("force", "Extra inputs are not permitted"),
        bad_field="force",
    ),
    HttpCase(
        "train-5mb-reason",
        "train-http",
        "reason of 5 MiB",
        _train(reason="x" * (5 * MIB)),
        413,
        _words("larger than the limit of 65536 bytes"),
    ),
    HttpCase(
        "train-reason-1001-chars",
        "train-http",
        "reason of 1,001 characters",
        _train(reason="x" * 1001),
        400,
        _words("reason", "1000"),
        bad_field="reason",
    ),
    HttpCase(
        "train-depth-10000",
        "train-http",
        "reason nested 10,000 arrays deep",
        lambda a: _deep(b'{"dataset": "%s", "reason": ' % a.dataset.encode()),
        400,
        _words("deeper than 8 levels"),
    ),
    HttpCase(
        "train-not-json",
        "train-http",
        "'{not json'",
        lambda a: b"{not json",
        400,
        _words("not valid JSON"),
    ),
    HttpCase(
        "train-nan",
        "train-http",
        '{"dataset": NaN}',
        lambda a: b'{"dataset": NaN}',
        400,
        _words("not valid JSON", "NaN"),
    ),
    HttpCase(
        "train-json-array",
        "train-http",
        "a JSON array",
        lambda a: b"[1, 2]",
        400,
        _words("must be a JSON object"),
    ),
    HttpCase(
        "train-get",
        "train-http",
        "GET",
        lambda a: b"",
        405,
        _words("use POST"),
        method="GET",
    ),
    HttpCase(
        "train-20mb-body",
        "train-http",
        "20 MiB body",
        lambda a: b"x" * (20 * MIB),
        413,
        _words("larger than the limit of 65536 bytes"),
    ),
    HttpCase(
        "train-text-plain",
        "train-http",
        "Content-Type text/plain",
        _train(),
        415,
        _words("must be application/json"),
        headers={"Content-Type": "text/plain"},
    ),
    HttpCase(
        "train-latin1-charset",
        "train-http",
        "application/json; charset=latin-1",
        _train(),
        415,
        _words("UTF-8"),
        headers={"Content-Type": "application/json; charset=latin-1"},
    ),
    HttpCase(
        "train-reserved-request-id",
        "train-http",
        "request_id run:<the seed's run>",
        lambda a: _json({"dataset": a.dataset, "request_id": f"run:{a.references['upload']}"}),
        400,
        _words("reserved for Cascade's own requests"),
        bad_field="request_id",
    ),
    HttpCase(
        "train-dataset-traversal",
        "train-http",
        'dataset "../../etc"',
        lambda a: _json({"dataset": "../../etc"}),
        400,
        _words("dataset"),
        bad_field="dataset",
    ),
    HttpCase(
        "train-65-hyperparameters",
        "train-http",
        "65 hyperparameters",
        _train(hyperparameters={f"h{n}": 1 for n in range(65)}),
        400,
        _words("at most 64"),
        bad_field="hyperparameters",
    ),
    HttpCase(
        "train-unknown-dataset",
        "train-http",
        'dataset "nosuchdataset"',
        lambda a: _json({"dataset": "nosuchdataset"}),
        404,
        _words("unknown dataset 'nosuchdataset'"),
        bad_field="dataset",
    ),
    HttpCase(
        "train-replayed-request-id",
        "train-http",
        "the reference request again",
        _train(request_id="reference"),
        200,
        _words(),
    ),
]

EVALUATE_CASES = [
    HttpCase(
        "bless-run-id-traversal",
        "evaluate-http",
        'run_id "../../../../tmp/x"',
        lambda a: _json({"run_id": "../../../../tmp/x", "reason": "why not", "actor": "eve"}),
        400,
        _words("invalid bless request", "run_id"),
        bad_field="run_id",
    ),
    HttpCase(
        "bless-unknown-run",
        "evaluate-http",
        "run_id <ds>-0123456789abcdef (no such run)",
        lambda a: _json(
            {"run_id": f"{a.dataset}-0123456789abcdef", "reason": "why", "actor": "eve"}
        ),
        404,
        lambda a: (f"no run {a.dataset}-0123456789abcdef",),
    ),
    HttpCase(
        "bless-an-unevaluated-run",
        "evaluate-http",
        "bless the seed's run (never evaluated)",
        lambda a: _json({"run_id": a.references["upload"], "reason": "ship it", "actor": "eve"}),
        409,
        _words("has no evaluation.json"),
    ),
    HttpCase(
        "bless-a-failed-request-run",
        "evaluate-http",
        "bless the reference request's run (failed)",
        lambda a: _json({"run_id": a.references["request"], "reason": "ship it", "actor": "eve"}),
        409,
        _words("has no evaluation.json"),
    ),
    HttpCase(
        "bless-extra-field",
        "evaluate-http",
        '{run_id, reason, actor, "verdict": "blessed"}',
        lambda a: _json(
            {
                "run_id": a.references["upload"],
                "reason": "x" * 5,
                "actor": "e",
                "verdict": "blessed",
            }
        ),
        400,
        _words("verdict", "Extra inputs are not permitted"),
        bad_field="verdict",
    ),
    HttpCase(
        "bless-depth-10000",
        "evaluate-http",
        "reason nested 10,000 arrays deep",
        lambda a: _deep(b'{"run_id": "x", "reason": '),
        400,
        _words("deeper than 8 levels"),
    ),
    HttpCase(
        "bless-not-json",
        "evaluate-http",
        "'{not json'",
        lambda a: b"{not json",
        400,
        _words("not valid JSON"),
    ),
    HttpCase(
        "bless-get",
        "evaluate-http",
        "GET",
        lambda a: b"",
        405,
        _words("use POST"),
        method="GET",
    ),
    HttpCase(
        "bless-5mb-reason",
        "evaluate-http",
        "reason of 5 MiB",
        lambda a: _json({"run_id": "x", "reason": "x" * (5 * MIB), "actor": "eve"}),
        413,
        _words("larger than the limit of 65536 bytes"),
    ),
    HttpCase(
        "bless-no-content-type",
        "evaluate-http",
        "no Content-Type",
        lambda a: _json({"run_id": "x", "reason": "xyz", "actor": "eve"}),
        415,
        _words("must be application/json"),
        headers={},
    ),
]

ROW = {"age": 100.0, "city": "paris", "key": "row-1"}


def _instances(*rows: dict[str, Any]) -> Callable[[Arena], bytes]:
    return lambda a: _json({"instances": list(rows)})


MODEL_CASES = [
    HttpCase(
        "predict-depth-10000",
        "model",
        "instances nested 10,000 arrays deep",
        lambda a: _deep(b'{"instances": '),
        400,
        _words("deeper than 32 levels"),
    ),
    HttpCase(
        "predict-10001-instances",
        "model",
        "10,001 instances",
        _instances(*[ROW] * 10_001),
        400,
        _words("at most 10000 instances"),
    ),
    HttpCase(
        "predict-huge-array-value",
        "model",
        "age: an array of 100,000 numbers",
        _instances({**ROW, "age": [1.0] * 100_000}),
        400,
        _words("instance 0", "input 'age' (DT_FLOAT) must be a number", "an array"),
    ),
    HttpCase(
        "predict-2mb-body",
        "model",
        "2 MiB body",
        lambda a: b'{"instances": [{"key": "' + b"k" * (2 * MIB) + b'"}]}',
        400,
        _words("Request payload size exceeds the limit: 1572864 bytes"),
    ),
    HttpCase(
        "predict-wrong-type",
        "model",
        "city: 5 (a number for a string input)",
        _instances({**ROW, "city": 5}),
        400,
        _words("instance 0", "input 'city' (DT_STRING) must be a string"),
    ),
    HttpCase(
        "predict-bool-for-float",
        "model",
        "age: true",
        _instances(ROW, {**ROW, "age": True}),
        400,
        _words("instance 1", "input 'age' (DT_FLOAT) must be a number"),
    ),
    HttpCase(
        "predict-huge-integer",
        "model",
        "age: 10**400",
        lambda a: b'{"instances": [{"age": 1' + b"0" * 400 + b', "city": "a", "key": "k"}]}',
        400,
        _words("input 'age' (DT_FLOAT) must be within"),
    ),
    HttpCase(
        "predict-null-value",
        "model",
        "age: null",
        _instances({**ROW, "age": None}),
        400,
        _words("input 'age'", "write a missing value as NaN"),
    ),
    HttpCase(
        "predict-missing-key",
        "model",
        "an instance without key",
        _instances({"age": 1.0, "city": "lyon"}),
        400,
        _words("instance 0: missing input 'key'"),
    ),
    HttpCase(
        "predict-extra-field",
        "model",
        "an instance with __proto__",
        _instances({**ROW, "__proto__": {"admin": True}}),
        400,
        _words("instance 0: unknown field '__proto__'"),
    ),
    HttpCase(
        "predict-instances-object",
        "model",
        '"instances": {} (not a list)',
        lambda a: _json({"instances": {"age": 1}}),
        400,
        _words('"instances" must be a non-empty list'),
    ),
    HttpCase(
        "predict-columnar-inputs",
        "model",
        '{"inputs": {...}} (columnar)',
        lambda a: _json({"inputs": {"age": [1.0]}}),
        400,
        _words('columnar "inputs" form is not supported'),
    ),
    HttpCase(
        "predict-not-json",
        "model",
        "'{not json'",
        lambda a: b"{not json",
        400,
        _words("not valid JSON"),
    ),
    HttpCase(
        "predict-not-utf8",
        "model",
        "body bytes \\xff\\xfe",
        lambda a: b'{"instances": [{"city": "\xff\xfe"}]}',
        400,
        _words("not valid JSON"),
    ),
    HttpCase(
        "predict-unknown-model",
        "model",
        "model 'nosuchmodel'",
        _instances(ROW),
        404,
        _words("Servable not found", "nosuchmodel"),
        path="/v1/models/nosuchmodel:predict",
    ),
    HttpCase(
        "predict-version-traversal",
        "model",
        "version '..%2F..%2Fetc'",
        _instances(ROW),
        404,
        _words("no route"),
        path="/v1/models/{model}/versions/..%2F..%2Fetc:predict",
    ),
    HttpCase(
        "predict-get",
        "model",
        "GET on :predict (TF Serving's status route)",
        lambda a: b"",
        404,
        lambda a: (f"Could not find any versions of model {a.served}:predict",),
        method="GET",
    ),
    HttpCase(
        "vertex-predict-get",
        "model",
        "GET on the Vertex predict route",
        lambda a: b"",
        405,
        _words("GET is not allowed here"),
        method="GET",
        path="/v1/projects/p/locations/l/endpoints/{model}:predict",
    ),
    HttpCase(
        "vertex-predict-depth-10000",
        "model",
        "Vertex route, nested 10,000 deep",
        lambda a: _deep(b'{"instances": '),
        400,
        _words("deeper than 32 levels"),
        path="/v1/projects/p/locations/l/endpoints/{model}:predict",
    ),
]


def _assert_words(text: str | None, *words: str) -> None:
    for word in words:
        assert word in (text or ""), f"{word!r} not in {text!r}"


def _error_of(answer: Any) -> str:
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):  # Google's {"error": {code, message, status}}
        return str(error.get("message"))
    return str(error)


@pytest.mark.parametrize(
    "case",
    TRAIN_CASES + EVALUATE_CASES + MODEL_CASES,
    ids=[case.id for case in TRAIN_CASES + EVALUATE_CASES + MODEL_CASES],
)
def test_a_hostile_http_request_gets_a_json_4xx_naming_the_problem(
    arena: Arena, served_model: str, attack: Attack, case: HttpCase
) -> None:
    attack.category, attack.shows = case.surface, case.shows
    headers = dict(case.headers)
    if case.surface == "model":
        url = arena.model_server + case.path.format(model=served_model)
    else:  # an invoker's hostile request: Cloud Run's token check lets it through
        url = arena.urls[case.surface]
        headers.update(bearer_header(arena.cloud.local.id_token_key_file, url))

    response = requests.request(
        case.method, url, data=case.body(arena), headers=headers, timeout=120
    )

    answer = response.json()
    attack.outcome = f"HTTP {response.status_code}: " + (
        _error_of(answer) if "error" in answer else json.dumps(answer)
    )
    if case.bad_field:
        attack.outcome += f" [field {answer.get('field')}]"
    assert response.status_code == case.status, response.text[:500]
    assert response.headers["Content-Type"].startswith("application/json")
    if case.status == 200:  # the replayed request: its run, untouched
        assert answer == {
            "run_id": arena.references["request"],
            "request_id": "reference",
            "dataset": arena.dataset,
            "status": "duplicate",
        }
        return
    error = _error_of(answer)
    _assert_words(error, *case.words(arena))
    assert len(error) <= 1_000  # names the problem; never echoes a large body
    if case.bad_field:
        assert answer["field"] == case.bad_field
    if "/v1/projects/" in case.path and case.status == 400:  # Google's error shape
        assert answer["error"]["status"] == "INVALID_ARGUMENT"
        assert answer["error"]["code"] == case.status
