"""Serving modes benchmark (issue 16): batch scoring against the online endpoint, the
hybrid server's head keys against the dynamic path, and the advisor on three kinds of
traffic, in one run on the same model.

    .venv/bin/python bench/serving_modes.py      # writes bench/results/serving_modes.json

The model is ``bench/serving.py``'s Keras model (raw inputs → Normalization /
StringLookup(one_hot) → Dense → sigmoid, the trainer's serving signature with a
passthrough key), trained here for a few epochs on generated tabular data and exported
once; every measurement below uses that one export. Processes, all on free loopback
ports with their state in a temporary folder, all stopped at the end: fake-gcs-server
(``serving.json``), the local BigQuery (``bigquery_spec``), the Bigtable emulator
(``bigtable_spec``) and the model server under gunicorn (``python -m
cascade.serving``'s ``main``, with the precomputed store of ``CASCADE_PRECOMPUTED_*``).

1. **Batch scoring.** ``cascade.batch.scoring.score_source`` over a BigQuery table of
   ``--rows`` rows into the local BigQuery (read the table through the Storage Read API,
   score chunks, load the predictions; the time the source takes to produce its rows is
   measured apart; ``--profile FILE`` adds one round under cProfile), against the
   online endpoint called row by row (one client, one row per request, keep-alive; a
   sample of ``--sample`` rows timed and extrapolated to the table) and against the
   model on the whole table in memory (Keras ``model.predict``, and the exported model
   through ``Servable.predict_columns``). Rounds alternate.
2. **Head-key latency.** Two datasets in one model server serve the same export: one
   ``dynamic``, one ``hybrid`` whose head (the ``--head`` most requested keys) was scored
   by ``score_source`` into the Bigtable emulator (its sink). ``--clients`` threads send
   one-row requests over a Zipf(``--zipf``) stream of ``--keys`` keys; each answer's
   ``precomputed`` flag is checked against whether its key is in the head. Rounds
   alternate dynamic / hybrid on the same stream.
3. **The advisor.** ``cascade.serving.plan.advise`` on generated request counts:
   uniform over a high cardinality, Zipf 1.1, and 20 distinct keys.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import http.client
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import (  # noqa: E402 - bench/serving.py, the model both benchmarks serve
    CITIES,
    SEGMENTS,
    build_model,
    export,
    free_port,
    start,
    stop,
    wait_http,
)

PROJECT = "cascade-bench"
DYNAMIC, HYBRID = "bench-dynamic", "bench-hybrid"
FEATURES = ("age", "income", "city", "segment")
WARMUP_REQUESTS = 400


# -- data ---------------------------------------------------------------------------------


class KeySpace:
    """``keys`` entities with generated features; Zipf rank r is entity ``order[r]``, so
    the most requested keys are scattered over the key space, as real ids are."""

    def __init__(self, keys: int, seed: int) -> None:
        import numpy as np

        rng = np.random.default_rng(seed)
        self.size = keys
        self.age = np.clip(rng.normal(40, 12, keys), 18, 90).round(1)
        self.income = np.clip(rng.lognormal(10.8, 0.4, keys), 5_000, 400_000).round(0)
        self.city = rng.integers(0, len(CITIES), keys)
        self.segment = rng.integers(0, len(SEGMENTS), keys)
        self.order = rng.permutation(keys)

    def key(self, entity: int) -> str:
        return f"cust-{entity:07d}"

    def row(self, entity: int) -> dict[str, Any]:
        return {
            "key": self.key(entity),
            "age": float(self.age[entity]),
            "income": float(self.income[entity]),
            "city": CITIES[int(self.city[entity])],
            "segment": SEGMENTS[int(self.segment[entity])],
        }


def labels(space: KeySpace, seed: int) -> Any:
    """A noisy rule the model can learn (older, richer, some cities and segments)."""
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    logit = (
        (space.age - 40) / 12 * 1.1
        + (np.log(space.income) - 10.8) / 0.4 * 0.7
        + np.array([0.6, -0.2, 0.3, -0.7])[space.city]
        + np.array([-0.4, 0.1, 0.5])[space.segment]
        + rng.normal(0, 0.8, space.size)
    )
    return (logit > 0).astype("float32")


def train_and_export(space: KeySpace, rows: int, epochs: int, seed: int, directory: Path) -> Any:
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    count = min(rows, space.size)
    columns = {
        "age": space.age[:count].astype("float32"),
        "income": space.income[:count].astype("float32"),
        "city": np.asarray([CITIES[i] for i in space.city[:count]], dtype=object),
        "segment": np.asarray([SEGMENTS[i] for i in space.segment[:count]], dtype=object),
    }
    model = build_model()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(
        columns, labels(space, seed)[:count], epochs=epochs, batch_size=256, verbose=0
    )
    export(model, directory)
    return model, float(history.history["accuracy"][-1])


def zipf_ranks(size: int, exponent: float, count: int, seed: int) -> Any:
    """``count`` draws of ranks 0..size-1 with P(rank r) ∝ (r+1)^-exponent."""
    import numpy as np

    weights = np.arange(1, size + 1, dtype="float64") ** -exponent
    return np.random.default_rng(seed).choice(size, size=count, p=weights / weights.sum())


# -- percentiles ----------------------------------------------------------------------------


def latency(timings: list[float]) -> dict[str, float | int]:
    if not timings:
        return {"requests": 0}
    ordered = sorted(timings)
    return {
        "requests": len(ordered),
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- processes ------------------------------------------------------------------------------


@contextlib.contextmanager
def managed(spec: Any, timeout: float) -> Iterator[Any]:
    from cascade.localcloud.processes import ManagedProcess

    process = ManagedProcess(spec)
    process.start()
    try:
        process.wait_ready(timeout)
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def popen(argv: list[str], env: dict[str, str], log: Path) -> Iterator[Any]:
    process = start(argv, env, log)
    try:
        yield process
    finally:
        stop(process)


def fake_gcs(port: int, env: dict[str, str], log: Path) -> Any:
    from cascade.localcloud.components import fake_gcs_binary

    argv = [str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)]
    argv += ["-backend", "memory", "-log-level", "error", "-public-host", f"127.0.0.1:{port}"]
    return popen(argv, env, log)


def write_serving_states(gcs_url: str, model_dir: Path) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from cascade.core.paths import DatasetPaths
    from cascade.serving.state import DeployedVersion, ServingState

    client = storage.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": gcs_url},
    )
    bucket = client.create_bucket("cascade-artifacts")
    now = datetime.now(UTC)
    for dataset, mode in ((DYNAMIC, "dynamic"), (HYBRID, "hybrid")):
        state = ServingState(
            dataset=dataset,
            target="local",
            endpoint=dataset,
            updated_at=now,
            mode=mode,  # type: ignore[arg-type]
            versions=[
                DeployedVersion(
                    version="1",
                    run_id="bench",
                    state="serving",
                    model_uri=str(model_dir),
                    deployed_at=now,
                )
            ],
            traffic={"1": 100},
        )
        bucket.blob(DatasetPaths(dataset).serving).upload_from_string(state.model_dump_json())


def serve_model() -> int:
    """``python -m cascade.serving``'s main, as the local cloud runs it: gunicorn, its
    options, workers started after the fork, the precomputed store (with its cache)
    from ``CASCADE_PRECOMPUTED_*``."""
    import cascade.serving.__main__ as entry

    return entry.main()


# -- 1. batch scoring -------------------------------------------------------------------------


INPUT_SCHEMA = [("key", "STRING"), ("age", "FLOAT64"), ("income", "FLOAT64")]
INPUT_SCHEMA += [("city", "STRING"), ("segment", "STRING")]


def input_table(client: Any, name: str, rows: list[dict[str, Any]]) -> str:
    import google.cloud.bigquery as bigquery

    from cascade.core.warehouse import insert_rows, table_id

    client.create_dataset(f"{client.project}.bench_input", exists_ok=True)
    table_name = table_id(client.project, "bench_input", name)
    schema = [bigquery.SchemaField(field, kind) for field, kind in INPUT_SCHEMA]
    table = client.create_table(bigquery.Table(table_name, schema=schema))
    for start_at in range(0, len(rows), 5000):
        insert_rows(client, table, rows[start_at : start_at + 5000])
    return table_name


class TimedServable:
    """The Servable, with the time spent in model calls added up."""

    def __init__(self, servable: Any) -> None:
        self._servable = servable
        self.model_s = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._servable, name)

    def predict_columns(self, checked: dict[str, list[Any]]) -> list[dict[str, Any]]:
        started = time.perf_counter()
        try:
            return self._servable.predict_columns(checked)  # type: ignore[no-any-return]
        finally:
            self.model_s += time.perf_counter() - started


class TimedSource:
    """A batch source, with the time spent producing its rows added up (the Storage Read
    API session, its Arrow record batches, and their conversion to Python rows)."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self.read_s = 0.0

    @property
    def identity(self) -> str:
        return self._source.identity  # type: ignore[no-any-return]

    @property
    def uri(self) -> str:
        return self._source.uri  # type: ignore[no-any-return]

    def rows(self) -> Iterator[Any]:
        rows = self._source.rows()
        while True:
            started = time.perf_counter()
            try:
                row = next(rows)
            except StopIteration:
                return
            finally:
                self.read_s += time.perf_counter() - started
            yield row


def timed_inserts(client: Any) -> Callable[[], float]:
    """Wrap the client's ``load_table_from_file`` (the load jobs score_source makes: the
    job's submission and, through its ``result``, its run) and return a reader of the
    seconds spent in them since the last read."""
    original = client.load_table_from_file
    spent = [0.0]

    def load_table_from_file(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            job = original(*args, **kwargs)
            job.result()
            return job
        finally:
            spent[0] += time.perf_counter() - started

    client.load_table_from_file = load_table_from_file

    def read() -> float:
        value, spent[0] = spent[0], 0.0
        return value

    return read


def batch_round(
    client: Any,
    table: str,
    servable: Any,
    round_index: int,
    insert_time: Callable[[], float],
    profile: Path | None = None,
) -> dict[str, Any]:
    """One ``score_source`` run, timed; under cProfile (written to ``profile``) when set:
    then its times include the profiler's overhead."""
    from cascade.batch.scoring import score_source
    from cascade.batch.sources import BigQueryTableSource
    from cascade.core.fakes import MemoryArtifactStore

    timed = TimedServable(servable)
    client.create_dataset(f"{client.project}.bench_predictions_{round_index}", exists_ok=True)
    insert_time()
    profiler = cProfile.Profile() if profile is not None else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    source = TimedSource(BigQueryTableSource(client, table))
    result = score_source(
        source=source,
        servable=timed,  # type: ignore[arg-type]
        dataset="bench-batch",
        client=client,
        artifacts=MemoryArtifactStore("cascade-artifacts"),  # a fresh manifest: no skip
        project=client.project,
        bq_dataset=f"bench_predictions_{round_index}",
    )
    if profiler is not None:
        profiler.disable()
    elapsed = time.perf_counter() - started
    if profiler is not None and profile is not None:
        profiler.dump_stats(profile)
    manifest = result.manifest
    if manifest.rows_scored != manifest.rows_read or manifest.rows_failed:
        raise RuntimeError(f"batch scored {manifest.rows_scored} of {manifest.rows_read} rows")
    written = client.query(f"SELECT COUNT(*) AS n FROM `{manifest.predictions_table}`").result()
    count = next(iter(written))["n"]
    if count != manifest.rows_read:
        raise RuntimeError(f"{count} predictions in BigQuery for {manifest.rows_read} rows")
    inserts = insert_time()
    return {
        "seconds": round(elapsed, 3),
        "rows_per_s": round(manifest.rows_read / elapsed, 1),
        "model_s": round(timed.model_s, 3),
        "bigquery_write_s": round(inserts, 3),
        "source_read_s": round(source.read_s, 3),
        "read_and_prepare_s": round(elapsed - timed.model_s - inserts, 3),
    }


def endpoint_row_by_row(port: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One client, one row per request, keep-alive; every answer checked."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}
    path = f"/v1/models/{DYNAMIC}:predict"
    timings = []
    started = time.perf_counter()
    for row in rows:
        sent = time.perf_counter()
        connection.request("POST", path, json.dumps({"instances": [row]}), headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status} from {path}: {body[:200]!r}")
        timings.append((time.perf_counter() - sent) * 1000)
    elapsed = time.perf_counter() - started
    connection.close()
    return {
        "rows": len(rows),
        "seconds": round(elapsed, 3),
        "rows_per_s": round(len(rows) / elapsed, 1),
        **{k: v for k, v in latency(timings).items() if k != "requests"},
    }


def in_memory(model: Any, servable: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    from cascade.serving import request_rules

    columns = {
        name: np.asarray(
            [row[name] for row in rows], dtype=object if name in ("city", "segment") else "float32"
        )
        for name in FEATURES
    }
    started = time.perf_counter()
    model.predict(columns, batch_size=1024, verbose=0)
    keras_s = time.perf_counter() - started
    started = time.perf_counter()
    checked = request_rules.columns(rows, servable.inputs)
    servable.predict_columns(checked)
    servable_s = time.perf_counter() - started
    return {
        "keras_predict_s": round(keras_s, 3),
        "keras_predict_rows_per_s": round(len(rows) / keras_s, 1),
        "servable_s": round(servable_s, 3),
        "servable_rows_per_s": round(len(rows) / servable_s, 1),
    }


def profile_summary(path: Path, top: int = 15) -> dict[str, Any]:
    """The functions of a profiled round that took the most time, themselves
    (``tottime``) and with what they called (``cumtime``), in seconds and shares."""
    import pstats

    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    entries = stats.stats  # type: ignore[attr-defined]

    def rows(index: int) -> list[dict[str, Any]]:
        # each entry: (file, line, name) -> (primitive calls, calls, tottime, cumtime, callers)
        ranked = sorted(entries.items(), key=lambda item: item[1][index], reverse=True)
        return [
            {
                "function": f"{Path(file).name}:{line}({name})",
                "calls": figures[1],
                "seconds": round(figures[index], 3),
                "share": round(figures[index] / total, 3),
            }
            for (file, line, name), figures in ranked[:top]
        ]

    return {"file": str(path), "total_s": round(total, 3), "tottime": rows(2), "cumtime": rows(3)}


# -- 2. head-key latency ----------------------------------------------------------------------


def load_head(client: Any, space: KeySpace, head: int, servable: Any, store: Any) -> dict[str, Any]:
    """The head scored by the batch path into BigQuery, its answers into Bigtable."""
    from cascade.batch.scoring import score_source
    from cascade.batch.sources import BigQueryTableSource
    from cascade.core.fakes import MemoryArtifactStore

    rows = [space.row(int(entity)) for entity in space.order[:head]]
    table = input_table(client, "head", rows)
    client.create_dataset(f"{client.project}.cascade_predictions", exists_ok=True)
    started = time.perf_counter()
    result = score_source(
        source=BigQueryTableSource(client, table),
        servable=servable,
        dataset=HYBRID,
        client=client,
        artifacts=MemoryArtifactStore("cascade-artifacts"),
        project=client.project,
        sink=store,
    )
    elapsed = time.perf_counter() - started
    if result.manifest.rows_stored != head:
        raise RuntimeError(f"{result.manifest.rows_stored} of {head} head answers stored")
    return {"keys": head, "seconds": round(elapsed, 3), "rows_stored": head}


def run_clients(
    port: int, dataset: str, bodies: list[str], heads: list[bool], clients: int
) -> dict[str, Any]:
    """``clients`` threads over the stream (thread i sends requests i, i+clients, ...);
    each answer's ``precomputed`` flag is recorded with its latency."""
    path = f"/v1/models/{dataset}:predict"
    results: list[list[tuple[float, bool, bool]]] = [[] for _ in range(clients)]
    errors: list[str] = []

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/json"}
        out = results[index]
        try:
            for position in range(index, len(bodies), clients):
                sent = time.perf_counter()
                connection.request("POST", path, bodies[position], headers)
                response = connection.getresponse()
                body = response.read()
                took = (time.perf_counter() - sent) * 1000
                if response.status != 200:
                    errors.append(f"HTTP {response.status}: {body[:200]!r}")
                    return
                precomputed = bool(json.loads(body)["precomputed"][0])
                out.append((took, heads[position], precomputed))
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{dataset}: {len(errors)} failed requests, first: {errors[0]}")
    flat = [item for items in results for item in items]
    return {"elapsed_s": elapsed, "answers": flat}


def summarize(mode: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    answers = [item for run in runs for item in run["answers"]]
    elapsed = sum(run["elapsed_s"] for run in runs)
    wrong = sum(
        1
        for _, head, precomputed in answers
        if precomputed != (head if mode == "hybrid" else False)
    )
    summary: dict[str, Any] = {
        "all": latency([took for took, _, _ in answers]),
        "head_keys": latency([took for took, head, _ in answers if head]),
        "tail_keys": latency([took for took, head, _ in answers if not head]),
        "requests_per_s": round(len(answers) / elapsed, 1),
        "precomputed_answers": sum(1 for _, _, p in answers if p),
        "wrong_precomputed_flags": wrong,
    }
    return summary


def measure_components(space: KeySpace, head: int, servable: Any, store: Any) -> dict[str, Any]:
    """What a head answer and a model answer cost, called directly (no HTTP), one at a
    time: the store's point read and the model on one row."""
    from cascade.serving import request_rules

    reads, cpu_started = [], time.process_time()
    count = min(head, 1000)
    for rank in range(count):
        key = space.key(int(space.order[rank]))
        started = time.perf_counter()
        if not store.read(HYBRID, "1", [key]):
            raise RuntimeError(f"head key {key} has no precomputed answer")
        reads.append((time.perf_counter() - started) * 1000)
    read_cpu = (time.process_time() - cpu_started) * 1000 / count
    predictions = []
    for rank in range(count):
        row = space.row(int(space.order[rank]))
        started = time.perf_counter()
        servable.predict_columns(request_rules.columns([row], servable.inputs))
        predictions.append((time.perf_counter() - started) * 1000)
    return {
        "store_read": latency(reads),
        "store_read_cpu_ms": round(read_cpu, 3),
        "model_one_row": latency(predictions),
    }


# -- 3. the advisor ---------------------------------------------------------------------------


def advisor(
    requests: int, high_cardinality: int, zipf_keys: int, seed: int
) -> list[dict[str, Any]]:
    import numpy as np

    from cascade.serving.plan import advise

    rng = np.random.default_rng(seed + 7)
    draws = {
        f"uniform over {high_cardinality:,} keys": rng.integers(0, high_cardinality, requests),
        f"Zipf 1.1 over {zipf_keys:,} keys": zipf_ranks(zipf_keys, 1.1, requests, seed + 8),
        "20 distinct keys (uniform)": rng.integers(0, 20, requests),
    }
    found = []
    for name, drawn in draws.items():
        keys, counts = np.unique(drawn, return_counts=True)
        started = time.perf_counter()
        plan = advise(
            {f"k{int(key)}": int(count) for key, count in zip(keys, counts, strict=True)},
            window_s=3600.0,
        )
        took = time.perf_counter() - started
        top1 = next(item for item in plan.peakedness if item.label == "top 1%")
        found.append(
            {
                "distribution": name,
                "requests": plan.requests,
                "distinct_keys_seen": plan.distinct_keys,
                "cardinality": plan.cardinality,
                "cardinality_source": plan.cardinality_source,
                "top_1pct_share": round(top1.share, 4),
                "mode": plan.mode,
                "head_keys": plan.head_keys,
                "head_share": round(plan.head_share, 4),
                "reason": plan.reason,
                "advise_s": round(took, 3),
            }
        )
    return found


# -- main -------------------------------------------------------------------------------------


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--rows", type=int, default=20_000, help="rows of the BigQuery table batch scores")
    add("--sample", type=int, default=2_000, help="rows sent to the endpoint one by one")
    add("--keys", type=int, default=100_000, help="distinct keys of the latency stream")
    add("--head", type=int, default=1_000, help="most requested keys precomputed (hybrid)")
    add("--zipf", type=float, default=1.1, help="Zipf exponent of the latency stream")
    add("--requests", type=int, default=6_000, help="requests per mode per latency round")
    add("--clients", type=int, default=8, help="concurrent clients (latency)")
    add("--rounds", type=int, default=3, help="alternating rounds of each measurement")
    add("--workers", type=int, default=2, help="gunicorn workers of the model server")
    add("--epochs", type=int, default=3, help="training epochs of the model")
    add("--advisor-requests", type=int, default=1_000_000, help="requests per distribution")
    add("--advisor-cardinality", type=int, default=10_000_000, help="keys of the uniform one")
    add("--advisor-zipf-keys", type=int, default=1_000_000, help="keys of the Zipf one")
    add("--seed", type=int, default=16)
    add("--output", type=Path, default=REPO / "bench/results/serving_modes.json")
    add(
        "--profile",
        type=Path,
        default=None,
        help="also run one batch round under cProfile; its stats to this file, a summary in "
        "the report",
    )
    add("--model-server", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def print_summary(report: dict[str, Any]) -> None:
    batch, lat = report["batch"], report["latency"]
    print(f"\nserving modes — {report['machine']}, {report['measured_at']}")
    print(f"model: {report['model']['description']}")
    print(f"\n1. batch scoring of {batch['rows']:,} rows (median of {len(batch['rounds'])} rounds)")
    print(f"  score_source, BigQuery → BigQuery  {batch['score_source_rows_per_s']:>10,.0f} rows/s")
    print(
        f"  online endpoint, row by row        {batch['endpoint_rows_per_s']:>10,.0f} rows/s"
        f"  ({batch['endpoint_sample_rows']:,}-row sample; the table would take "
        f"{batch['endpoint_extrapolated_s']:.0f} s)"
    )
    print(
        f"  Keras model.predict, in memory     {batch['keras_predict_rows_per_s']:>10,.0f} rows/s"
    )
    print(f"  Servable.predict_columns, in memory{batch['servable_rows_per_s']:>10,.0f} rows/s")
    print(
        f"  batch / row-by-row endpoint: {batch['batch_vs_endpoint']:.1f}x "
        f"(target ≥ 50x: {'met' if batch['target_met'] else 'NOT met'}); time in the local "
        f"BigQuery loads {batch['share_bigquery_insert']:.0%}, model "
        f"{batch['share_model']:.0%}, reading + preparing {batch['share_read_prepare']:.0%} "
        f"(of which the source's rows {batch['share_source_read']:.0%})"
    )
    if batch.get("profile"):
        profile = batch["profile"]
        print(f"  profiled round ({profile['total_s']:.2f} s under cProfile), most time in:")
        for entry in profile["tottime"][:10]:
            print(f"    {entry['share']:>5.0%} {entry['seconds']:>7.3f} s  {entry['function']}")
    print(
        f"\n2. latency, {lat['clients']} clients, Zipf {lat['zipf']} over {lat['keys']:,} keys, "
        f"head = top {lat['head']:,} keys ({lat['head_request_share']:.0%} of requests), "
        f"{lat['rounds']} rounds x {lat['requests_per_round']:,} requests per mode"
    )
    print(f"  {'path':<28}{'p50 ms':>9}{'p99 ms':>9}{'requests':>10}")
    rows = [
        ("hybrid, head (store)", lat["hybrid"]["head_keys"]),
        ("hybrid, tail (model)", lat["hybrid"]["tail_keys"]),
        ("hybrid, all", lat["hybrid"]["all"]),
        ("dynamic, all", lat["dynamic"]["all"]),
        ("dynamic, head keys", lat["dynamic"]["head_keys"]),
    ]
    one = lat["one_client"]
    rows += [
        ("one client: hybrid head", one["hybrid"]["head_keys"]),
        ("one client: dynamic", one["dynamic"]["all"]),
    ]
    for name, figures in rows:
        p50, p99, count = figures["p50_ms"], figures["p99_ms"], figures["requests"]
        print(f"  {name:<28}{p50:>9.2f}{p99:>9.2f}{count:>10,}")
    print(
        f"  throughput: hybrid {lat['hybrid']['requests_per_s']:,.0f} req/s, dynamic "
        f"{lat['dynamic']['requests_per_s']:,.0f} req/s; wrong precomputed flags: "
        f"{lat['hybrid']['wrong_precomputed_flags'] + lat['dynamic']['wrong_precomputed_flags']}"
    )
    print(
        f"  head p50 / dynamic p50: {lat['head_p50_vs_dynamic_p50']:.2f} (target < 1: "
        f"{'met' if lat['target_met'] else 'NOT met'})"
    )
    parts = lat["components"]
    print(
        f"  components, from this process, one at a time: store.read of one head key p50 "
        f"{parts['store_read']['p50_ms']:.2f} ms ({parts['store_read_cpu_ms']:.2f} ms CPU); "
        f"Servable.predict_columns of one row p50 {parts['model_one_row']['p50_ms']:.2f} ms"
    )
    print("\n3. advisor")
    print(f"  {'distribution':<32}{'cardinality':>13}{'top 1%':>8}  {'mode':<8}{'head keys':>11}")
    for item in report["advisor"]:
        print(
            f"  {item['distribution']:<32}{item['cardinality']:>13,}{item['top_1pct_share']:>8.0%}"
            f"  {item['mode']:<8}{item['head_keys']:>11,}"
        )
    print(f"\nwrote {report['output']}")


def main() -> int:
    options = parse()
    if options.model_server:
        return serve_model()
    import numpy as np

    from cascade.core.warehouse import make_bigquery_client
    from cascade.localcloud.bigquery_emulator import bigquery_spec
    from cascade.localcloud.bigtable_emulator import (
        LOCAL_BIGTABLE_INSTANCE,
        LOCAL_BIGTABLE_TABLE,
        bigtable_emulator_problem,
        bigtable_host,
        bigtable_spec,
        provision_bigtable,
    )
    from cascade.localcloud.local_settings import LocalCloudSettings
    from cascade.serving.precomputed import BigtableStore
    from cascade.serving.servable import load_servable

    problem = bigtable_emulator_problem()
    if problem:
        sys.stderr.write(problem + "\n")
        return 2
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="cascade-bench-serving-modes-"))
    space = KeySpace(max(options.keys, options.rows), options.seed)
    started_all = time.perf_counter()
    model, accuracy = train_and_export(
        space, options.rows, options.epochs, options.seed, work / "model"
    )
    servable = load_servable(
        work / "model", version="1", run_id="bench", model_uri=str(work / "model")
    )
    trained_s = time.perf_counter() - started_all

    gcs_port, server_port, bt_port = free_port(), free_port(), free_port()
    local = LocalCloudSettings(
        state_dir=work / "state",
        repo_root=REPO,
        project=PROJECT,
        bigquery_port=free_port(),
        bigquery_grpc_port=free_port(),
    )
    gcs_url = f"http://127.0.0.1:{gcs_port}"
    host = bigtable_host(local, bt_port)
    os.environ["BIGTABLE_EMULATOR_HOST"] = host  # the store in this process (head load)
    env = {
        **os.environ,
        "STORAGE_EMULATOR_HOST": gcs_url,
        "CASCADE_PROJECT": PROJECT,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CASCADE_SERVING_PORT": str(server_port),
        "CASCADE_SERVING_WORKERS": str(options.workers),
        "CASCADE_SERVING_CACHE_DIR": str(work / "cache"),
        "BIGTABLE_EMULATOR_HOST": host,
        "CASCADE_PRECOMPUTED_INSTANCE": LOCAL_BIGTABLE_INSTANCE,
        "CASCADE_PRECOMPUTED_TABLE": LOCAL_BIGTABLE_TABLE,
        "CASCADE_PRECOMPUTED_PROJECT": PROJECT,
    }
    with contextlib.ExitStack() as stack:
        stack.enter_context(fake_gcs(gcs_port, env, work / "gcs.log"))
        bigquery_process = stack.enter_context(
            managed(bigquery_spec(local, {"PATH": "/usr/bin:/bin"}), 60)
        )
        stack.enter_context(managed(bigtable_spec(local, dict(os.environ), port=bt_port), 30))
        provision_bigtable(local, port=bt_port)
        wait_http(f"{gcs_url}/storage/v1/b")
        write_serving_states(gcs_url, work / "model")
        stack.enter_context(
            popen([sys.executable, __file__, "--model-server"], env, work / "server.log")
        )
        client = make_bigquery_client(local.runtime_settings())
        stack.callback(client.close)
        store = BigtableStore(PROJECT, LOCAL_BIGTABLE_INSTANCE, LOCAL_BIGTABLE_TABLE)
        stack.callback(store.close)
        insert_time = timed_inserts(client)

        # 1. batch scoring ------------------------------------------------------------------
        table_rows = [space.row(entity) for entity in range(options.rows)]
        table = input_table(client, "instances", table_rows)
        insert_time()
        wait_http(f"http://127.0.0.1:{server_port}/healthz")
        sample = table_rows[:: max(1, options.rows // options.sample)][: options.sample]
        endpoint_row_by_row(server_port, sample[: min(200, len(sample))])  # warm-up
        batch_rounds = []
        for round_index in range(options.rounds):
            batch_rounds.append(
                {
                    "score_source": batch_round(client, table, servable, round_index, insert_time),
                    "endpoint_row_by_row": endpoint_row_by_row(server_port, sample),
                    "in_memory": in_memory(model, servable, table_rows),
                }
            )
            print(f"batch round {round_index + 1}: {json.dumps(batch_rounds[-1])}", flush=True)
        profiled = None
        if options.profile is not None:  # one more round, under cProfile, not in the medians
            batch_round(client, table, servable, options.rounds, insert_time, options.profile)
            profiled = profile_summary(options.profile)

        # 2. head-key latency ----------------------------------------------------------------
        head = load_head(client, space, options.head, servable, store)
        bigquery_process.stop()  # idle from here on: its memory back to the machine
        ranks = zipf_ranks(options.keys, options.zipf, options.requests, options.seed + 3)
        bodies = [json.dumps({"instances": [space.row(int(space.order[rank]))]}) for rank in ranks]
        heads = [bool(rank < options.head) for rank in ranks]
        warm = bodies[:WARMUP_REQUESTS]
        for dataset in (DYNAMIC, HYBRID):
            run_clients(server_port, dataset, warm, heads[:WARMUP_REQUESTS], options.clients)
        runs: dict[str, list[dict[str, Any]]] = {"dynamic": [], "hybrid": []}
        for round_index in range(options.rounds):
            order = ("dynamic", "hybrid") if round_index % 2 == 0 else ("hybrid", "dynamic")
            for mode in order:
                dataset = DYNAMIC if mode == "dynamic" else HYBRID
                runs[mode].append(run_clients(server_port, dataset, bodies, heads, options.clients))
                print(
                    f"latency round {round_index + 1} {mode}: {runs[mode][-1]['elapsed_s']:.1f}s",
                    flush=True,
                )

        one_client = {
            mode: run_clients(
                server_port,
                DYNAMIC if mode == "dynamic" else HYBRID,
                bodies[:1000],
                heads[:1000],
                1,
            )
            for mode in ("dynamic", "hybrid")
        }
        components = measure_components(space, options.head, servable, store)

        # 3. the advisor ---------------------------------------------------------------------
        plans = advisor(
            options.advisor_requests,
            options.advisor_cardinality,
            options.advisor_zipf_keys,
            options.seed,
        )

    # -- the report ---------------------------------------------------------------------------
    score = median([r["score_source"]["rows_per_s"] for r in batch_rounds])
    endpoint = median([r["endpoint_row_by_row"]["rows_per_s"] for r in batch_rounds])
    keras_rate = median([r["in_memory"]["keras_predict_rows_per_s"] for r in batch_rounds])
    servable_rate = median([r["in_memory"]["servable_rows_per_s"] for r in batch_rounds])
    total_s = sum(r["score_source"]["seconds"] for r in batch_rounds)
    shares = {
        name: sum(r["score_source"][field] for r in batch_rounds) / total_s
        for name, field in (
            ("share_bigquery_insert", "bigquery_write_s"),
            ("share_model", "model_s"),
            ("share_read_prepare", "read_and_prepare_s"),
            ("share_source_read", "source_read_s"),
        )
    }
    hybrid, dynamic = summarize("hybrid", runs["hybrid"]), summarize("dynamic", runs["dynamic"])
    head_ratio = hybrid["head_keys"]["p50_ms"] / dynamic["all"]["p50_ms"]
    report: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f} "
        "(the machine was shared with other sessions' tests)",
        "python": platform.python_version(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()},
        "model": {
            "description": "bench/serving.py's Keras model, trained "
            f"{options.epochs} epochs on {min(options.rows, space.size):,} generated rows "
            f"(training accuracy {accuracy:.3f}), exported with the serving signature",
            "train_and_export_s": round(trained_s, 1),
        },
        "batch": {
            "rows": options.rows,
            "rounds": batch_rounds,
            "score_source_rows_per_s": score,
            "endpoint_rows_per_s": endpoint,
            "endpoint_sample_rows": len(sample),
            "endpoint_extrapolated_s": round(options.rows / endpoint, 1),
            "keras_predict_rows_per_s": keras_rate,
            "servable_rows_per_s": servable_rate,
            "batch_vs_endpoint": round(score / endpoint, 1),
            "in_memory_servable_vs_batch": round(servable_rate / score, 1),
            **{name: round(value, 3) for name, value in shares.items()},
            "profile": profiled,
            "target": "score_source rows/s >= 50x the row-by-row endpoint",
            "target_met": score / endpoint >= 50,
        },
        "latency": {
            "clients": options.clients,
            "zipf": options.zipf,
            "keys": options.keys,
            "head": options.head,
            "head_load": head,
            "head_request_share": round(sum(heads) / len(heads), 4),
            "distinct_keys_in_stream": int(np.unique(ranks).size),
            "rounds": options.rounds,
            "requests_per_round": options.requests,
            "workers": options.workers,
            "hybrid": hybrid,
            "dynamic": dynamic,
            "head_p50_vs_dynamic_p50": round(head_ratio, 3),
            "one_client": {mode: summarize(mode, [run]) for mode, run in one_client.items()},
            "components": components,
            "target": "hybrid head-key p50 < dynamic p50",
            "target_met": head_ratio < 1
            and hybrid["wrong_precomputed_flags"] == 0
            and dynamic["wrong_precomputed_flags"] == 0,
        },
        "advisor": plans,
        "wall_s": round(time.perf_counter() - started_all, 1),
        "output": str(options.output.relative_to(REPO))
        if options.output.is_relative_to(REPO)
        else str(options.output),
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
