"""Scale benchmarks of issue 17, in sections, one flag each.

``--files``: files/s accepted for ONE dataset with Cloud Storage's same-object write
limit modelled. fake-gcs-server runs behind the local cloud's front
(``cascade.localcloud.gcs_front``: a second mutation of one object name within a second
answers 429, as Cloud Storage does). Worker processes (standing in for function
instances) run the validate step's own code (``handle_object_finalized``) with the real
storage client against it; the main process lands small CSV files in the landing bucket
at a fixed rate (default 50/s) and hands each finalize event to a worker, redelivering
an event whose step raised (as Eventarc does, with backoff) up to 5 times. Counted per
mode: files landed, accepted, failed, redelivered, lost (accepted but missing from the
baseline's file count), the 429s the front answered, and land -> accepted latency.
Two modes in the same run, same files: ``compacted`` (the baseline as shipped:
per-file objects, compactions, HEAD) and ``single-object`` (the previous code: every
accepted file read-modify-writes ``baseline_stats.pb``).

What it does not include: the router, Pub/Sub and functions-framework between the
landing bucket and the step (``bench/event_latency.py`` measures those), and the steps
after validate.

``--streaming`` and ``--beam`` are provided by ``bench/scale_streaming.py`` and
``bench/scale_beam.py`` (run from here when present).

    .venv/bin/python bench/scale.py --files [--rate 50 --seconds 10 --workers 6]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import re
import runpy
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "scale.json"
REQUESTS_RESULTS = REPO_ROOT / "bench" / "results" / "scale_requests.json"
LANDING, ARTIFACTS = "cascade-landing", "cascade-artifacts"
MAX_DELIVERIES = 5
REDELIVERY_BACKOFF_S = 0.5
DRAIN_S = 120.0
"""How long after the last file landed the run waits for the workers to finish."""
MODES = ("compacted", "single-object")
SCOPES = ("step", "baseline")


# -- the local cloud's storage: fake-gcs-server behind the write-limit front ---------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ok(url: str, deadline_s: float = 30) -> None:
    import requests

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} never answered")


@contextlib.contextmanager
def limited_storage(work: Path, writes_per_s: float) -> Iterator[tuple[str, Path, str]]:
    """fake-gcs-server behind the front; yields (the URL clients use, the front's log,
    fake-gcs-server's own URL)."""
    from cascade.localcloud.components import fake_gcs_binary

    backend_port, front_port = _free_port(), _free_port()
    url = f"http://127.0.0.1:{front_port}"
    front_log = work / "front.log"
    with contextlib.ExitStack() as stack:
        gcs_out = stack.enter_context((work / "gcs.log").open("wb"))
        front_out = stack.enter_context(front_log.open("wb"))
        backend = subprocess.Popen(
            [
                str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1",
                "-port", str(backend_port), "-backend", "memory",
                "-public-host", f"127.0.0.1:{front_port}", "-external-url", url,
                "-log-level", "error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=gcs_out,
        )  # fmt: skip
        front = subprocess.Popen(
            [
                sys.executable, "-m", "cascade.localcloud.gcs_front", "--port", str(front_port),
                "--backend", f"http://127.0.0.1:{backend_port}",
                "--writes-per-s", str(writes_per_s),
            ],
            stderr=front_out,
        )  # fmt: skip
        try:
            _wait_ok(f"{url}/storage/v1/b")
            yield url, front_log, f"http://127.0.0.1:{backend_port}"
        finally:
            for process in (front, backend):
                process.terminate()
                process.wait(10)


# -- the previous baseline code (one object, read-modify-write per accepted file) ------


class SingleObjectBaselineStore:
    """The baseline as it was before issue 17 (``git show 984080d:shared/src/cascade/
    validation/baseline_store.py``), reduced to what the validate step calls."""

    def __init__(self, artifacts: Any, dataset: str) -> None:
        from cascade.core.paths import DatasetPaths

        self._artifacts = artifacts
        self._name = DatasetPaths(dataset).baseline_stats
        self.uri = artifacts.uri(self._name)

    def load(self, schema: Any = None, config: Any = None) -> Any:
        from cascade.validation.anomalies import Baseline

        stored = self._artifacts.read(self._name, metadata=True)
        if stored is None:
            return None
        summary = _decode(stored.data)
        files = int(stored.metadata.get("cascade-files") or 1)
        return _Loaded(Baseline(summary=summary, files=files), files)

    def merge_file(self, file_id: str, summary: Any, config: Any, *, schema: Any) -> bool:
        from cascade.core.store import Payload
        from cascade.validation.schema import restricted_to_schema
        from cascade.validation.statistics import statistics_proto

        @dataclass(frozen=True)
        class Value:
            summary: Any
            files: int
            recent: tuple[str, ...]

        class Codec:
            reads_metadata = True

            def decode(self, stored: Any) -> Value:
                recent = tuple(str(stored.metadata.get("cascade-recent-files", "")).split())
                files = int(stored.metadata.get("cascade-files") or 1)
                return Value(_decode(stored.data), files, recent)

            def encode(self, value: Value) -> Any:
                proto = statistics_proto(value.summary, config, name="baseline")
                metadata = {
                    "cascade-files": str(value.files),
                    "cascade-recent-files": " ".join(value.recent),
                }
                return Payload(proto.SerializeToString(), "application/x-protobuf", metadata)

        restricted = restricted_to_schema(summary, schema)

        def merge(current: Value | None) -> Value | None:
            if current is None:
                return Value(restricted.compacted(config.max_tracked_values), 1, (file_id,))
            if file_id in current.recent:
                return None
            merged = restricted_to_schema(current.summary, schema).merged(
                restricted, config.max_tracked_values
            )
            recent = (*current.recent, file_id)[-128:]
            return Value(merged.compacted(config.max_tracked_values), current.files + 1, recent)

        return bool(self._artifacts.update(self._name, Codec(), merge).written)

    def compact(self, *args: Any, **kwargs: Any) -> None:
        """The previous code had no compaction."""


@dataclass(frozen=True)
class _Loaded:
    baseline: Any
    files: int


def _decode(data: bytes) -> Any:
    from cascade.validation.statistics import summary_of_statistics
    from cascade.validation.tfmd import statistics_pb2

    statistics_list = statistics_pb2.DatasetFeatureStatisticsList()
    statistics_list.ParseFromString(data)
    return summary_of_statistics(statistics_list)


# -- the workers: the validate step, one process per function instance --------------------

_CONTEXT: Any = None
_CLIENT: Any = None


def _worker_start(storage_url: str, mode: str) -> None:
    os.environ["STORAGE_EMULATOR_HOST"] = storage_url
    from cascade.core.claims import ClaimStore
    from cascade.core.clients import make_storage_client
    from cascade.core.context import StepContext
    from cascade.core.fakes import RecordingBus
    from cascade.core.runs import RunLedger
    from cascade.core.settings import Settings
    from cascade.core.store import ArtifactStore
    from cascade.validation.baseline_store import BaselineStore

    global _STORE_CLASS
    _STORE_CLASS = BaselineStore
    if mode == "single-object":
        import cascade.steps.validate as validate_step

        validate_step.BaselineStore = SingleObjectBaselineStore  # type: ignore[misc,assignment]
        _STORE_CLASS = SingleObjectBaselineStore
    settings = Settings(
        landing_bucket=LANDING, artifacts_bucket=ARTIFACTS, storage_emulator_host=storage_url
    )
    client = make_storage_client(settings)
    artifacts = ArtifactStore(client, ARTIFACTS)
    global _CONTEXT, _CLIENT
    _CLIENT = client
    _CONTEXT = StepContext(
        settings=settings,
        artifacts=artifacts,
        ledger=RunLedger(artifacts),
        claims=ClaimStore(artifacts),
        bus=RecordingBus(),
        open_store=lambda bucket: ArtifactStore(client, bucket),
    )


_SCHEMA: Any = None
_STORE_CLASS: Any = None


def _baseline_only(event_fields: Mapping[str, Any]) -> tuple[str, str, float]:
    """What the validate step does with the baseline for one accepted file: read it (the
    file is judged against it), record the file's statistics, compact when due."""
    import io

    from cascade.core.validation_config import ValidationConfig
    from cascade.validation.names import file_format_of
    from cascade.validation.schema import infer_schema
    from cascade.validation.source import DataSource
    from cascade.validation.statistics import compute_statistics

    global _SCHEMA
    name = str(event_fields["name"])
    try:
        data = _CONTEXT.landing_store().read(name).data
        config = ValidationConfig()
        source = DataSource(
            uri=f"gs://{LANDING}/{name}",
            file_format=file_format_of(name),
            size=len(data),
            open=lambda: io.BytesIO(data),
        )
        summary = compute_statistics(source, config)
        if _SCHEMA is None:
            _SCHEMA = infer_schema(summary, config)
        store = _STORE_CLASS(_CONTEXT.artifacts, name.split("/", 1)[0])
        store.load(_SCHEMA, config)
        store.merge_file(
            name.rsplit("/", 1)[1].removesuffix(".csv"), summary, config, schema=_SCHEMA
        )
        store.compact(config, schema=_SCHEMA, is_accepted=lambda _file_id: True)
    except Exception as error:  # noqa: BLE001 - the event is redelivered, as Eventarc does
        return "raised", f"{type(error).__name__}: {error}"[:300], time.time()
    return "succeeded", "", time.time()


def _validate(event_fields: Mapping[str, Any]) -> tuple[str, str, float]:
    from cascade.core.events import StorageObjectEvent
    from cascade.steps.validate import handle_object_finalized

    try:
        outcome = handle_object_finalized(_CONTEXT, StorageObjectEvent(**event_fields))
    except Exception as error:  # noqa: BLE001 - the event is redelivered, as Eventarc does
        return "raised", f"{type(error).__name__}: {error}"[:300], time.time()
    if outcome is None:
        return "none", "", time.time()
    return outcome.state, outcome.summary[:300], time.time()


# -- the load -------------------------------------------------------------------------------


def _csv(index: int, rows: int) -> bytes:
    """A small file, its content unique to ``index`` (an identical file would be accepted
    as a duplicate and add nothing to the baseline)."""
    lines = ["amount,age,city"]
    for row in range(rows):
        value = (index * 31 + row * 7) % 97
        lines.append(f"{value + index / 1000:.3f},{18 + value % 50},c{value % 5}")
    return ("\n".join(lines) + "\n").encode()


@dataclass
class _FileState:
    event: dict[str, Any]
    landed_at: float
    deliveries: int = 0
    state: str = ""
    detail: str = ""
    done_at: float = 0.0
    errors: list[str] = field(default_factory=list)


def run_files(
    mode: str,
    scope: str,
    *,
    rate: float,
    seconds: float,
    workers: int,
    rows: int,
    writes_per_s: float,
) -> dict[str, Any]:
    import google.cloud.storage as storage
    from google.auth.credentials import AnonymousCredentials

    dataset = "scale" if mode == "compacted" else "scaleold"
    with tempfile.TemporaryDirectory(prefix="scale-files-") as folder:
        work = Path(folder)
        with limited_storage(work, writes_per_s) as (url, front_log, _backend):
            os.environ["STORAGE_EMULATOR_HOST"] = url
            client = storage.Client(project="bench", credentials=AnonymousCredentials())
            for bucket in (LANDING, ARTIFACTS):
                client.create_bucket(bucket)
            landing = client.bucket(LANDING)
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers, initializer=_worker_start, initargs=(url, mode)) as pool:
                pool.map(time.sleep, [0.2] * workers)  # every worker imported and ready
                task = _validate if scope == "step" else _baseline_only
                files = _drive(pool, task, landing, dataset, rate=rate, seconds=seconds, rows=rows)
            baseline_files = _baseline_files(mode, url, dataset)
            log = front_log.read_text()
            rejections = log.count("429 rateLimitExceeded")
            hot = _hot_objects(log)
    summary = _summary(mode, files, baseline_files, rejections, rate=rate, seconds=seconds)
    summary["scope"] = scope
    summary["http_429_by_object"] = hot
    return summary


def _hot_objects(log: str) -> dict[str, int]:
    """The objects the front answered 429 for, most refused first (dataset and run names
    replaced by placeholders so that one kind of object counts once)."""
    counts: dict[str, int] = {}
    for line in log.splitlines():
        if "429 rateLimitExceeded:" in line:
            name = line.split("429 rateLimitExceeded:", 1)[1].strip()
            name = re.sub(r"scale(old)?-[0-9a-f]{16}", "<run>", name)
            name = re.sub(r"/scale(old)?/", "/<dataset>/", name)
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1])[:10])


def _drive(
    pool: Any,
    task: Any,
    landing: Any,
    dataset: str,
    *,
    rate: float,
    seconds: float,
    rows: int,
) -> list[_FileState]:
    total = int(rate * seconds)
    files: list[_FileState] = []
    pending: dict[int, Any] = {}
    retry_at: dict[int, float] = {}
    start = time.monotonic()
    wall_start = time.time()
    index = 0
    deadline = start + seconds + DRAIN_S
    while time.monotonic() < deadline:
        now = time.monotonic()
        while index < total and now >= start + index / rate:
            blob = landing.blob(f"{dataset}/part-{index:05d}.csv")
            blob.upload_from_string(_csv(index, rows), content_type="text/csv")
            event = {
                "event_id": f"e{index}",
                "bucket": LANDING,
                "name": blob.name,
                "generation": int(blob.generation),
                "size": int(blob.size or 0),
            }
            files.append(_FileState(event, wall_start + (now - start)))
            files[-1].deliveries = 1
            pending[index] = pool.apply_async(task, (event,))
            index += 1
            now = time.monotonic()
        for number, result in list(pending.items()):
            if not result.ready():
                continue
            del pending[number]
            state, detail, done_at = result.get()
            file = files[number]
            if state == "raised" and file.deliveries < MAX_DELIVERIES:
                file.errors.append(detail)
                retry_at[number] = now + REDELIVERY_BACKOFF_S * 2 ** (file.deliveries - 1)
                continue
            file.state, file.detail, file.done_at = state, detail, done_at
        for number, at in list(retry_at.items()):
            if now >= at:
                del retry_at[number]
                files[number].deliveries += 1
                pending[number] = pool.apply_async(task, (files[number].event,))
        if index >= total and not pending and not retry_at:
            break
        time.sleep(0.002)
    return files


def _baseline_files(mode: str, url: str, dataset: str) -> int:
    os.environ["STORAGE_EMULATOR_HOST"] = url
    from cascade.core.clients import make_storage_client
    from cascade.core.settings import Settings
    from cascade.core.store import ArtifactStore
    from cascade.validation.baseline_store import BaselineStore

    artifacts = ArtifactStore(make_storage_client(Settings(storage_emulator_host=url)), ARTIFACTS)
    store: Any = (
        BaselineStore(artifacts, dataset)
        if mode == "compacted"
        else SingleObjectBaselineStore(artifacts, dataset)
    )
    loaded = store.load()
    return 0 if loaded is None else int(loaded.files)


def _summary(
    mode: str,
    files: list[_FileState],
    baseline_files: int,
    rejections: int,
    *,
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    accepted = [file for file in files if file.state == "succeeded"]
    failed = [file for file in files if file.state not in ("succeeded", "")]
    unfinished = [file for file in files if file.state == ""]
    latencies = sorted(file.done_at - file.landed_at for file in accepted)
    span = max((file.done_at for file in accepted), default=0) - min(
        (file.landed_at for file in files), default=0
    )
    redelivered = sum(file.deliveries - 1 for file in files)
    errors = [error for file in files for error in file.errors]
    return {
        "mode": mode,
        "offered_files_per_s": rate,
        "seconds": seconds,
        "landed": len(files),
        "accepted": len(accepted),
        "failed_runs": len(failed),
        "unfinished": len(unfinished),
        "lost": max(0, len(accepted) - baseline_files),
        "baseline_files": baseline_files,
        "recorded_but_unfinished": max(0, baseline_files - len(accepted)),
        "redeliveries": redelivered,
        "http_429_answered": rejections,
        "accepted_per_s": round(len(accepted) / span, 1) if span > 0 else 0.0,
        "latency_s": {
            "p50": round(statistics.median(latencies), 3) if latencies else None,
            "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 3) if latencies else None,
            "max": round(latencies[-1], 3) if latencies else None,
        },
        "failures": sorted({file.detail for file in failed})[:5],
        "step_errors": sorted(set(errors))[:5],
    }


def front_overhead(requests_each: int = 300) -> dict[str, Any]:
    """Per-request latency of small uploads and downloads through the front vs straight
    to fake-gcs-server, same process, same objects names pattern (distinct names, so
    the limit never refuses)."""
    import google.cloud.storage as storage
    from google.auth.credentials import AnonymousCredentials

    figures: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="scale-front-") as folder,
        limited_storage(Path(folder), 1.0) as (url, _log, backend),
    ):
        for label, target in (("direct", backend), ("front", url)):
            os.environ["STORAGE_EMULATOR_HOST"] = target
            client = storage.Client(project="bench", credentials=AnonymousCredentials())
            bucket = client.bucket(f"overhead-{label}")
            client.create_bucket(bucket.name)
            payload = b"x" * 2048
            uploads, downloads = [], []
            for index in range(requests_each):
                blob = bucket.blob(f"o/{index}")
                began = time.perf_counter()
                blob.upload_from_string(payload)
                uploads.append(time.perf_counter() - began)
                began = time.perf_counter()
                bucket.blob(f"o/{index}").download_as_bytes()
                downloads.append(time.perf_counter() - began)
            big = os.urandom(32 * 1024 * 1024)
            began = time.perf_counter()
            bucket.blob("big").upload_from_string(big)
            bucket.blob("big").download_as_bytes()
            figures[label] = {
                "upload_p50_ms": round(1000 * statistics.median(uploads), 2),
                "download_p50_ms": round(1000 * statistics.median(downloads), 2),
                "32mib_up_and_down_s": round(time.perf_counter() - began, 2),
            }
    return figures


def _object_kind(method: str, url: str) -> str:
    """``GET runs/<run>/claims/validate.json``: one kind of request per object kind."""
    from urllib.parse import unquote, urlsplit

    path = unquote(urlsplit(url).path)
    path = re.sub(r"^/(upload|download)?/?storage/v1/b/", "", path)
    path = re.sub(r"scale(old)?-[0-9a-f]{16}", "<run>", path)
    path = re.sub(r"\b[0-9]{16}-<run>", "<key>-<run>", path)
    path = re.sub(r"part-[0-9]{5}\.csv", "<file>.csv", path)
    path = re.sub(r"accepted-content/[0-9a-f]{64}", "accepted-content/<digest>", path)
    path = re.sub(r"compactions/[0-9]{12}-[0-9a-f]{8}", "compactions/<n>", path)
    path = re.sub(r"/scale/", "/<dataset>/", path)
    return f"{method.upper()} {path}"


def requests_per_file(files: int = 100, rows: int = 20) -> dict[str, Any]:
    """The validate step one file at a time through the front (no contention): every
    request its storage client sends, from any thread, per accepted file; and the
    step's wall time and CPU per file (this process: the step and its client)."""
    import google.cloud.storage as storage
    from google.auth.credentials import AnonymousCredentials

    from cascade.core.events import StorageObjectEvent
    from cascade.steps.validate import handle_object_finalized

    with (
        tempfile.TemporaryDirectory(prefix="scale-requests-") as folder,
        limited_storage(Path(folder), 1000.0) as (url, _log, _backend),
    ):
        os.environ["STORAGE_EMULATOR_HOST"] = url
        client = storage.Client(project="bench", credentials=AnonymousCredentials())
        for bucket in (LANDING, ARTIFACTS):
            client.create_bucket(bucket)
        landing = client.bucket(LANDING)
        events = []
        for index in range(files + 5):
            blob = landing.blob(f"scale/part-{index:05d}.csv")
            blob.upload_from_string(_csv(index, rows), content_type="text/csv")
            events.append(
                StorageObjectEvent(
                    event_id=f"e{index}",
                    bucket=LANDING,
                    name=blob.name,
                    generation=int(blob.generation),
                    size=int(blob.size or 0),
                )
            )
        _worker_start(url, "compacted")
        for event in events[:5]:  # the dataset's first files: schema, first compaction
            handle_object_finalized(_CONTEXT, event)
        sent: list[str] = []
        session = _CLIENT._http
        send = session.request

        def recording(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            sent.append(_object_kind(method, url))
            return send(method, url, *args, **kwargs)

        session.request = recording
        began, cpu = time.perf_counter(), time.process_time()
        for event in events[5:]:
            outcome = handle_object_finalized(_CONTEXT, event)
            assert outcome is not None
            assert outcome.state == "succeeded", outcome.summary
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        session.request = send
    kinds: dict[str, int] = {}
    for kind in sent:
        kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "files": files,
        "requests_per_file": round(len(sent) / files, 1),
        "by_method": {
            method: round(sum(n for k, n in kinds.items() if k.startswith(method)) / files, 2)
            for method in ("GET", "POST", "DELETE")
        },
        "by_kind": {
            kind: round(count / files, 2)
            for kind, count in sorted(kinds.items(), key=lambda item: -item[1])
        },
        "wall_ms_per_file": round(1000 * wall / files, 1),
        "cpu_ms_per_file": round(1000 * cpu / files, 1),
    }


# -- the sections ---------------------------------------------------------------------------


def files_section(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"front_overhead": front_overhead()}
    print(json.dumps(results["front_overhead"], indent=2))
    results["requests_per_file"] = requests_per_file(rows=args.rows)
    print(json.dumps(results["requests_per_file"], indent=2))
    if args.requests_only:
        return results
    for scope in args.scopes.split(","):
        for mode in args.modes.split(","):
            if mode not in MODES or scope not in SCOPES:
                raise SystemExit(f"--modes {MODES}, --scopes {SCOPES}: not {mode!r}/{scope!r}")
            print(f"files: {scope}, {mode}: {args.rate}/s for {args.seconds} s")
            results[f"{scope}/{mode}"] = found = run_files(
                mode,
                scope,
                rate=args.rate,
                seconds=args.seconds,
                workers=args.workers,
                rows=args.rows,
                writes_per_s=args.writes_per_s,
            )
            print(json.dumps(found, indent=2))
    return results


def _external_section(name: str, argv: list[str]) -> None:
    script = REPO_ROOT / "bench" / f"scale_{name}.py"
    if not script.is_file():
        print(f"--{name}: {script.relative_to(REPO_ROOT)} is not here yet")
        return
    saved = sys.argv
    sys.argv = [str(script), *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", action="store_true", help="files/s for one dataset")
    parser.add_argument("--streaming", action="store_true", help="bench/scale_streaming.py")
    parser.add_argument("--beam", action="store_true", help="bench/scale_beam.py")
    parser.add_argument("--rate", type=float, default=50.0, help="files landed a second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=6, help="validate step processes")
    parser.add_argument("--rows", type=int, default=20, help="rows per file")
    parser.add_argument("--writes-per-s", type=float, default=1.0, help="per object name")
    parser.add_argument(
        "--requests-only",
        action="store_true",
        help="with --files: only the requests one validate step sends per file",
    )
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument(
        "--scopes",
        default=",".join(SCOPES),
        help="step: the whole validate step; baseline: only its baseline reads and writes",
    )
    args, rest = parser.parse_known_args()
    if not (args.files or args.streaming or args.beam):
        parser.error("name a section: --files, --streaming or --beam")
    record: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }
    if args.files:
        record["files"] = files_section(args)
        out = REQUESTS_RESULTS if args.requests_only else RESULTS
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {out.relative_to(REPO_ROOT)}")
    if args.streaming:
        _external_section("streaming", rest)
    if args.beam:
        _external_section("beam", rest)


if __name__ == "__main__":
    main()
