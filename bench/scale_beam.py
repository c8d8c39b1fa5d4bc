"""Validation statistics on Apache Beam vs in the function, for the same file (issue 17).

    .venv/bin/python bench/scale_beam.py [--rows 1000000] [--workers 1,2]
        [--memory-rows 1000000,4000000] [--cap-gib 2]

(also ``bench/scale.py --beam``). Generates a CSV of ``--rows`` rows (the 12 columns of
``bench/validation.py``: 4 integer, 4 float, 3 string, 1 boolean, missing values) and
measures, each in a fresh subprocess with its modules imported before the clock starts:

- **function**: ``compute_statistics`` (what the validate step runs in the function),
  in the project's venv (pyarrow 26);
- **beam**: ``cascade.beam.pipeline`` (ranges of 64 MiB summarised and merged by Beam)
  on Beam's FnApiRunner in .venv-beam (pyarrow 25), with ``--workers`` SDK workers
  (``--direct_num_workers``; more than one in ``multi_processing`` mode). The time
  includes building and running the pipeline (its fixed cost shows on small files).

Memory: each run's resident set, summed over the process and its descendants (Beam's
workers are processes), is sampled every 20 ms from ``/proc/<pid>/status`` (VmRSS) and
``/proc/<pid>/task/*/children``; a run whose total exceeds ``--cap-gib`` is killed
and reported as over the cap (an RSS cap without cgroups: ``prlimit --as`` caps
address space, which Arrow's and gRPC's reservations exhaust long before memory is
used). ``--memory-rows`` runs both paths on larger files of the same columns and
reports the peak each reached: the largest file each handled within the cap is the
largest size that stayed under it.

``--materialize`` measures the transform's materialisation instead: the same rows cut
into ``--files`` CSV files, landed in a fake-gcs-server of its own (the local cloud's
Cloud Storage), split into train/eval shards by ``write_split_shards`` (the transform
step's code, in the project's venv) and by ``python -m cascade.beam --mode=materialize``
(``cascade.beam.materialize``, FnApiRunner, ``--workers`` SDK workers: each file is a
unit of work). Both read and write through the emulator, so both pay its HTTP; the
rows/s are of rows written into shards. Recorded under ``materialize`` in the results,
one entry per size (the statistics figures already there are kept).

Results go to bench/results/scale_beam.json. Nothing here is asserted by a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "scale_beam.json"
FUNCTION_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
BEAM_PYTHON = REPO_ROOT / ".venv-beam" / "bin" / "python"
SAMPLE_S = 0.02
GIB = 1 << 30


# ------------------------------------------------------------------ children


def _child_function(data: Path) -> dict[str, Any]:
    from cascade.core.validation_config import ValidationConfig
    from cascade.validation.names import FileFormat
    from cascade.validation.source import DataSource
    from cascade.validation.statistics import compute_statistics

    config = ValidationConfig()
    source = DataSource.local_file(str(data), FileFormat.CSV)
    started = time.perf_counter()
    summary = compute_statistics(source, config)
    return {"seconds": time.perf_counter() - started, "rows": summary.num_examples}


def _child_beam(data: Path, workers: int, output: Path) -> dict[str, Any]:
    from cascade.beam.pipeline import run

    flags = [f"--direct_num_workers={workers}"]
    if workers > 1:
        flags.append("--direct_running_mode=multi_processing")
    started = time.perf_counter()
    run([f"--input={data}", "--file_format=csv", f"--output={output}", *flags])
    seconds = time.perf_counter() - started
    result = json.loads((output / "result.json").read_text())
    return {"seconds": seconds, "rows": result.get("num_examples", 0), "blocks": result["blocks"]}


BENCH_FEATURES = ["age", "income", "score", "balance", "rate", "late_payments", "city"]


def _bench_request(files: list[Any]) -> Any:
    from cascade.beam.materialize_request import MaterializeRequest
    from cascade.transform.newest import NEWEST_FILES_COLUMN
    from cascade.transform.spec import LabelSpec, NumericTransform, SplitSpec, VocabularyTransform

    numeric = [
        NumericTransform(name=name, mean=0.0, std=1.0, fill_value=0.0)
        for name in BENCH_FEATURES[:-1]
    ]
    city = VocabularyTransform(name="city", vocabulary=["paris", "oslo"])
    return MaterializeRequest(
        dataset="bench",
        run_id="bench",
        files=files,
        label=LabelSpec(name="defaulted", problem_type="regression"),
        features=[*numeric, city],
        passthrough_key=None,
        split=SplitSpec(eval_fraction=0.2, salt="bench"),
        newest=[files[-1]],
        newest_column=NEWEST_FILES_COLUMN,
    )


def _emulated_client() -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="local",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]},
    )


def _child_materialize_function(request_uri: str) -> dict[str, Any]:
    from cascade.beam.materialize_request import MaterializeRequest
    from cascade.core.store import ArtifactStore
    from cascade.transform.materialize import write_split_shards
    from cascade.transform.snapshot import GcsObjectOpener

    client = _emulated_client()
    bucket, _, name = request_uri.removeprefix("gs://").partition("/")
    request = MaterializeRequest.model_validate_json(
        client.bucket(bucket).blob(name).download_as_bytes()
    )
    started = time.perf_counter()
    shards = write_split_shards(
        ArtifactStore(client, "artifacts"),
        list(request.files),
        GcsObjectOpener(lambda landing: ArtifactStore(client, landing)),
        schema=request.row_schema(),
        split=request.split,
        folder="runs/bench/transform",
        config=request.validation,
        rows_per_shard=request.rows_per_shard,
        newest=list(request.newest),
        newest_column=request.newest_column,
    )
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": shards.train_rows + shards.eval_rows}


def _child_materialize_beam(request_uri: str, workers: int, output_uri: str) -> dict[str, Any]:
    from cascade.beam.materialize import run
    from cascade.beam.materialize_request import MaterializeResult

    flags = [f"--direct_num_workers={workers}"]
    if workers > 1:
        flags.append("--direct_running_mode=multi_processing")
    started = time.perf_counter()
    run([f"--request={request_uri}", f"--output={output_uri}", *flags])
    seconds = time.perf_counter() - started
    bucket, _, folder = output_uri.removeprefix("gs://").partition("/")
    stored = _emulated_client().bucket(bucket).blob(f"{folder}/result.json")
    result = MaterializeResult.model_validate_json(stored.download_as_bytes())
    if result.status != "ok":
        raise RuntimeError(result.message)
    return {"seconds": seconds, "rows": result.train_rows + result.eval_rows}


# ------------------------------------------------------------------ measuring


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and every descendant (0 once they are gone)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                pending.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return total


def _run_capped(command: list[str], cap_bytes: int) -> dict[str, Any]:
    """Run ``command`` (it prints one JSON line), killing it above ``cap_bytes`` of RSS."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        start_new_session=True,
    )
    peak = 0
    over = threading.Event()

    def sample() -> None:
        nonlocal peak
        while process.poll() is None:
            peak = max(peak, _tree_rss(process.pid))
            if peak > cap_bytes:
                over.set()
                os.killpg(process.pid, signal.SIGKILL)
                return
            time.sleep(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    sampler.join()
    if over.is_set():
        return {"over_cap": True, "peak_rss_mib": round(peak / 2**20)}
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {stderr[-3000:]}")
    measured: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    measured.update(over_cap=False, peak_rss_mib=round(peak / 2**20))
    measured["rows_per_s"] = round(measured["rows"] / measured["seconds"])
    return measured


def _function_run(data: Path, cap: int) -> dict[str, Any]:
    script = str(Path(__file__).resolve())
    return _run_capped([str(FUNCTION_PYTHON), script, "--child", "function", str(data)], cap)


def _beam_run(data: Path, workers: int, cap: int, workdir: Path) -> dict[str, Any]:
    script = str(Path(__file__).resolve())
    output = workdir / f"beam-out-{workers}-{time.monotonic_ns()}"
    command = [str(BEAM_PYTHON), script, "--child", "beam", str(data), str(workers), str(output)]
    return _run_capped(command, cap)


def _materialize(args: argparse.Namespace, cap: int, workers: list[int]) -> dict[str, Any]:
    """The materialisation of ``--rows`` rows in ``--files`` files, both paths."""
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import pyarrow.csv as pacsv
    from validation import generate_table

    from cascade.localcloud.components import standalone_fake_gcs
    from cascade.transform.spec import SnapshotFile

    root = args.workdir / f"gcs-{time.monotonic_ns()}"
    with standalone_fake_gcs(root, ("landing", "artifacts")) as url:
        os.environ["STORAGE_EMULATOR_HOST"] = url  # the children's client
        client = _emulated_client()
        files = []
        per_file = max(args.rows // args.files, 1)
        for index in range(args.files):
            sink = args.workdir / f"materialize-{index}.csv"
            options = pacsv.WriteOptions(quoting_style="needed")
            pacsv.write_csv(generate_table(per_file, seed=index + 1), sink, write_options=options)
            blob = client.bucket("landing").blob(f"bench/part-{index}.csv")
            blob.upload_from_filename(str(sink), timeout=600)
            files.append(
                SnapshotFile(uri=f"gs://landing/{blob.name}", generation=blob.generation, rows=0)
            )
        request = "dataflow/inputs/bench/materialize.json"
        client.bucket("artifacts").blob(request).upload_from_string(
            _bench_request(files).model_dump_json()
        )
        script = str(Path(__file__).resolve())
        request_uri = f"gs://artifacts/{request}"
        function = _run_capped(
            [str(FUNCTION_PYTHON), script, "--child", "materialize-function", request_uri], cap
        )
        beam = {
            str(count): _run_capped(
                [
                    str(BEAM_PYTHON),
                    script,
                    "--child",
                    "materialize-beam",
                    request_uri,
                    str(count),
                    f"gs://artifacts/dataflow/outputs/bench-{count}/transform",
                ],
                cap,
            )
            for count in workers
        }
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": os.getloadavg()[0],
        "rows": per_file * args.files,
        "files": args.files,
        "function": function,
        "beam": beam,
    }


def _prepare(workdir: Path, rows: int) -> Path:
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import pyarrow.csv as pacsv
    from validation import generate_table

    data = workdir / f"data-{rows}.csv"
    if not data.exists():
        options = pacsv.WriteOptions(quoting_style="needed")
        pacsv.write_csv(generate_table(rows, seed=1), data, write_options=options)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", default="1,2", help="Beam SDK workers to try")
    parser.add_argument("--memory-rows", default="", help="larger files for the memory sweep")
    parser.add_argument("--cap-gib", type=float, default=2.0)
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / "build" / "bench-beam")
    parser.add_argument("--materialize", action="store_true", help="the transform's split")
    parser.add_argument("--files", type=int, default=4, help="files of the materialisation")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, data, *rest = args.child
        if mode == "materialize-function":
            print(json.dumps(_child_materialize_function(data)))
        elif mode == "materialize-beam":
            print(json.dumps(_child_materialize_beam(data, int(rest[0]), rest[1])))
        elif mode == "function":
            print(json.dumps(_child_function(Path(data))))
        else:
            print(json.dumps(_child_beam(Path(data), int(rest[0]), Path(rest[1]))))
        return
    if not BEAM_PYTHON.exists():
        raise SystemExit(f"{BEAM_PYTHON} is missing: run `make setup`")
    args.workdir.mkdir(parents=True, exist_ok=True)
    cap = int(args.cap_gib * GIB)
    workers = [int(w) for w in args.workers.split(",") if w]
    if args.materialize:
        stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        measured = _materialize(args, cap, workers)
        runs = stored.get("materialize", {})
        runs = runs if "function" not in runs else {}  # a single run, as first recorded
        runs[f"{measured['rows']} rows in {args.files} files"] = measured
        stored["materialize"] = runs
        print(json.dumps(measured, indent=2))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(stored, indent=2) + "\n")
        return
    data = _prepare(args.workdir, args.rows)
    record: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": os.getloadavg()[0],
        "rows": args.rows,
        "file_mib": round(data.stat().st_size / 2**20, 1),
        "cap_gib": args.cap_gib,
        "function": _function_run(data, cap),
        "beam": {str(w): _beam_run(data, w, cap, args.workdir) for w in workers},
    }
    print(json.dumps(record, indent=2))
    sweep = [int(r) for r in args.memory_rows.split(",") if r]
    record["memory"] = []
    for rows in sweep:
        larger = _prepare(args.workdir, rows)
        entry = {
            "rows": rows,
            "file_mib": round(larger.stat().st_size / 2**20, 1),
            "function": _function_run(larger, cap),
            "beam": _beam_run(larger, max(workers), cap, args.workdir),
        }
        print(json.dumps(entry))
        record["memory"].append(entry)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
