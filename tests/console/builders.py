"""A console over an in-memory bucket and a recording bus, and runs to put in it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from starlette.applications import Starlette

from cascade.console import Caller, ConsoleConfig, create_app
from cascade.core.fakes import MemoryArtifactStore, RecordingBus
from cascade.core.paths import RunPaths
from cascade.core.run_index import StoreLister, record_run_created
from cascade.core.runs import RunRecord, StepRecord, Trigger, run_id_for_object

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LOCAL_USER = "ada@laptop"


@dataclass
class ConsoleUnderTest:
    artifacts: MemoryArtifactStore
    bus: RecordingBus
    app: Starlette

    def add_run(
        self,
        dataset: str,
        number: int,
        *,
        state: str = "succeeded",
        error: str | None = None,
        steps: dict[str, StepRecord] | None = None,
    ) -> RunRecord:
        """A run of an upload ``<dataset>/<number>.csv``, ``number`` seconds after T0,
        in the bucket and the index as the steps leave it."""
        name = f"{dataset}/{number}.csv"
        created = T0 + timedelta(seconds=number)
        record = RunRecord.model_validate(
            {
                "run_id": run_id_for_object(dataset, "landing", name, number + 1),
                "dataset": dataset,
                "trigger": Trigger(
                    kind="object", uri=f"gs://landing/{name}", generation=number + 1
                ),
                "state": state,
                "created_at": created,
                "updated_at": created + timedelta(seconds=5),
                "error": error,
                "steps": steps or {},
            }
        )
        self.artifacts.create(RunPaths(record.run_id).record, record.model_dump_json().encode())
        record_run_created(self.artifacts, record)
        return record


def console_under_test(
    page_size: int = 25,
    *,
    allowed_hosts: list[str] | None = None,
    vertex_tensorboard: str | None = None,
) -> ConsoleUnderTest:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    bus = RecordingBus()
    config = ConsoleConfig(
        artifacts=artifacts,
        lister=StoreLister(artifacts),
        bus=lambda: bus,
        caller_of=lambda request: Caller(LOCAL_USER),
        page_size=page_size,
        poll_ms=500,
        vertex_tensorboard=vertex_tensorboard,
    )
    if allowed_hosts is not None:
        config.allowed_hosts = allowed_hosts
    return ConsoleUnderTest(artifacts, bus, create_app(config))


def step(
    state: str, start_s: float, duration_s: float | None, error: str | None = None
) -> StepRecord:
    finished = None if duration_s is None else T0 + timedelta(seconds=start_s + duration_s)
    return StepRecord.model_validate(
        {
            "state": state,
            "attempts": 1,
            "started_at": T0 + timedelta(seconds=start_s),
            "finished_at": finished,
            "duration_s": duration_s,
            "error": error,
        }
    )
