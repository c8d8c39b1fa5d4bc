"""The three acts of ``cascade demo``: each starts something, follows it, and judges it.

An act's outcome is ``ok`` when the pipeline did what it should: the sample file was
deployed, the drifted file was quarantined, the retrained model was judged against the
production model (and deployed, or kept out with the reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from cascade.cli.demo_explain import print_evaluation, print_rejection
from cascade.cli.demo_follow import RunFollower
from cascade.cli.run_view import evaluation_verdict, model_version, validation_verdict
from cascade.cli.sample_data import sample_csv
from cascade.core.messages import TrainRequest
from cascade.core.runs import RunRecord, run_id_for_request
from cascade.localcloud.client import LocalCloudClient

__all__ = ["DRIFT_MIN_ROWS", "ActOutcome", "DemoSession", "drift_act", "retrain_act", "upload_act"]

DRIFT_MIN_ROWS = 1000
"""Drift is only judged on files of at least ``drift_min_examples`` (200) rows; the
drifted file has at least this many so that sampling noise cannot hide the drift."""
_DRIFT_SEED = 8


@dataclass(frozen=True)
class DemoSession:
    """What every act uses; ``stamp`` makes this demo's file names and request id unique."""

    client: LocalCloudClient
    console: Console
    follower: RunFollower
    dataset: str
    rows: int
    stamp: str
    gcs_root: Path


@dataclass(frozen=True)
class ActOutcome:
    act: str
    ok: bool
    run_id: str
    summary: str


def _upload(session: DemoSession, name: str, data: bytes, rows: int) -> str:
    """Land ``data`` as ``<dataset>/<name>``; the run id its finalize event starts."""
    object_name = f"{session.dataset}/{name}"
    generation = session.client.upload(object_name, data)
    run_id = session.client.run_id_for(object_name, generation)
    landing = session.client.settings.landing_bucket
    session.console.print(f"uploaded {rows} rows to gs://{landing}/{object_name}")
    session.console.print(f"following run [bold]{run_id}[/bold]")
    return run_id


def _follow_through(session: DemoSession, run_id: str, label: str) -> RunRecord | None:
    """Follow ``run_id``; when its training was coalesced into a follow-up run, that one."""
    record = session.follower.follow(run_id, label=label)
    train = None if record is None else record.steps.get("train")
    follow_up = None if train is None else train.outputs.get("coalesced_into")
    if follow_up:
        session.console.print(f"another training job was running: following {follow_up}")
        return session.follower.follow(str(follow_up), label=label)
    return record


def _not_settled(act: str, run_id: str, record: RunRecord | None) -> ActOutcome:
    state = "never started" if record is None else record.state
    return ActOutcome(act, False, run_id, f"run {run_id} is {state}: see `cascade run {run_id}`")


def _kept_out_by_evaluation(record: RunRecord) -> bool:
    return record.state == "rejected" and evaluation_verdict(record) == "not_blessed"


def upload_act(session: DemoSession) -> ActOutcome:
    """A sample file lands; expected: deployed (or, on a re-run, judged no better)."""
    name = f"demo-{session.stamp}.csv"
    run_id = _upload(session, name, sample_csv(session.rows), session.rows)
    record = _follow_through(session, run_id, "act 1")
    if record is None or record.state == "running":
        return _not_settled("upload", run_id, record)
    if "evaluate" in record.steps:
        print_evaluation(session.console, session.client.artifacts, record)
    if record.state == "succeeded":
        return ActOutcome("upload", True, record.run_id, f"deployed as {model_version(record)}")
    if _kept_out_by_evaluation(record):
        return ActOutcome(
            "upload", True, record.run_id, "trained, not blessed: the production model stays"
        )
    return ActOutcome("upload", False, record.run_id, f"run {record.state}: {record.error}")


def drift_act(session: DemoSession) -> ActOutcome:
    """A file with unseen categories from a world that moved lands; expected: quarantined
    for the schema skew (its value skews listed beside it)."""
    rows = max(session.rows, DRIFT_MIN_ROWS)
    data = sample_csv(rows, seed=_DRIFT_SEED, drift=True)
    run_id = _upload(session, f"demo-{session.stamp}-drifted.csv", data, rows)
    record = session.follower.follow(run_id, label="act 2")
    if record is None or record.state == "running":
        return _not_settled("drift", run_id, record)
    if validation_verdict(record) != "quarantined":
        return ActOutcome(
            "drift", False, run_id, f"the drifted file was not rejected: run {record.state}"
        )
    print_rejection(session.console, session.client.artifacts, record, session.gcs_root)
    return ActOutcome(
        "drift", True, run_id, "quarantined: unseen categories (a schema skew); value skews noted"
    )


def retrain_act(session: DemoSession) -> ActOutcome:
    """A retrain request; expected: trained, evaluated, deployed or kept out by evaluation."""
    request_id = f"demo-retrain-{session.stamp}"
    message_id = session.client.publish(
        TrainRequest(
            dataset=session.dataset,
            request_id=request_id,
            reason="cascade demo: retrain on all accepted data",
        )
    )
    run_id = run_id_for_request(session.dataset, request_id)
    session.console.print(
        f"published a train request ({escape(request_id)}, message {message_id}) to "
        f"{session.client.settings.topic_id(TrainRequest.TOPIC)}"
    )
    session.console.print(f"following run [bold]{run_id}[/bold]")
    record = _follow_through(session, run_id, "act 3")
    if record is None or record.state == "running":
        return _not_settled("retrain", run_id, record)
    print_evaluation(session.console, session.client.artifacts, record)
    if record.state == "succeeded":
        summary = f"blessed and deployed as {model_version(record)}"
        return ActOutcome("retrain", True, record.run_id, summary)
    if _kept_out_by_evaluation(record):
        summary = "not blessed: no better than the production model, which keeps serving"
        return ActOutcome("retrain", True, record.run_id, summary)
    return ActOutcome("retrain", False, record.run_id, f"run {record.state}: {record.error}")
