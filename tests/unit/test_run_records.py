"""The run record's layout: each object a step writes is written once (Cloud Storage
refuses a second mutation of one name within about a second), and a crash between any
two writes loses nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from cascade.core.claims import (
    ATTEMPT_ERROR_PREFIX,
    Claim,
    ClaimHandle,
    ClaimStore,
    StepResult,
)
from cascade.core.context import StepContext
from cascade.core.errors import BadInputError, TransientError
from cascade.core.fakes import MemoryArtifactStore, RecordingBus
from cascade.core.messages import DataValidated, ObjectRef, RunEnded
from cascade.core.observability import RunLogger
from cascade.core.paths import RunPaths
from cascade.core.runs import RunLedger, RunRecord, StepRecord, Trigger
from cascade.core.settings import Settings
from cascade.core.store import ObjectInfo
from cascade.steps.dead_letter import record_dead_letter
from cascade.steps.runner import StepOutcome, execute_step
from tests.unit.conftest import Clock, memory_step_context

RUN_ID = "credit-0123456789abcdef"
PATHS = RunPaths(RUN_ID)


class CountingStore(MemoryArtifactStore):
    """The in-memory bucket, counting the mutations of each object name (what Cloud
    Storage limits to about one a second) and the prefixes listed."""

    def __init__(self) -> None:
        super().__init__("cascade-artifacts")
        self.mutations: Counter[str] = Counter()
        self.listed: list[str] = []
        self.after_write: Callable[[str], None] = lambda name: None

    def write(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        if_generation_match: int | None = None,
        metadata: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> int | None:
        written = super().write(
            name,
            data,
            content_type=content_type,
            if_generation_match=if_generation_match,
            metadata=metadata,
            retry=retry,
        )
        if written is not None:
            self.mutations[name] += 1
            self.after_write(name)
        return written

    def delete(self, name: str, *, if_generation_match: int | None = None) -> bool:
        deleted = super().delete(name, if_generation_match=if_generation_match)
        if deleted:
            self.mutations[name] += 1
        return deleted

    def list_objects(
        self, prefix: str, *, start_offset: str | None = None, max_results: int | None = None
    ) -> Iterator[ObjectInfo]:
        self.listed.append(prefix)
        return super().list_objects(prefix, start_offset=start_offset, max_results=max_results)

    def step_writes(self, step: str) -> tuple[int, int, int]:
        """(run.json, the step's claim, the step's result) mutations."""
        return (
            self.mutations[PATHS.record],
            self.mutations[PATHS.claim(step)],
            self.mutations[PATHS.result(step)],
        )


class _Crash(BaseException):
    """The process dies here: nothing after it runs (no ``except Exception`` sees it)."""


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def ctx(clock: Clock, store: CountingStore) -> StepContext:
    context = memory_step_context(clock, Settings(function_timeout_s=60))
    context.artifacts = store
    context.ledger = RunLedger(store)
    context.claims = ClaimStore(store)
    return context


def _run(clock: Clock) -> RunRecord:
    return RunRecord(
        run_id=RUN_ID,
        dataset="credit",
        trigger=Trigger(kind="object", uri="gs://b/credit/a.csv", generation=1),
        created_at=clock.now,
        updated_at=clock.now,
    )


def _message() -> DataValidated:
    return DataValidated(
        dataset="credit", run_id=RUN_ID, source=ObjectRef(bucket="b", name="credit/a", generation=1)
    )


def _step(
    ctx: StepContext,
    clock: Clock,
    step: str,
    *,
    owner: str = "event-1",
    state: Any = "succeeded",
    run_state: Any = None,
    calls: list[str] | None = None,
) -> StepOutcome | None:
    def body(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        if calls is not None:
            calls.append(claim.claim.owner)
        return StepOutcome(
            state=state,
            summary=f"{step} ok",
            outputs={"step": step},
            messages=[_message()],
            run_state=run_state,
            lineage={step: True},
        )

    return execute_step(ctx, run=_run(clock), step=step, owner=owner, body=body)


def _fail(ctx: StepContext, clock: Clock, step: str, error: str = "storage 503") -> None:
    def failing(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        raise TransientError(error)

    with pytest.raises(TransientError):
        execute_step(ctx, run=_run(clock), step=step, owner="event-1", body=failing)


def _record(ctx: StepContext) -> RunRecord:
    record = ctx.ledger.get(RUN_ID)
    assert record is not None
    return record


def _stored_run_json(store: CountingStore) -> RunRecord:
    found = store.read_model(PATHS.record, RunRecord)
    assert found is not None
    return found[0]


# ---------------------------------------------------------------- one write per object


def test_the_first_step_creates_run_json_once_and_its_claim_and_result_once(
    ctx: StepContext, clock: Clock, store: CountingStore
) -> None:
    _step(ctx, clock, "validate")

    assert store.step_writes("validate") == (1, 1, 1)
    assert _record(ctx).steps["validate"].state == "succeeded"


def test_a_middle_step_writes_no_run_json(
    ctx: StepContext, clock: Clock, store: CountingStore
) -> None:
    _step(ctx, clock, "validate")
    store.mutations.clear()

    _step(ctx, clock, "transform")

    assert store.step_writes("transform") == (0, 1, 1)
    assert sum(store.mutations.values()) == 2


def test_a_step_that_ends_the_run_writes_run_json_once(
    ctx: StepContext, clock: Clock, store: CountingStore
) -> None:
    _step(ctx, clock, "validate")
    store.mutations.clear()

    _step(ctx, clock, "deploy", run_state="succeeded")

    assert store.step_writes("deploy") == (1, 1, 1)
    assert PATHS.report not in store.mutations  # the report function's (run-ended)
    ended = [name for name in store.mutations if name.startswith("index/run-states/succeeded/")]
    assert len(ended) == 2  # the run's end in the state index: all runs, its dataset
    assert sum(store.mutations.values()) == 3 + len(ended)  # each object written once
    assert _stored_run_json(store).state == "succeeded"


def test_a_failed_attempt_writes_only_its_claim(
    ctx: StepContext, clock: Clock, store: CountingStore
) -> None:
    _step(ctx, clock, "validate")
    store.mutations.clear()

    _fail(ctx, clock, "transform", "publishing: 503")

    assert store.step_writes("transform") == (0, 2, 0)  # taken, released
    assert sum(store.mutations.values()) == 2
    transform = _record(ctx).steps["transform"]
    assert transform.state == "running"
    assert transform.error == f"{ATTEMPT_ERROR_PREFIX}publishing: 503"


def test_a_duplicate_delivery_writes_nothing(
    ctx: StepContext, clock: Clock, store: CountingStore
) -> None:
    calls: list[str] = []
    _step(ctx, clock, "validate", calls=calls)
    _step(ctx, clock, "deploy", run_state="succeeded")
    store.mutations.clear()

    assert _step(ctx, clock, "validate", owner="again", calls=calls) is None
    assert _step(ctx, clock, "deploy", owner="again", run_state="succeeded") is None

    assert calls == ["event-1"]
    assert store.mutations == Counter()


def test_a_run_is_read_from_two_listings_never_the_whole_run_folder(
    ctx: StepContext, clock: Clock, store: CountingStore
) -> None:
    _step(ctx, clock, "validate")
    store.write(f"{PATHS.step_dir('training')}/model/claims/x.json", b"{}")  # a model's file
    store.listed.clear()

    record = _record(ctx)

    assert sorted(store.listed) == [f"{PATHS.root}/claims/", f"{PATHS.root}/results/"]
    assert list(record.steps) == ["validate"]


# ---------------------------------------------------------------- retries and crashes


def test_the_retry_after_a_failed_attempt_takes_the_claim_at_once_afresh(
    ctx: StepContext, clock: Clock, store: CountingStore
) -> None:
    def submits_then_fails(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        claim.record_submission(job="job-1")
        raise TransientError("quota")

    with pytest.raises(TransientError):
        execute_step(ctx, run=_run(clock), step="train", owner="e1", body=submits_then_fails)
    seen: list[tuple[bool, dict[str, Any], int]] = []

    def retry(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        seen.append((claim.resumed, dict(claim.claim.submitted), claim.claim.attempts))
        return StepOutcome(summary="ok")

    execute_step(ctx, run=_run(clock), step="train", owner="e1", body=retry)  # no lease wait

    assert seen == [(False, {}, 2)]
    train = _record(ctx).steps["train"]
    assert (train.state, train.attempts, train.error) == ("succeeded", 2, None)


def test_a_crash_after_publishing_before_the_result_reruns_the_body(
    ctx: StepContext, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    with monkeypatch.context() as patched:

        def crash(self: ClaimHandle, result: StepResult) -> StepResult:
            raise _Crash

        patched.setattr(ClaimHandle, "finish", crash)
        with pytest.raises(_Crash):
            _step(ctx, clock, "validate", calls=calls)
    assert _record(ctx).steps["validate"].state == "running"
    clock.advance(ctx.settings.claim_lease_s + 1)

    outcome = _step(ctx, clock, "validate", owner="redelivery", calls=calls)

    assert outcome is not None
    assert calls == ["event-1", "redelivery"]
    assert isinstance(ctx.bus, RecordingBus)
    assert ctx.bus.published == [_message(), _message()]  # the next step's claim absorbs it
    validate = _record(ctx).steps["validate"]
    assert (validate.state, validate.attempts) == ("succeeded", 2)


def test_a_crash_between_the_result_and_run_json_is_repaired_by_the_redelivery(
    ctx: StepContext, clock: Clock, store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _step(ctx, clock, "validate")
    with monkeypatch.context() as patched:

        def crash(self: RunLedger, run_id: str, mutate: Any) -> RunRecord:
            raise _Crash

        patched.setattr(RunLedger, "update", crash)
        with pytest.raises(_Crash):
            _step(ctx, clock, "deploy", state="rejected", run_state="rejected")
    assert _stored_run_json(store).state == "running"
    assert _record(ctx).state == "rejected"  # the result already says how the run ended
    assert _record(ctx).error == "deploy: deploy ok"
    assert not [m for m in ctx.bus.published if isinstance(m, RunEnded)]  # type: ignore[attr-defined]
    store.mutations.clear()

    assert _step(ctx, clock, "deploy", owner="redelivery", run_state="rejected") is None

    stored = _stored_run_json(store)
    assert (stored.state, stored.error, stored.ends_recorded) == (
        "rejected",
        "deploy: deploy ok",
        ["deploy"],
    )
    assert store.mutations[PATHS.record] == 1
    ended = [m for m in ctx.bus.published if isinstance(m, RunEnded)]  # type: ignore[attr-defined]
    assert ended == [RunEnded(dataset="credit", run_id=RUN_ID, state="rejected")]
    _step(ctx, clock, "deploy", owner="third", run_state="rejected")
    assert store.mutations[PATHS.record] == 1  # repaired once


def test_a_crash_before_the_end_is_announced_is_announced_by_the_redelivery(
    ctx: StepContext, clock: Clock, store: CountingStore
) -> None:
    class DiesOnAnnouncement(RecordingBus):
        def publish(self, message: Any) -> str:
            if isinstance(message, RunEnded):
                raise _Crash
            return super().publish(message)

    _step(ctx, clock, "validate")
    ctx.bus = DiesOnAnnouncement()
    with pytest.raises(_Crash):
        _step(ctx, clock, "deploy", run_state="succeeded")
    assert _stored_run_json(store).state == "succeeded"
    ctx.bus = RecordingBus()

    assert _step(ctx, clock, "deploy", owner="redelivery", run_state="succeeded") is None

    assert ctx.bus.published == [RunEnded(dataset="credit", run_id=RUN_ID, state="succeeded")]


def test_an_expired_claim_is_taken_over_and_resumes_what_it_submitted(
    ctx: StepContext, clock: Clock
) -> None:
    ctx.ledger.ensure(_run(clock))
    dead = ctx.claims.acquire(RUN_ID, "train", owner="dead", now=clock.now, lease=ctx.claim_lease)
    assert isinstance(dead, ClaimHandle)
    dead.record_submission(job="job-1")
    seen: list[tuple[bool, dict[str, Any]]] = []

    def resume(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        seen.append((claim.resumed, dict(claim.claim.submitted)))
        return StepOutcome(summary="resumed", outputs={"job": claim.claim.submitted["job"]})

    with pytest.raises(Exception, match="in progress by dead"):
        execute_step(ctx, run=_run(clock), step="train", owner="early", body=resume)
    clock.advance(ctx.settings.claim_lease_s + 1)
    execute_step(ctx, run=_run(clock), step="train", owner="redelivery", body=resume)

    assert seen == [(True, {"job": "job-1"})]
    done = ctx.claims.get(RUN_ID, "train")
    assert done is not None
    assert (done.state, done.owner, done.attempts, done.submitted) == (
        "done",
        "redelivery",
        2,
        {"job": "job-1"},
    )


def _result(step: str, owner: str, clock: Clock, **fields: Any) -> StepResult:
    return StepResult(
        run_id=RUN_ID,
        step=step,
        owner=owner,
        state="succeeded",
        started_at=clock.now,
        finished_at=clock.now,
        duration_s=0.0,
        **fields,
    )


def test_a_takeover_racing_a_slow_owners_result_keeps_the_first_result(
    ctx: StepContext, clock: Clock
) -> None:
    ctx.ledger.ensure(_run(clock))
    slow = ctx.claims.acquire(
        RUN_ID, "transform", owner="slow", now=clock.now, lease=ctx.claim_lease
    )
    assert isinstance(slow, ClaimHandle)
    clock.advance(ctx.settings.claim_lease_s + 1)
    taker = ctx.claims.acquire(
        RUN_ID, "transform", owner="taker", now=clock.now, lease=ctx.claim_lease
    )
    assert isinstance(taker, ClaimHandle)

    first = slow.finish(_result("transform", "slow", clock, outputs={"by": "slow"}))
    second = taker.finish(_result("transform", "taker", clock, outputs={"by": "taker"}))

    assert second == first
    assert _record(ctx).steps["transform"].outputs == {"by": "slow"}


def test_a_takeover_finding_the_slow_owner_just_finished_is_a_duplicate(
    ctx: StepContext, clock: Clock, store: CountingStore
) -> None:
    ctx.ledger.ensure(_run(clock))
    slow = ctx.claims.acquire(
        RUN_ID, "transform", owner="slow", now=clock.now, lease=ctx.claim_lease
    )
    assert isinstance(slow, ClaimHandle)
    clock.advance(ctx.settings.claim_lease_s + 1)

    def slow_owner_finishes(name: str) -> None:
        if name == PATHS.claim("transform"):  # right after the takeover's claim write
            store.after_write = lambda name: None
            slow.finish(_result("transform", "slow", clock))

    store.after_write = slow_owner_finishes
    calls: list[str] = []

    assert _step(ctx, clock, "transform", owner="taker", calls=calls) is None
    assert calls == []


def test_a_lost_release_race_leaves_the_takers_claim(ctx: StepContext, clock: Clock) -> None:
    ctx.ledger.ensure(_run(clock))
    slow = ctx.claims.acquire(
        RUN_ID, "transform", owner="slow", now=clock.now, lease=ctx.claim_lease
    )
    assert isinstance(slow, ClaimHandle)
    clock.advance(ctx.settings.claim_lease_s + 1)
    ctx.claims.acquire(RUN_ID, "transform", owner="taker", now=clock.now, lease=ctx.claim_lease)

    slow.release("late failure", now=clock.now)

    claim = ctx.claims.get(RUN_ID, "transform")
    assert claim is not None
    assert (claim.owner, claim.released) == ("taker", False)


# ---------------------------------------------------------------- the assembled record


def test_steps_are_ordered_by_start_and_lineage_merged_in_that_order(
    ctx: StepContext, clock: Clock
) -> None:
    _step(ctx, clock, "validate")
    clock.advance(1)
    _step(ctx, clock, "transform")
    clock.advance(1)
    _step(ctx, clock, "train")  # sorts after transform alphabetically, after it in time too
    clock.advance(1)
    _fail(ctx, clock, "evaluate")

    record = _record(ctx)

    assert list(record.steps) == ["validate", "transform", "train", "evaluate"]
    assert record.lineage == {"validate": True, "transform": True, "train": True}
    assert record.updated_at == clock.now
    assert record.steps["train"].duration_s == 0.0


def test_steps_started_at_one_instant_keep_the_order_they_ran_in(
    ctx: StepContext, clock: Clock
) -> None:
    for step in ("validate", "transform", "train", "deploy"):
        _step(ctx, clock, step)  # a clock that never moves

    assert list(_record(ctx).steps) == ["validate", "transform", "train", "deploy"]


def test_a_dead_lettered_run_fails_its_unfinished_steps_only(
    ctx: StepContext, clock: Clock, store: CountingStore
) -> None:
    from cascade.core.events import PubSubEnvelope

    _step(ctx, clock, "validate")
    _fail(ctx, clock, "transform", "403 denied")
    clock.advance(30)
    store.mutations.clear()

    record_dead_letter(
        ctx,
        PubSubEnvelope(
            event_id="e",
            message_id="77",
            subscription="projects/p/subscriptions/dead-letters",
            data=b"{}",
            attributes={"dataset": "credit", "run_id": RUN_ID, "message_type": "DataValidated"},
        ),
    )

    assert store.mutations[PATHS.record] == 1
    assert store.mutations[PATHS.claim("transform")] == 0  # the claim is not rewritten
    record = _record(ctx)
    assert record.state == "failed"
    assert record.error is not None
    assert record.error.endswith("; last attempt: transform: 403 denied")
    transform = record.steps["transform"]
    assert (transform.state, transform.error, transform.finished_at) == (
        "failed",
        record.error,
        clock.now,
    )
    assert record.steps["validate"].state == "succeeded"


def test_a_step_that_failed_the_run_leaves_a_concurrent_steps_claim_running(
    ctx: StepContext, clock: Clock
) -> None:
    _step(ctx, clock, "validate")
    ctx.claims.acquire(RUN_ID, "monitor", owner="m", now=clock.now, lease=ctx.claim_lease)

    def bad(claim: ClaimHandle, log: RunLogger) -> StepOutcome:
        raise BadInputError("no label column", uri="gs://b/credit/a.csv")

    execute_step(ctx, run=_run(clock), step="transform", owner="t", body=bad)

    record = _record(ctx)
    assert (record.state, record.steps["transform"].state) == ("failed", "failed")
    assert record.steps["monitor"].state == "running"


def test_a_run_written_in_the_old_layout_still_reads(
    ctx: StepContext, clock: Clock, store: CountingStore
) -> None:
    """run.json with its steps inside and claims marked done, as earlier versions wrote."""
    old = _run(clock)
    old.steps = {
        "validate": StepRecord(
            state="succeeded", attempts=1, started_at=clock.now, finished_at=clock.now
        ),
        "transform": StepRecord(state="running", attempts=1, started_at=clock.now),
    }
    old.lineage = {"baseline": 3}
    store.write(
        PATHS.record, old.model_dump_json(exclude={"ends_recorded", "step_outputs"}).encode()
    )
    done = Claim(
        run_id=RUN_ID,
        step="validate",
        owner="old",
        state="done",
        outcome="succeeded",
        claimed_at=clock.now,
        lease_expires_at=clock.now,
        published=[],
    )
    store.write(
        PATHS.claim("validate"),
        done.model_dump_json(exclude={"attempts", "released", "last_error"}).encode(),
    )
    calls: list[str] = []

    assert _step(ctx, clock, "validate", owner="again", calls=calls) is None  # still done
    record = _record(ctx)

    assert calls == []
    assert record.steps["validate"].state == "succeeded"
    assert record.steps["transform"].state == "running"
    assert record.lineage == {"baseline": 3}
    clock.advance(1)
    _step(ctx, clock, "transform", run_state="succeeded")
    record = _record(ctx)
    assert list(record.steps) == ["validate", "transform"]
    assert (record.state, record.steps["transform"].state) == ("succeeded", "succeeded")
    assert record.lineage == {"baseline": 3, "transform": True}


@pytest.mark.parametrize(
    "name",
    [
        "claims/nested/step.json",
        "claims/step.txt",
        "claims/",
        "results/nested/x.json",
        "results/.json",
    ],
)
def test_objects_that_are_not_a_steps_claim_or_result_are_ignored(
    ctx: StepContext, clock: Clock, store: CountingStore, name: str
) -> None:
    _step(ctx, clock, "validate")
    store.write(f"{PATHS.root}/{name}", b"not a record")

    assert list(_record(ctx).steps) == ["validate"]


def test_run_paths_keep_results_inside_the_run() -> None:
    assert RunPaths(RUN_ID).result("validate") == f"runs/{RUN_ID}/results/validate.json"
