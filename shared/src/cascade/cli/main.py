"""The ``cascade`` command line. Every option is also an environment variable."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade.cli import (
    experiment,
    model_module_commands,
    quarantine_commands,
    schema_commands,
    serving_plan,
)
from cascade.cli.batch_predict import batch_predict
from cascade.cli.console import console_command
from cascade.cli.infra import infra_commands
from cascade.cli.models import serving_commands
from cascade.cli.publish_records import publish_records_command
from cascade.cli.report import report_commands
from cascade.cli.status import latest_runs, monitoring_table, runs_table
from cascade.cli.tensorboard import tensorboard_commands
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError, InvalidConfigError
from cascade.core.messages import TrainRequest
from cascade.core.pipeline_config import load_pipeline_config, push_pipeline_config
from cascade.core.runs import RunRecord
from cascade.core.settings import load_settings
from cascade.core.topology import load_topology
from cascade.localcloud import control
from cascade.localcloud.client import LocalCloudClient
from cascade.localcloud.id_tokens import LOCAL_OPERATOR, LocalIdTokens
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.localcloud.logs import run_log_entries
from cascade.localcloud.router import function_urls
from cascade.localcloud.state_file import CloudState
from cascade.steps.reconcile import reconcile as reconcile_runs

__all__ = ["main"]

console = Console()


def _local() -> LocalCloudSettings:
    return LocalCloudSettings().absolute()


@click.group()
def cli() -> None:
    """Cascade: event-driven continuous training for Google Cloud (and your laptop)."""


@cli.command()
def up() -> None:
    """Start the local cloud (idempotent): emulators, functions, event router."""
    try:
        state = control.up(_local())
    except (control.LocalCloudError, RuntimeError) as error:
        console.print(f"[red]cascade up failed:[/red] {escape(str(error))}")
        sys.exit(1)
    _print_components(state)
    if (url := _local().console_url) is not None:
        console.print(f"web console: {url}")


@cli.command("id-token")
@click.argument("function")
@click.option(
    "--as",
    "email",
    default=LOCAL_OPERATOR,
    show_default=True,
    help="The principal the token names (the local invoker groups hold "
    "operator@cascade.local unless CASCADE_LOCAL_*_HTTP_INVOKERS say otherwise).",
)
@click.option("--url", "url_only", is_flag=True, help="Print the function's URL instead.")
def id_token(function: str, email: str, url_only: bool) -> None:
    """Print an ID token for calling a local HTTP function (train-http, evaluate-http,
    review-http): `curl -H "Authorization: Bearer $(cascade id-token train-http)" ...`,
    as `gcloud auth print-identity-token --audiences=<url>` on Google Cloud."""
    local = _local()
    urls = function_urls(local, load_topology(local.topology_file))
    if function not in urls:
        console.print(f"[red]no function {escape(function)!r}[/red]: {', '.join(sorted(urls))}")
        sys.exit(2)
    if url_only:
        click.echo(urls[function])
        return
    click.echo(LocalIdTokens(local.id_token_key_file).mint(email, urls[function]))


@cli.command()
def down() -> None:
    """Stop the local cloud and every process it started. Data stays in .cascade/."""
    stopped = control.down(_local())
    console.print("local cloud stopped" if stopped else "local cloud was not running")


@cli.command()
@click.option(
    "--limit", default=10, show_default=True, type=click.IntRange(min=1), help="Runs shown."
)
@click.option("--dataset", default=None, help="Only this dataset's runs.")
def status(limit: int, dataset: str | None) -> None:
    """Show the local cloud's processes, the latest runs and the training jobs.

    Per run: its trigger (file or request id), each step's state and duration, the
    model version it serves as, and the verdicts (validation / evaluation / deploy).
    Per dataset: the served model's last monitored files (continued evaluation).
    """
    local = _local()
    state = control.status(local)
    if state is None:
        console.print("local cloud is not running (start it with `cascade up`)")
        sys.exit(3)
    _print_components(state)
    client = LocalCloudClient(local.runtime_settings())
    records = latest_runs(client.artifacts, limit=limit, dataset=dataset)
    console.print(runs_table(records, width=console.width))
    datasets = [dataset] if dataset else sorted({record.dataset for record in records})
    monitoring = monitoring_table(client.artifacts, datasets)
    if monitoring is not None:
        console.print(monitoring)
    _print_jobs(state)


@cli.command()
@click.argument("dataset")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def upload(dataset: str, file: Path) -> None:
    """Upload FILE to the landing bucket as DATASET/<file name>."""
    client = LocalCloudClient(_local().runtime_settings())
    name = f"{dataset}/{file.name}"
    generation = client.upload(name, file.read_bytes())
    console.print(
        f"uploaded gs://{client.settings.landing_bucket}/{name}#{generation}; "
        f"run {client.run_id_for(name, generation)}"
    )


@cli.command()
@click.argument("dataset")
@click.option("--request-id", default=None, help="Idempotency key: the same id, one run.")
@click.option("--tune/--no-tune", default=False, help="Run hyperparameter tuning.")
@experiment.local_options
def train(dataset: str, request_id: str | None, tune: bool, **local: Any) -> None:
    """Publish a retrain request for DATASET to the train-requests topic; with --local,
    train on this machine for an experiment and deploy or publish nothing."""
    wanted = experiment.experiment_from_options(dataset, request_id, tune, local)
    if wanted is not None:
        cloud = _local()
        if control.status(cloud) is None:
            console.print("local cloud is not running (start it with `cascade up`)")
            sys.exit(1)
        sys.exit(
            experiment.run_experiment(
                wanted,
                settings=cloud.runtime_settings(),
                state_dir=cloud.state_dir,
                console=console,
            )
        )
    assert request_id is not None
    client = LocalCloudClient(_local().runtime_settings())
    message_id = client.publish(
        TrainRequest(dataset=dataset, request_id=request_id, tune=tune, reason="cascade train")
    )
    console.print(f"published train request {request_id} (message {message_id})")


@cli.command()
@click.option("--stale-after", default=600, show_default=True, help="Seconds without progress.")
@click.option("--dataset", default=None, help="Only this dataset.")
@click.option("--from-env", is_flag=True, help="Use CASCADE_* settings (a real project).")
def reconcile(stale_after: int, dataset: str | None, from_env: bool) -> None:
    """Resume landed files and runs that lost an event or a process."""
    settings = load_settings() if from_env else _local().runtime_settings()
    ctx = StepContext.from_settings(settings)
    report = reconcile_runs(ctx, stale_after=timedelta(seconds=stale_after), dataset=dataset)
    console.print(
        f"checked {report.objects_seen} landed objects and {report.runs_checked} running runs; "
        f"started {len(report.uploads_started)} runs, resumed {len(report.runs_resumed)}, "
        f"republished {report.messages_republished} messages"
    )
    for run_id in report.uploads_started + report.runs_resumed:
        console.print(f"  {run_id}")


@cli.command()
@click.argument("run_id")
def logs(run_id: str) -> None:
    """Print the structured logs of every local process for RUN_ID, in time order."""
    entries = run_log_entries(_local().state_dir / "logs", run_id)
    if not entries:
        console.print(f"no log lines for {run_id}")
    for entry in entries:
        console.print(
            f"{entry.timestamp} {entry.process:<24} {entry.severity:<8} {entry.step:<10} "
            f"{escape(entry.message)}"
        )


@cli.group()
def config() -> None:
    """Read and write a dataset's pipeline config (datasets/<dataset>/pipeline.yaml)."""


@config.command("push")
@click.argument("dataset")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def config_push(dataset: str, file: Path) -> None:
    """Validate FILE as DATASET's pipeline config and store it."""
    client = LocalCloudClient(_local().runtime_settings())
    try:
        uri = push_pipeline_config(client.artifacts, dataset, file.read_bytes(), where=str(file))
    except (InvalidConfigError, BadRequestError) as error:
        console.print(f"[red]invalid config:[/red] {escape(str(error))}")
        sys.exit(1)
    console.print(f"stored {uri}")


@config.command("show")
@click.argument("dataset")
def config_show(dataset: str) -> None:
    """Print DATASET's effective pipeline config (defaults filled in)."""
    client = LocalCloudClient(_local().runtime_settings())
    effective = load_pipeline_config(client.artifacts, dataset)
    console.print(yaml.safe_dump(effective.model_dump(mode="json"), sort_keys=False))


@cli.command()
@click.argument("run_id")
def run(run_id: str) -> None:
    """Show one run's steps, timings and outputs."""
    client = LocalCloudClient(_local().runtime_settings())
    record = client.ledger.get(run_id)
    if record is None:
        console.print(f"no run {run_id}")
        sys.exit(1)
    print_run(record)


@cli.command()
@click.option("--rows", default=2000, show_default=True, help="Rows in the sample file.")
def demo(rows: int) -> None:
    """Start the local cloud and walk a sample file through every step."""
    from cascade.cli.demo import run_demo

    sys.exit(run_demo(_local(), rows=rows, console=console))


def _print_components(state: CloudState) -> None:
    table = Table(title=f"local cloud: {state.status}")
    for column in ("process", "status", "pid", "restarts", "log"):
        table.add_column(column)
    for name, component in state.components.items():
        table.add_row(
            name, component.status, str(component.pid), str(component.restarts), component.log
        )
    console.print(table)


def _print_jobs(state: CloudState) -> None:
    """Training and tuning jobs of the local job service (Vertex AI's stand-in)."""
    from cascade.core.errors import TransientError
    from cascade.jobs.local_runner import LocalJobRunner

    url = state.environment.get("CASCADE_JOB_SERVICE_URL")
    if not url:
        return
    try:
        jobs = LocalJobRunner(url, timeout_s=5).list_jobs()
    except TransientError as error:
        console.print(f"[yellow]job service unreachable:[/yellow] {escape(str(error))}")
        return
    table = Table(title="training jobs (local job service)")
    for column in ("job", "kind", "state", "run", "trials ok/failed", "best", "error"):
        table.add_column(column)
    for job in sorted(jobs, key=lambda job: job.created_at, reverse=True)[:10]:
        best = (
            "" if job.best_metric is None else f"trial {job.best_trial_id}: {job.best_metric:.4g}"
        )
        trials = f"{job.trials_completed}/{job.trials_failed}" if job.kind == "tuning" else ""
        table.add_row(
            job.job_id,
            job.kind,
            job.state,
            job.spec.run_id,
            trials,
            best,
            escape(job.error.splitlines()[0] if job.error else ""),
        )
    console.print(table)


def print_run(record: RunRecord) -> None:
    table = Table(title=f"run {record.run_id} ({record.dataset}): {record.state}")
    for column in ("step", "state", "attempts", "duration", "outputs / error"):
        table.add_column(column)
    for name, step in record.steps.items():
        detail = step.error or ", ".join(f"{k}={v}" for k, v in step.outputs.items())
        duration = "" if step.duration_s is None else f"{step.duration_s:.3f}s"
        table.add_row(name, step.state, str(step.attempts), duration, detail)
    console.print(table)
    if record.error:
        console.print(f"[red]error:[/red] {record.error}")


for _command in [*infra_commands, *serving_commands, *tensorboard_commands, *report_commands]:
    cli.add_command(_command)
cli.add_command(schema_commands.schema)
cli.add_command(quarantine_commands.quarantine)
cli.add_command(model_module_commands.model_module)
cli.add_command(serving_plan.serving_plan)
cli.add_command(batch_predict)
cli.add_command(publish_records_command)
cli.add_command(console_command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
