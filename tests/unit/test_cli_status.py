"""The runs table of `cascade status`: rows built from run records, filtered and limited."""

from __future__ import annotations

from rich.console import Console

from cascade.cli.status import latest_runs, run_rows, runs_table, select_runs
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.runs import RunLedger
from tests.unit.run_records import JOB, deployed_steps, request_run, step, upload_run


def test_a_deployed_run_shows_every_step_its_version_and_verdicts() -> None:
    record = upload_run(
        file="demo-20261127.csv", steps=deployed_steps(), lineage={"deployed_version": "3"}
    )

    (row,) = run_rows([record])

    assert row.run_id == "credit-0123456789abcdef"
    assert row.dataset == "credit"
    assert row.trigger == "demo-20261127.csv"
    assert row.state == "succeeded"
    # validate, transform, train, training_job (submission at 1.75 s to end at 24.02 s), ...
    assert row.steps == ("0.45s", "0.93s", "0.15s", "22.27s", "0.07s", "1.77s")
    assert row.model == "v3"
    assert row.verdicts == "accepted / blessed / promoted v3"


def test_a_quarantined_file_shows_rejected_validation_and_no_later_step() -> None:
    record = upload_run(
        state="rejected",
        steps={
            "validate": step(
                "rejected",
                0.0,
                0.31,
                error="rejected gs://...: 5 blocking anomalies",
                quarantine="gs://cascade-artifacts/quarantine/credit/x",
            )
        },
    )

    (row,) = run_rows([record])

    assert row.state == "rejected"
    assert row.steps == ("rejected 0.31s", "-", "-", "-", "-", "-")
    assert row.model == ""
    assert row.verdicts == "quarantined"


def test_a_retrain_request_shows_its_request_id_and_a_running_job() -> None:
    record = request_run(
        request_id="demo-retrain-42",
        steps={"train": step("succeeded", 0.0, 0.2, job_name=JOB, kind="custom")},
    )

    (row,) = run_rows([record])

    assert row.trigger == "demo-retrain-42"
    assert row.steps == ("-", "-", "0.20s", "-", "-", "-")
    assert row.verdicts == ""


def test_a_candidate_kept_out_by_evaluation_is_not_blessed_and_not_deployed() -> None:
    steps = deployed_steps()
    del steps["deploy"]
    steps["evaluate"] = step("rejected", 22.0, 0.07, verdict="not_blessed")
    record = request_run(
        state="rejected", steps={k: v for k, v in steps.items() if k != "validate"}
    )

    (row,) = run_rows([record])

    assert row.steps[4] == "rejected 0.07s"
    assert row.model == "candidate, not deployed"
    assert row.verdicts == "not_blessed"


def test_a_rolled_back_canary_and_a_coalesced_request() -> None:
    steps = deployed_steps()
    steps["deploy"] = step("failed", 22.2, 3.0, error="canary failed", version="4", promoted=False)
    rolled_back = upload_run(state="failed", steps=steps)
    coalesced = request_run(
        state="succeeded",
        steps={"train": step("succeeded", 0.0, 0.1, coalesced_into="credit-rffffffffffffffff")},
    )

    first, second = run_rows([rolled_back, coalesced])

    assert first.steps[5] == "failed 3.00s"
    assert first.model == "v4 (rolled back)"
    assert first.verdicts == "accepted / blessed / rolled back v4"
    assert second.model == "trained by credit-rffffffffffffffff"


def test_select_runs_keeps_the_newest_of_one_dataset() -> None:
    records = [
        upload_run(f"credit-{index:016x}", created_s=index, dataset=dataset)
        for index, dataset in enumerate(["credit", "churn", "credit", "credit"])
    ]

    selected = select_runs(records, limit=2, dataset="credit")

    assert [record.run_id for record in selected] == [f"credit-{3:016x}", f"credit-{2:016x}"]


def test_latest_runs_reads_run_records_only_and_filters_by_dataset() -> None:
    artifacts = MemoryArtifactStore("cascade-artifacts")
    ledger = RunLedger(artifacts)
    for index, dataset in enumerate(["credit", "churn", "credit"]):
        ledger.ensure(upload_run(f"{dataset}-{index:016x}", created_s=index, dataset=dataset))
    artifacts.write("runs/credit-0000000000000000/training/tensorboard/run.json", b"{}")

    records = latest_runs(artifacts, limit=10, dataset="credit")

    assert [record.run_id for record in records] == [f"credit-{2:016x}", f"credit-{0:016x}"]
    assert len(latest_runs(artifacts, limit=10)) == 3


def test_the_table_renders_one_column_per_step() -> None:
    console = Console(width=250, record=True)

    console.print(runs_table([upload_run(steps=deployed_steps())]))

    text = console.export_text()
    for column in ("validate", "transform", "train", "training_job", "evaluate", "deploy"):
        assert column in text
    assert "22.27s" in text


def test_a_narrow_terminal_gets_the_steps_in_one_column() -> None:
    console = Console(width=80, record=True)

    console.print(runs_table([upload_run(steps=deployed_steps())], width=80))

    text = console.export_text()
    assert "training_job 22.27s" in text
    assert all(len(line) <= 80 for line in text.splitlines())
