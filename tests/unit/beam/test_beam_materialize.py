"""The Beam materialisation writes the split the transform step writes in the function.

Both paths read the same landed objects from fake-gcs-server (the local cloud's Cloud
Storage, pinned generations): the function path is ``write_split_shards`` in this venv;
the Beam path is ``python -m cascade.beam --mode=materialize`` as a process of
.venv-beam (Beam's FnApiRunner, as the local job service runs it).

**Equal** means, for each of train and eval: every shard's Arrow schema equals the
function path's shard schema (names, order, types, nullability); the multiset of rows
(every column, the newest marker included; NaN equal to NaN) is the same; and the
counts the step records (train/eval rows, newest eval rows, eval rows per file,
duplicates removed) are the same. Shard boundaries, names and row order within a split
are not compared: the Beam path writes each file's rows to shards of its own.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.api_core import exceptions as gexc
from google.cloud import storage

from cascade.beam.materialize_request import MaterializeRequest, MaterializeResult
from cascade.core.errors import BadInputError
from cascade.core.store import ArtifactStore
from cascade.jobs.beam_jobs import launch_refusal
from cascade.jobs.beam_spec import (
    BeamMaterializeSpec,
    BeamStatisticsSpec,
    dataflow_job_name,
    launch_of,
    materialize_parameters,
)
from cascade.localcloud.beam_executor import LocalBeamExecutor
from cascade.localcloud.gcs_subscriber import Message, avro_file_bytes
from cascade.transform.materialize import SplitShards, write_split_shards
from cascade.transform.newest import NEWEST_FILES_COLUMN
from cascade.transform.snapshot import GcsObjectOpener
from cascade.transform.spec import (
    LabelSpec,
    NumericTransform,
    SnapshotFile,
    SplitSpec,
    VocabularyTransform,
)
from tests.integration.fake_gcs import gcs_fixture  # noqa: F401 - the `gcs` fixture
from tests.unit.beam.beam_venv import PIPELINE_TIMEOUT_S, beam_python

WHEN = datetime(2026, 12, 1, tzinfo=UTC)
REQUEST = "dataflow/inputs/r1/materialize.json"
OUTPUT = "dataflow/outputs/r1/transform"
FEATURES = [
    NumericTransform(name="age", mean=40.0, std=12.0, fill_value=40.0),
    NumericTransform(
        name="income", mean=5e4, std=1e4, fill_value=5e4, bucket_boundaries=[3e4, 5e4, 7e4]
    ),
    VocabularyTransform(name="city", vocabulary=["paris", "oslo", "rome"]),
]
LABEL = LabelSpec(name="label", problem_type="binary", classes=["no", "yes"])

Gcs = tuple[str, storage.Client]


def _row(i: int) -> dict[str, Any]:
    return {
        "age": None if i % 13 == 0 else 18 + i % 60,
        "income": None if i % 7 == 0 else round(20_000 + (i * 7919) % 60_000 + 0.25, 2),
        "city": [None, "paris", "oslo", "rome", "köln"][i % 5],
        "customer": f"c{i % 40}",
        "label": "yes" if (i * 31) % 3 else "no",
        "unused": i,
    }


def _csv_bytes(rows: range) -> bytes:
    lines = ["age,income,city,customer,label,unused"]
    for i in rows:
        row = _row(i)
        lines.append(",".join("" if value is None else str(value) for value in row.values()))
    return ("\n".join(lines) + "\n").encode()


def _parquet_bytes(rows: range) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([_row(i) for i in rows]), sink, row_group_size=64)
    return sink.getvalue()


def _avro_bytes(ids: list[int]) -> bytes:
    messages = [
        Message(
            f"m{i}",
            WHEN,
            {},
            json.dumps({k: v for k, v in _row(i).items() if v is not None}).encode(),
        )
        for i in ids
    ]
    return avro_file_bytes("projects/p/subscriptions/shop", messages)


def _land(client: storage.Client, name: str, data: bytes) -> SnapshotFile:
    blob = client.bucket("landing").blob(name)
    blob.upload_from_string(data)
    return SnapshotFile(uri=f"gs://landing/{name}", generation=int(blob.generation), rows=0)


def _snapshot(client: storage.Client) -> list[SnapshotFile]:
    """csv, parquet, two stream files sharing 100 messages (and one message twice in the
    first), and a three-row file (its eval row is held back when none hashes to eval)."""
    return [
        _land(client, "shop/day-1.csv", _csv_bytes(range(0, 500))),
        _land(client, "shop/day-2.parquet", _parquet_bytes(range(500, 900))),
        _land(client, "shop/stream-a.avro", _avro_bytes([*range(900, 1300), 950])),
        _land(client, "shop/stream-b.avro", _avro_bytes(list(range(1200, 1500)))),
        _land(client, "shop/tiny.csv", _csv_bytes(range(1500, 1503))),
    ]


def _request(files: list[SnapshotFile], split: SplitSpec, **changes: Any) -> MaterializeRequest:
    values: dict[str, Any] = {
        "dataset": "shop",
        "run_id": "r1",
        "files": files,
        "label": LABEL,
        "features": FEATURES,
        "passthrough_key": "customer",
        "split": split,
        "newest": [files[-2]],
        "newest_column": NEWEST_FILES_COLUMN,
        "rows_per_shard": 170,
    }
    return MaterializeRequest.model_validate({**values, **changes})


def _function_path(client: storage.Client, request: MaterializeRequest) -> SplitShards:
    return write_split_shards(
        ArtifactStore(client, "artifacts"),
        list(request.files),
        GcsObjectOpener(lambda bucket: ArtifactStore(client, bucket)),
        schema=request.row_schema(),
        split=request.split,
        folder="runs/r1/transform",
        config=request.validation,
        rows_per_shard=request.rows_per_shard,
        newest=list(request.newest),
        newest_column=request.newest_column,
    )


def _beam_path(gcs: Gcs, request: MaterializeRequest, *extra: str) -> MaterializeResult:
    endpoint, client = gcs
    client.bucket("artifacts").blob(REQUEST).upload_from_string(request.model_dump_json())
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GOOGLE_")},
        "STORAGE_EMULATOR_HOST": endpoint,
    }
    completed = subprocess.run(
        [
            str(beam_python()),
            "-m",
            "cascade.beam",
            "--mode=materialize",
            f"--request=gs://artifacts/{REQUEST}",
            f"--output=gs://artifacts/{OUTPUT}",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=PIPELINE_TIMEOUT_S,
        check=False,
        env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    stored = client.bucket("artifacts").blob(f"{OUTPUT}/result.json").download_as_bytes()
    return MaterializeResult.model_validate_json(stored)


def _value(value: Any) -> Any:
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def _split(client: storage.Client, uris: list[str]) -> tuple[set[str], Counter[tuple[Any, ...]]]:
    """The shards' schemas (as text) and their rows as a multiset."""
    schemas: set[str] = set()
    rows: Counter[tuple[Any, ...]] = Counter()
    for uri in uris:
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        table = pq.read_table(io.BytesIO(client.bucket(bucket).blob(name).download_as_bytes()))
        schemas.add(table.schema.remove_metadata().to_string())
        rows.update(tuple(_value(v) for v in row.values()) for row in table.to_pylist())
    return schemas, rows


def _assert_equal(client: storage.Client, beam: MaterializeResult, function: SplitShards) -> None:
    assert beam.status == "ok", beam.message
    counts = beam.split_shards()
    assert (
        counts.train_rows,
        counts.eval_rows,
        counts.newest_eval_rows,
        counts.file_eval_rows,
        counts.duplicate_rows,
    ) == (
        function.train_rows,
        function.eval_rows,
        function.newest_eval_rows,
        function.file_eval_rows,
        function.duplicate_rows,
    )
    store = ArtifactStore(client, "artifacts")
    for beam_uris, names, rows in (
        (beam.train_files, function.train_names, function.train_rows),
        (beam.eval_files, function.eval_names, function.eval_rows),
    ):
        beam_schemas, beam_rows = _split(client, beam_uris)
        function_schemas, function_rows = _split(client, [store.uri(name) for name in names])
        assert beam_schemas == function_schemas
        assert len(function_schemas) == 1
        assert beam_rows == function_rows
        assert sum(beam_rows.values()) == rows


@pytest.mark.parametrize(
    "split",
    [
        SplitSpec(eval_fraction=0.2, salt="cascade:shop"),
        SplitSpec(method="key", key_column="customer", eval_fraction=0.25, salt="s"),
    ],
    ids=["row_hash", "key"],
)
def test_the_beam_split_equals_the_function_split(gcs: Gcs, split: SplitSpec) -> None:
    _, client = gcs
    request = _request(_snapshot(client), split)
    function = _function_path(client, request)

    beam = _beam_path(gcs, request, "--direct_num_workers=2")

    _assert_equal(client, beam, function)
    assert beam.duplicate_rows == 101  # m950 twice in stream-a, m1200..m1299 again in b
    assert beam.train_rows + beam.eval_rows == 500 + 400 + 400 + 200 + 3
    assert all(rows > 0 for rows in beam.file_eval_rows)  # every file contributes eval rows
    assert 0 < beam.newest_eval_rows < beam.eval_rows
    assert len(beam.train_files) > len(request.files)  # files cut at 170 rows a shard


def test_the_first_occurrence_in_acceptance_order_wins(gcs: Gcs) -> None:
    """Snapshot order decides which copy of a message is kept (and so its file's eval
    rows and newest marker), whatever order the workers split the files in."""
    _, client = gcs
    files = _snapshot(client)
    swapped = [files[0], files[1], files[3], files[2], files[4]]
    request = _request(swapped, SplitSpec(eval_fraction=0.3, salt="x"), newest=[files[2]])
    function = _function_path(client, request)

    beam = _beam_path(gcs, request)

    _assert_equal(client, beam, function)
    assert beam.duplicate_rows == 101


def test_an_empty_file_fails_as_in_the_function_and_the_first_error_wins(gcs: Gcs) -> None:
    _, client = gcs
    files = _snapshot(client)
    empty = _land(client, "shop/empty.csv", b"")
    broken = _land(client, "shop/broken.parquet", b"PAR1 not parquet PAR1")
    request = _request([files[0], empty, broken, files[4]], SplitSpec(salt="e"))
    with pytest.raises(BadInputError) as in_function:
        _function_path(client, request)

    beam = _beam_path(gcs, request)

    assert beam.status == "bad_input"
    assert beam.message == str(in_function.value)
    assert beam.message == f"{empty.uri}#{empty.generation}: the file is empty (0 bytes)"
    assert beam.train_files == []


def test_a_snapshot_naming_a_local_path_is_refused_never_read(gcs: Gcs) -> None:
    """Names are data: a file that is not a gs:// object is bad input in both paths."""
    _, client = gcs
    files = _snapshot(client)
    local = SnapshotFile(uri="/etc/passwd", generation=1, rows=1)
    request = _request([files[0], local, files[4]], SplitSpec(salt="p"))
    with pytest.raises(BadInputError) as in_function:
        _function_path(client, request)

    beam = _beam_path(gcs, request)

    assert beam.status == "bad_input"
    assert beam.message == str(in_function.value)
    assert "not a gs://bucket/object URI: '/etc/passwd'" in beam.message


def test_a_gone_generation_is_refused_by_name(gcs: Gcs) -> None:
    """The function path fails reading the pinned generation (Cloud Storage's 404);
    the Beam job records the file as gone, in validate's words, and does not crash."""
    _, client = gcs
    files = _snapshot(client)
    gone = files[1]
    client.bucket("landing").blob("shop/day-2.parquet").upload_from_string(b"replaced")
    request = _request(files, SplitSpec(salt="g"))
    with pytest.raises(gexc.NotFound) as in_function:
        _function_path(client, request)
    assert f"generation={gone.generation}" in str(in_function.value)

    beam = _beam_path(gcs, request)

    assert beam.status == "bad_input"
    assert beam.message == (
        f"{gone.uri}#{gone.generation}: the object no longer exists (deleted or overwritten)"
    )


def _spec() -> BeamMaterializeSpec:
    return BeamMaterializeSpec(
        run_id="r1",
        dataset="shop",
        request_uri=f"gs://artifacts/{REQUEST}",
        output_uri=f"gs://artifacts/{OUTPUT}",
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"mode": "exec"}, "parameter 'mode' does not match"),
        ({"request": "gs://artifacts/runs/r1/transform/snapshot.json"}, "does not match"),
        ({"request": "/etc/passwd"}, "does not match"),
        ({"output": "gs://artifacts/runs/r1/transform"}, "does not match"),
        ({"rows_per_shard": "5"}, "declares no parameter 'rows_per_shard'"),
    ],
)
def test_launches_dataflow_would_refuse_are_refused(change: dict[str, str], reason: str) -> None:
    parameters = {**materialize_parameters(_spec()), **change}

    assert (
        launch_refusal(dataflow_job_name("r1", kind="split"), materialize_parameters(_spec())) == ""
    )
    assert reason in launch_refusal(dataflow_job_name("r1", kind="split"), parameters)


def test_the_local_dataflow_job_kind_runs_the_materialisation(gcs: Gcs, tmp_path: Path) -> None:
    endpoint, client = gcs
    request = _request(_snapshot(client), SplitSpec(eval_fraction=0.2, salt="j"))
    client.bucket("artifacts").blob(REQUEST).upload_from_string(request.model_dump_json())
    announced: list[dict[str, Any]] = []
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GOOGLE_")},
        "STORAGE_EMULATOR_HOST": endpoint,
    }
    executor = LocalBeamExecutor(
        tmp_path / "dataflow",
        project="local",
        region="europe-west1",
        python=str(beam_python()),
        base_environment=environment,
        announce=announced.append,
        cwd=tmp_path,
    )

    job = executor.launch(dataflow_job_name("r1", kind="split"), materialize_parameters(_spec()))
    finished = executor.wait(job.job_id, PIPELINE_TIMEOUT_S)

    assert finished is not None
    assert (finished.state, finished.error) == ("succeeded", "")
    assert [entry["resource"]["labels"]["job_id"] for entry in announced] == [job.job_id]
    stored = client.bucket("artifacts").blob(f"{OUTPUT}/result.json").download_as_bytes()
    _assert_equal(
        client, MaterializeResult.model_validate_json(stored), _function_path(client, request)
    )


@pytest.mark.parametrize("mode", [[], ["--mode=statistics"]], ids=["default", "named"])
def test_the_statistics_mode_is_still_the_default_of_the_module(
    tmp_path: Path, mode: list[str]
) -> None:
    data = tmp_path / "orders.csv"
    data.write_bytes(_csv_bytes(range(50)))
    output = tmp_path / "beam"

    completed = subprocess.run(
        [
            str(beam_python()),
            "-m",
            "cascade.beam",
            *mode,
            f"--input={data}",
            "--file_format=csv",
            f"--output={output}",
        ],
        capture_output=True,
        text=True,
        timeout=PIPELINE_TIMEOUT_S,
        check=False,
        cwd=tmp_path,
    )

    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads((output / "result.json").read_text())
    assert (result["status"], result["num_examples"]) == ("ok", 50)


def test_an_unknown_mode_is_refused_before_any_pipeline_runs(tmp_path: Path) -> None:
    completed = subprocess.run(
        [str(beam_python()), "-m", "cascade.beam", "--mode=shell", "--output=x"],
        capture_output=True,
        text=True,
        timeout=PIPELINE_TIMEOUT_S,
        check=False,
        cwd=tmp_path,
    )

    assert completed.returncode == 2
    assert "invalid choice: 'shell'" in completed.stderr


def test_each_kind_of_job_has_its_name_and_parameters() -> None:
    statistics = BeamStatisticsSpec(
        run_id="r1",
        dataset="shop",
        input_uri="gs://landing/shop/day-1.csv",
        generation=3,
        uri="gs://landing/shop/day-1.csv#3",
        file_format="csv",
        validation_config="{}",
        output_uri="gs://artifacts/dataflow/outputs/r1/validate",
    )

    split_name, split_parameters = launch_of(_spec())
    stats_name, stats_parameters = launch_of(statistics)

    assert split_name.startswith("cascade-split-r1-")
    assert stats_name.startswith("cascade-stats-r1-")
    assert split_parameters == {
        "mode": "materialize",
        "request": f"gs://artifacts/{REQUEST}",
        "output": f"gs://artifacts/{OUTPUT}",
    }
    assert "mode" not in stats_parameters  # the default mode: launches as before
    assert launch_refusal(split_name, split_parameters) == ""
    assert launch_refusal(stats_name, stats_parameters) == ""


def test_a_unit_of_work_is_tried_again_after_a_transient_error_only(tmp_path: Path) -> None:
    """As Dataflow retries a failed work item; bad input is an answer, not retried."""
    check = (
        "from cascade.beam.materialize import ATTEMPTS, retried\n"
        "from cascade.core.errors import BadInputError\n"
        "calls = []\n"
        "def flaky():\n"
        "    calls.append(1)\n"
        "    if len(calls) < ATTEMPTS:\n"
        "        raise ConnectionError('Remote end closed connection without response')\n"
        "    return 'written'\n"
        "assert retried(flaky) == 'written' and len(calls) == ATTEMPTS == 4\n"
        "calls.clear()\n"
        "def broken():\n"
        "    calls.append(1)\n"
        "    raise BadInputError('bad')\n"
        "try:\n"
        "    retried(broken)\n"
        "except BadInputError:\n"
        "    pass\n"
        "assert len(calls) == 1\n"
        "calls.clear()\n"
        "def down():\n"
        "    calls.append(1)\n"
        "    raise ConnectionError('down')\n"
        "try:\n"
        "    retried(down)\n"
        "    raise AssertionError('not raised')\n"
        "except ConnectionError:\n"
        "    pass\n"
        "assert len(calls) == ATTEMPTS\n"
    )
    completed = subprocess.run(
        [str(beam_python()), "-c", check],
        capture_output=True,
        text=True,
        timeout=PIPELINE_TIMEOUT_S,
        check=False,
        cwd=tmp_path,
    )

    assert completed.returncode == 0, completed.stderr[-4000:]
