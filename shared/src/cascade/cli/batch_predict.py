"""``cascade batch-predict DATASET``: score a BigQuery table or Cloud Storage files with a
deployed model version and write one prediction per key to BigQuery.

By default it runs the scoring code (``cascade.batch.task.run_batch``) in this process
against the local cloud (the local BigQuery and Cloud Storage emulators); ``--from-env``
takes the settings from the environment instead. ``--vertex`` submits a Vertex AI
``BatchPredictionJob`` for the same batch (the deployed version's Vertex AI model).
"""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.markup import escape

from cascade.batch.jobs import batch_id_for
from cascade.batch.task import PREDICTIONS_WAREHOUSE, deployed_version, model_inputs, run_batch
from cascade.batch.vertex import (
    batch_prediction_job,
    job_service_client,
    submit_batch_prediction_job,
)
from cascade.cli.cloud_settings import command_settings
from cascade.core.clients import make_storage_client
from cascade.core.errors import BadInputError, BadRequestError, InvalidConfigError
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore

__all__ = ["batch_predict"]

console = Console()


def _settings(from_env: bool) -> Settings:
    return command_settings(from_env, console)


@click.command("batch-predict")
@click.argument("dataset")
@click.option("--table", default=None, help="The BigQuery table to score: project.dataset.table.")
@click.option(
    "--files",
    multiple=True,
    help="gs:// objects to score (CSV, JSONL, Parquet), or one gs://bucket/prefix/ folder. "
    "Repeat for several.",
)
@click.option("--version", default=None, help="Model version (default: the primary one).")
@click.option(
    "--from-env", is_flag=True, help="Settings from the environment, not the local cloud."
)
@click.option(
    "--vertex", is_flag=True, help="Submit a Vertex AI BatchPredictionJob instead of scoring here."
)
def batch_predict(
    dataset: str,
    table: str | None,
    files: tuple[str, ...],
    version: str | None,
    from_env: bool,
    vertex: bool,
) -> None:
    """Score a table or files with DATASET's model; predictions go to BigQuery."""
    if (table is None) == (not files):
        raise click.UsageError("give either --table or --files")
    settings = _settings(from_env or vertex)
    try:
        if vertex:
            _submit(settings, dataset, table, files, version)
            return
        result = run_batch(settings, dataset=dataset, table=table, files=files, version=version)
    except (BadRequestError, BadInputError, InvalidConfigError, ValueError) as error:
        console.print(f"[red]batch prediction refused:[/red] {escape(str(error))}")
        sys.exit(1)
    manifest = result.manifest
    if result.skipped:
        console.print(f"batch {manifest.batch_id} already ran; nothing written again")
    console.print(
        f"{manifest.rows_scored} row(s) scored into {manifest.predictions_table}, "
        f"{manifest.rows_failed} refused into {manifest.errors_table} "
        f"(model version {manifest.model_version}, batch {manifest.batch_id})"
    )
    click.echo(json.dumps(manifest.model_dump(mode="json")))


def _submit(
    settings: Settings,
    dataset: str,
    table: str | None,
    files: tuple[str, ...],
    version: str | None,
) -> None:
    storage_client = make_storage_client(settings)
    artifacts = ArtifactStore(storage_client, settings.artifacts_bucket)
    deployed = deployed_version(artifacts, dataset, version)
    inputs = model_inputs(
        lambda bucket: (
            artifacts if bucket == artifacts.bucket_name else ArtifactStore(storage_client, bucket)
        ),
        deployed,
    )
    source = f"bq://{table}" if table is not None else ",".join(sorted(files))
    # The job's own input is versioned by Vertex AI's run; the id names what was asked.
    batch_id = batch_id_for(dataset, deployed.version, f"vertex:{source}")
    job = batch_prediction_job(
        dataset=dataset,
        version=deployed.version,
        vertex_model=deployed.vertex_model,
        batch_id=batch_id,
        inputs=inputs,
        output_project=settings.project,
        output_dataset=settings.warehouse_dataset(PREDICTIONS_WAREHOUSE),
        settings=settings,
        table=table,
        files=files,
    )
    client = job_service_client(settings)
    try:
        name = submit_batch_prediction_job(client, settings, job)
    finally:
        client.transport.close()  # type: ignore[no-untyped-call]
    console.print(f"submitted {escape(name)}")
