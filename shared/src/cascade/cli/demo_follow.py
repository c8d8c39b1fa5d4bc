"""Follow a run live in the terminal: a line when each step starts and when it ends.

The run record is polled (``runs/<run_id>/run.json``); each step's start and end is
printed once, with its offset from the run's creation and its duration, under a
spinner that says what the run is waiting for. The training job shows as the
``training_job`` step from its submission (the ``train`` step's end) to its end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape

from cascade.cli.run_view import (
    deploy_result,
    evaluation_verdict,
    step_duration_s,
    training_job_pending,
)
from cascade.core.runs import RunRecord, StepRecord
from cascade.localcloud.client import LocalCloudClient, RunTimeoutError

__all__ = ["RunFollower", "StepEvent", "run_settled", "step_detail", "step_events"]

_ICONS = {
    "started": "[cyan]▶[/cyan]",
    "succeeded": "[green]✓[/green]",
    "rejected": "[yellow]■[/yellow]",
    "failed": "[red]✗[/red]",
}
_MAX_DETAIL = 160


@dataclass(frozen=True)
class StepEvent:
    """A step started (``state == "started"``) or ended in ``state``."""

    step: str
    state: str
    offset_s: float
    duration_s: float | None = None
    detail: str = ""

    @property
    def key(self) -> str:
        return f"{self.step}:{'start' if self.state == 'started' else 'end'}"


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= _MAX_DETAIL else line[: _MAX_DETAIL - 1] + "…"


def _validate_detail(step: StepRecord) -> str:
    if step.state == "rejected":
        return f"quarantined: {len(step.outputs.get('errors', []))} blocking anomalies"
    warnings = len(step.outputs.get("warnings", []))
    return "accepted" + (f", {warnings} warning(s)" if warnings else "")


def _transform_detail(step: StepRecord) -> str:
    outputs = step.outputs
    return (
        f"{outputs.get('features')} features, {outputs.get('train_rows')} train / "
        f"{outputs.get('eval_rows')} eval rows from {outputs.get('files')} file(s)"
    )


def _train_detail(step: StepRecord) -> str:
    if step.outputs.get("coalesced_into"):
        return f"another job was running: coalesced into {step.outputs['coalesced_into']}"
    job = str(step.outputs.get("job_name", "")).rsplit("/", 1)[-1]
    return f"submitted {step.outputs.get('kind', 'training')} job {job}"


def step_detail(record: RunRecord, step: str) -> str:
    """One phrase on how a finished step ended."""
    found = record.steps[step]
    if found.error:
        return _first_line(found.error)
    if step in ("validate", "validate_statistics"):
        return _validate_detail(found)
    if step == "transform" and "beam_job" in found.outputs:
        return f"the split runs as Beam job {found.outputs['beam_job']}"
    if step in ("transform", "transform_split"):
        return _transform_detail(found)
    if step == "train":
        return _train_detail(found)
    if step == "training_job":
        return f"job {found.outputs.get('job_state', found.state)}"
    if step == "evaluate":
        return evaluation_verdict(record)
    if step == "deploy":
        canary = found.outputs.get("canary") or {}
        detail = canary.get("detail", "") if isinstance(canary, dict) else ""
        return deploy_result(record) + (f" (canary: {detail})" if detail else "")
    return ""


def _offset(record: RunRecord, step: StepRecord, *, end: bool) -> float:
    moment = step.finished_at if end and step.finished_at is not None else step.started_at
    return (moment - record.created_at).total_seconds()


def step_events(record: RunRecord) -> list[StepEvent]:
    """Every step start and end ``record`` shows, in time order."""
    events = []
    for name, step in record.steps.items():
        if name != "training_job":
            events.append(StepEvent(name, "started", _offset(record, step, end=False)))
        if step.state != "running":
            events.append(
                StepEvent(
                    name,
                    step.state,
                    _offset(record, step, end=True),
                    step_duration_s(record, name),
                    step_detail(record, name),
                )
            )
    train = record.steps.get("train")
    if train is not None and train.finished_at is not None and "job_name" in train.outputs:
        events.append(StepEvent("training_job", "started", _offset(record, train, end=True)))
    return sorted(events, key=lambda event: event.offset_s)  # stable: a start before its end


def run_settled(record: RunRecord) -> bool:
    """Nothing more happens to the run by itself: it ended and so did its training job,
    or its candidate waits for a person's approval."""
    evaluate = record.steps.get("evaluate")
    if evaluate is not None and evaluate.outputs.get("verdict") == "awaiting_approval":
        return True
    return record.state != "running" and not training_job_pending(record)


def _waiting_for(record: RunRecord | None) -> str:
    if record is None:
        return "waiting for the run to start"
    running = [name for name, step in record.steps.items() if step.state == "running"]
    if running:
        return ", ".join(running)
    if training_job_pending(record):
        return "training job running"
    return "waiting for the next step"


def render_event(event: StepEvent) -> str:
    """The line printed for ``event`` (rich markup)."""
    icon = _ICONS.get(event.state, "·")
    duration = "" if event.duration_s is None else f"in {event.duration_s:.2f}s"
    return (
        f"  {event.offset_s:>7.1f}s  {icon} {event.step:<12} {event.state:<9} {duration:<10}"
        f" {escape(event.detail)}"
    ).rstrip()


class RunFollower:
    """Prints a run's step events as they happen until the run settles.

    A run that ended while its training job's end is not recorded yet is followed for
    ``job_grace_s`` more seconds (the job-end event follows the run's end closely).
    """

    def __init__(
        self,
        client: LocalCloudClient,
        console: Console,
        *,
        timeout_s: float,
        job_grace_s: float = 60.0,
        poll_s: float = 0.5,
    ) -> None:
        self._client = client
        self._console = console
        self._timeout_s = timeout_s
        self._job_grace_s = job_grace_s
        self._poll_s = poll_s

    def follow(self, run_id: str, *, label: str) -> RunRecord | None:
        """The settled record, or the last one seen (None: never seen) at the timeout."""
        seen: set[str] = set()
        started = time.monotonic()
        ended_at: list[float] = []
        with self._console.status(f"{label}: waiting for the run to start") as spinner:

            def observe(record: RunRecord) -> bool:
                for event in step_events(record):
                    if event.key not in seen:
                        seen.add(event.key)
                        self._console.print(render_event(event))
                elapsed = time.monotonic() - started
                spinner.update(f"{label}: {_waiting_for(record)} ({elapsed:.0f}s)")
                if record.state != "running" and not ended_at:
                    ended_at.append(time.monotonic())
                late = bool(ended_at) and time.monotonic() - ended_at[0] > self._job_grace_s
                return run_settled(record) or late

            try:
                return self._client.wait_for_run(
                    run_id, until=observe, timeout=self._timeout_s, interval=self._poll_s
                )
            except RunTimeoutError as error:
                self._console.print(
                    f"[red]{escape(label)}: run {run_id} did not settle in "
                    f"{self._timeout_s:.0f}s[/red] (`cascade run {run_id}`)"
                )
                return error.last
