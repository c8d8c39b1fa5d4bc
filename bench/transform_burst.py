"""A burst of files for one dataset through validate AND transform: transforms handed
over to a later one (``cascade.transform.coalesce``) against every file transformed by
its own run, on the same files in the same run.

The storage is ``bench/scale.py``'s: fake-gcs-server behind the local cloud's front with
Cloud Storage's one-write-a-second-per-object limit. Worker processes (function
instances) each take one landed file's event and run the validate step's own code, then,
when the file is accepted, the transform step's (``handle_data_validated``), as the
chain would on the ``data-validated`` message; a step that raises is redelivered (up to
5 times, with backoff). Files land at ``--rate`` a second for ``--seconds``.

Counted per mode: files landed and accepted, transforms materialised, landed files read
by transforms (the sum of the materialised snapshots: the work that grows with the
square of a burst), runs failed, 429s answered, wall time from the first landing to the
last step's end, and whether the dataset's latest transform holds every accepted file
(nothing lost). Mode ``own-run`` is the code without hand-over (no run may hand over).

    .venv/bin/python bench/transform_burst.py [--rate 10 --seconds 6 --workers 4 --rows 200]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale  # bench/scale.py: the limited storage and the workers' context

RESULTS = scale.REPO_ROOT / "bench" / "results" / "transform_burst.json"
MODES = ("handover", "own-run")
CONFIG = "label: city\nproblem_type: multiclass\ntransform: {eval_fraction: 0.2}\n"


def _worker_start(storage_url: str, mode: str) -> None:
    scale._worker_start(storage_url, "compacted")
    if mode == "own-run":
        import cascade.steps.transform as transform_step

        transform_step._may_hand_over = lambda _ctx, _run, _config: False  # type: ignore[attr-defined]


def _validate(event_fields: dict[str, Any]) -> tuple[str, str, float, str]:
    """The validate step; its data-validated message (JSON) when the file was accepted."""
    from cascade.core.events import StorageObjectEvent
    from cascade.core.messages import DataValidated
    from cascade.steps.validate import handle_object_finalized

    try:
        outcome = handle_object_finalized(scale._CONTEXT, StorageObjectEvent(**event_fields))
    except Exception as error:  # noqa: BLE001 - redelivered, as Eventarc does
        return "raised", f"{type(error).__name__}: {error}"[:300], time.time(), ""
    if outcome is None:
        return "none", "", time.time(), ""
    messages = [m for m in outcome.messages if isinstance(m, DataValidated)]
    message = messages[0].model_dump_json() if messages else ""
    return outcome.state, outcome.summary[:300], time.time(), message


def _transform(message_json: str) -> tuple[str, str, float, str]:
    from cascade.core.messages import DataValidated
    from cascade.steps.transform import handle_data_validated

    message = DataValidated.model_validate_json(message_json)
    try:
        outcome = handle_data_validated(scale._CONTEXT, message, event_id=f"t-{message.run_id}")
    except Exception as error:  # noqa: BLE001 - redelivered, as Pub/Sub does
        return "raised", f"{type(error).__name__}: {error}"[:300], time.time(), ""
    if outcome is None:
        return "none", "", time.time(), ""
    handed = str(outcome.outputs.get("transform_coalesced_into", ""))
    return outcome.state, outcome.summary[:300], time.time(), handed


class _Task:
    def __init__(self, stage: str, payload: Any) -> None:
        self.stage, self.payload = stage, payload
        self.deliveries = 1
        self.result: tuple[str, str, float, str] | None = None


def _drive(pool: Any, landing: Any, dataset: str, args: argparse.Namespace) -> list[_Task]:
    total = int(args.rate * args.seconds)
    tasks: list[_Task] = []
    pending: dict[int, Any] = {}
    retry_at: dict[int, float] = {}
    start = time.monotonic()
    landed = 0
    deadline = start + args.seconds + scale.DRAIN_S * 3

    def submit(number: int) -> None:
        task = tasks[number]
        work = _validate if task.stage == "validate" else _transform
        pending[number] = pool.apply_async(work, (task.payload,))

    while time.monotonic() < deadline:
        now = time.monotonic()
        while landed < total and now >= start + landed / args.rate:
            blob = landing.blob(f"{dataset}/part-{landed:05d}.csv")
            blob.upload_from_string(scale._csv(landed, args.rows), content_type="text/csv")
            event = {
                "event_id": f"{dataset}-e{landed}",
                "bucket": scale.LANDING,
                "name": blob.name,
                "generation": int(blob.generation),
                "size": int(blob.size or 0),
            }
            tasks.append(_Task("validate", event))
            submit(len(tasks) - 1)
            landed += 1
        for number, result in list(pending.items()):
            if not result.ready():
                continue
            del pending[number]
            task = tasks[number]
            state, detail, done_at, extra = result.get()
            if state == "raised" and task.deliveries < scale.MAX_DELIVERIES:
                retry_at[number] = now + scale.REDELIVERY_BACKOFF_S * 2 ** (task.deliveries - 1)
                continue
            task.result = (state, detail, done_at, extra)
            if task.stage == "validate" and extra:
                tasks.append(_Task("transform", extra))
                submit(len(tasks) - 1)
        for number, at in list(retry_at.items()):
            if now >= at:
                del retry_at[number]
                tasks[number].deliveries += 1
                submit(number)
        if landed >= total and not pending and not retry_at:
            break
        time.sleep(0.002)
    return tasks


def _materialised(url: str, dataset: str) -> dict[str, Any]:
    """Transforms written for ``dataset``, the landed files they read, and whether the
    latest transform holds every accepted file."""
    os.environ["STORAGE_EMULATOR_HOST"] = url
    from cascade.core.clients import make_storage_client
    from cascade.core.paths import DatasetPaths
    from cascade.core.settings import Settings
    from cascade.core.store import ArtifactStore
    from cascade.transform.catalog import latest_transform, read_transform
    from cascade.transform.snapshot import accepted_files

    settings = Settings(storage_emulator_host=url)
    store = ArtifactStore(make_storage_client(settings), scale.ARTIFACTS)
    specs = [
        name.split("/")[1]
        for name in store.list_names("runs/")
        if name.endswith("/transform/transform.json") and name.split("/")[1].startswith(dataset)
    ]
    read = sum(len(spec.snapshot) for run in specs if (spec := read_transform(store, run)))
    accepted = {(f.uri, f.generation) for f in accepted_files(store, dataset)}
    latest = latest_transform(store, dataset)
    final = read_transform(store, latest.run_id) if latest is not None else None
    held = {(f.uri, f.generation) for f in final.snapshot} if final is not None else set()
    del DatasetPaths
    return {
        "transforms_materialised": len(specs),
        "landed_files_read_by_transforms": read,
        "accepted": len(accepted),
        "latest_transform_holds_every_accepted_file": accepted <= held,
        "lost": len(accepted - held),
    }


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    import google.cloud.storage as storage
    from google.auth.credentials import AnonymousCredentials

    dataset = "burst" if mode == "handover" else "burstown"
    with tempfile.TemporaryDirectory(prefix="transform-burst-") as folder:
        work = Path(folder)
        with scale.limited_storage(work, args.writes_per_s) as (url, front_log, _backend):
            os.environ["STORAGE_EMULATOR_HOST"] = url
            client = storage.Client(project="bench", credentials=AnonymousCredentials())
            for bucket in (scale.LANDING, scale.ARTIFACTS):
                client.create_bucket(bucket)
            config = client.bucket(scale.ARTIFACTS).blob(f"datasets/{dataset}/pipeline.yaml")
            config.upload_from_string(CONFIG, content_type="text/yaml")
            context = multiprocessing.get_context("spawn")
            started = time.time()
            with context.Pool(
                args.workers, initializer=_worker_start, initargs=(url, mode)
            ) as pool:
                pool.map(time.sleep, [0.2] * args.workers)
                started = time.time()
                tasks = _drive(pool, client.bucket(scale.LANDING), dataset, args)
            counted = _materialised(url, dataset)
            rejections = front_log.read_text().count("429 rateLimitExceeded")
    transforms = [t for t in tasks if t.stage == "transform"]
    ended = [t.result for t in tasks if t.result is not None]
    return {
        "mode": mode,
        "files_landed": int(args.rate * args.seconds),
        "transform_steps": len(transforms),
        "handed_over": sum(1 for t in transforms if t.result and t.result[3]),
        "failed_steps": sum(1 for r in ended if r[0] not in ("succeeded", "none")),
        "failures": sorted({r[1] for r in ended if r[0] not in ("succeeded", "none")})[:5],
        "unfinished_steps": sum(1 for t in tasks if t.result is None),
        "redeliveries": sum(t.deliveries - 1 for t in tasks),
        "http_429": rejections,
        "wall_s": round(max((r[2] for r in ended), default=started) - started, 2),
        **counted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=10.0, help="files landed a second")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--workers", type=int, default=4, help="function instances")
    parser.add_argument("--rows", type=int, default=200, help="rows per file")
    parser.add_argument("--writes-per-s", type=float, default=1.0, help="per object name")
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    rows = [run_mode(mode, args) for mode in args.modes.split(",")]
    result = {
        "bench": "transform_burst",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "args": vars(args),
        "modes": rows,
    }
    for row in rows:
        print(json.dumps(row))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
