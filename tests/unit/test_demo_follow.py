"""The demo's live view of a run: step starts and ends, and when a run is settled."""

from __future__ import annotations

from cascade.cli.demo_follow import render_event, run_settled, step_events
from tests.unit.run_records import JOB, deployed_steps, request_run, step, upload_run


def test_every_step_starts_and_ends_in_time_order_with_the_job_from_its_submission() -> None:
    record = upload_run(steps=deployed_steps())

    events = [(event.step, event.state, round(event.offset_s, 2)) for event in step_events(record)]

    assert events == [
        ("validate", "started", 0.0),
        ("validate", "succeeded", 0.45),
        ("transform", "started", 0.6),
        ("transform", "succeeded", 1.53),
        ("train", "started", 1.6),
        ("train", "succeeded", 1.75),
        ("training_job", "started", 1.75),
        ("evaluate", "started", 22.0),
        ("evaluate", "succeeded", 22.07),
        ("deploy", "started", 22.2),
        ("deploy", "succeeded", 23.97),
        ("training_job", "succeeded", 24.02),
    ]


def test_finished_steps_say_how_they_ended() -> None:
    record = upload_run(steps=deployed_steps(), lineage={"deployed_version": "3"})

    ended = {event.step: event for event in step_events(record) if event.state != "started"}

    assert ended["validate"].detail == "accepted"
    assert ended["transform"].detail == "10 features, 2400 train / 600 eval rows from 1 file(s)"
    assert ended["train"].detail == "submitted custom job 4d899d90bc00bced"
    assert ended["training_job"].duration_s == 22.27
    assert ended["evaluate"].detail == "blessed"
    assert ended["deploy"].detail == "promoted v3 (canary: 20 requests answered, p95 16.5 ms)"
    assert "in 22.27s" in render_event(ended["training_job"])


def test_a_rejected_file_reports_its_blocking_anomalies() -> None:
    record = upload_run(
        state="rejected",
        steps={"validate": step("rejected", 0.0, 0.3, errors=["a", "b", "c"])},
    )

    (start, end) = step_events(record)

    assert start.state == "started"
    assert end.detail == "quarantined: 3 blocking anomalies"


def test_a_run_is_settled_once_it_ended_and_its_training_job_ended_too() -> None:
    steps = deployed_steps()
    job_end = steps.pop("training_job")
    ended_before_its_job = upload_run(state="succeeded", steps=steps)
    steps_with_job = {**steps, "training_job": job_end}

    assert not run_settled(ended_before_its_job)
    assert run_settled(upload_run(state="succeeded", steps=steps_with_job))
    assert not run_settled(
        upload_run(state="running", steps={"validate": step("running", 0, None)})
    )
    assert run_settled(upload_run(state="rejected", steps={"validate": step("rejected", 0, 0.3)}))


def test_a_run_waiting_for_approval_is_settled_and_a_coalesced_one_waits_for_no_job() -> None:
    awaiting = request_run(
        steps={
            "train": step("succeeded", 0, 0.1, job_name=JOB),
            "evaluate": step("rejected", 20, 0.1, verdict="awaiting_approval"),
        }
    )
    coalesced = request_run(
        state="succeeded",
        steps={"train": step("succeeded", 0, 0.1, coalesced_into="credit-r0000000000000001")},
    )

    assert run_settled(awaiting)
    assert run_settled(coalesced)
