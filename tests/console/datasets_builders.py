"""A console over the validate step's in-memory storage: files landed and validated by
the step's own code (accepted or quarantined), for the dataset pages' tests."""

from __future__ import annotations

import random
from dataclasses import dataclass

from starlette.applications import Starlette

from cascade.console import Caller, ConsoleConfig, create_app
from cascade.core.context import StepContext
from cascade.core.events import StorageObjectEvent
from cascade.core.fakes import RecordingBus
from cascade.core.run_index import StoreLister
from cascade.core.runs import RunRecord, run_id_for_object
from cascade.steps.validate import handle_object_finalized
from tests.unit.conftest import Clock
from tests.unit.validation.fake_storage import FakeStorageClient
from tests.unit.validation.step_context import LANDING, validate_step_context

LOCAL_USER = "ada@laptop"
DATASET = "credit"


def csv_rows(
    seed: int, shift: float = 0.0, cities: tuple[str, ...] = ("a", "b"), rows: int = 400
) -> bytes:
    generator = random.Random(seed)
    lines = ["amount,age,city"]
    for _ in range(rows):
        amount = f"{generator.gauss(100 + shift, 10):.3f}"
        lines.append(f"{amount},{generator.randint(20, 60)},{generator.choice(cities)}")
    return ("\n".join(lines) + "\n").encode()


@dataclass
class DatasetConsole:
    storage: FakeStorageClient
    clock: Clock
    ctx: StepContext
    app: Starlette

    @property
    def bus(self) -> RecordingBus:
        assert isinstance(self.ctx.bus, RecordingBus)
        return self.ctx.bus

    def land(self, name: str, data: bytes) -> RunRecord:
        """Land ``data`` as ``name`` and validate it with the validate step; its run."""
        self.clock.advance(60)
        generation = self.storage.put(LANDING, name, data)
        event = StorageObjectEvent(
            event_id=f"event-{name}-{generation}",
            bucket=LANDING,
            name=name,
            generation=generation,
            size=len(data),
        )
        assert handle_object_finalized(self.ctx, event) is not None
        run = self.ctx.ledger.get(run_id_for_object(DATASET, LANDING, name, generation))
        assert run is not None
        return run


def dataset_console(page_size: int = 25) -> DatasetConsole:
    storage = FakeStorageClient()
    clock = Clock()
    ctx = validate_step_context(storage, clock)
    config = ConsoleConfig(
        artifacts=ctx.artifacts,
        lister=StoreLister(ctx.artifacts),
        bus=lambda: ctx.bus,
        caller_of=lambda request: Caller(LOCAL_USER),
        page_size=page_size,
        poll_ms=500,
        step_context=lambda: ctx,
    )
    return DatasetConsole(storage, clock, ctx, create_app(config))
