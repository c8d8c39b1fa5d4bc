"""The batch-prediction job's entry point: ``python -m cascade.batch.task``.

    python -m cascade.batch.task --dataset credit-risk --table proj.ds.customers [--version 3]
    python -m cascade.batch.task --dataset credit-risk --files gs://landing/batch/ [--version 3]

It reads the runtime settings from the environment (``CASCADE_*``,
``STORAGE_EMULATOR_HOST``, ``BIGQUERY_EMULATOR_HOST``: the local cloud sets them on the
processes it starts), picks the model version (``--version``, or the one serving most of
the traffic in ``models/<dataset>/serving.json``), downloads and loads it, and scores the
source with ``cascade.batch.scoring``; it prints the batch manifest as JSON. The same
code runs in the CLI (``cascade batch-predict``) and in the ``batch-predict`` step.

A hybrid dataset whose pipeline config has ``serving.head`` scores only the source rows
whose key is in its head (``cascade.batch.head``: the most requested keys of the request
log); the rows outside it are skipped and counted in the log, and the head is part of
the batch's identity. An empty head (no traffic logged yet) scores the whole source.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import google.cloud.bigquery as bigquery

from cascade.batch.head import HeadSource, log_endpoint, read_head, request_log_table
from cascade.batch.scoring import BatchResult, PredictionSink, score_source
from cascade.batch.sources import BigQueryTableSource, FileSource, InstanceSource
from cascade.core.clients import make_storage_client
from cascade.core.context import utc_now
from cascade.core.errors import BadInputError, BadRequestError, InvalidConfigError
from cascade.core.observability import configure_logging
from cascade.core.pipeline_config import load_pipeline_config
from cascade.core.serving_config import HeadConfig
from cascade.core.settings import Settings, load_settings
from cascade.core.store import ArtifactStore
from cascade.core.warehouse import make_bigquery_client
from cascade.serving.precomputed import PrecomputedSettings, PrecomputedStore, store_factory
from cascade.serving.servable import Servable, load_servable
from cascade.serving.state import DeployedVersion, read_serving_state
from cascade.serving.uris import UriReader, split_gcs_uri

__all__ = [
    "PREDICTIONS_WAREHOUSE",
    "deployed_version",
    "file_source",
    "main",
    "model_inputs",
    "precomputed_store_for",
    "run_batch",
]

PREDICTIONS_WAREHOUSE = "predictions"
"""The topology's warehouse dataset of batch predictions (infra/topology.yaml)."""
_log = logging.getLogger("cascade.batch.task")


def deployed_version(
    artifacts: ArtifactStore, dataset: str, version: str | None
) -> DeployedVersion:
    """``version`` of ``dataset`` (deployed now or earlier), or the primary version."""
    found = read_serving_state(artifacts, dataset)
    if found is None:
        raise BadRequestError(f"nothing of {dataset!r} was ever deployed: no model to score with")
    state = found[0]
    chosen = state.primary if version is None else state.version(version)
    if chosen is None:
        known = ", ".join(item.version for item in state.versions) or "none"
        wanted = "a version with traffic" if version is None else f"version {version!r}"
        raise BadRequestError(f"{dataset!r} has no {wanted} (versions: {known})")
    return chosen


def file_source(
    settings: Settings, store_for_bucket: Callable[[str], ArtifactStore], uris: Sequence[str]
) -> FileSource:
    """``gs://`` objects (or one ``gs://bucket/prefix/`` folder) of the landing or the
    artifacts bucket: no other bucket is read."""
    buckets = {split_gcs_uri(uri)[0] for uri in uris}
    if len(buckets) != 1:
        raise BadRequestError("one batch reads files of one bucket")
    bucket = buckets.pop()
    if bucket not in (settings.landing_bucket, settings.artifacts_bucket):
        raise BadRequestError(
            f"gs://{bucket} is neither the landing nor the artifacts bucket: batch "
            "prediction reads only those"
        )
    store = store_for_bucket(bucket)
    names = [split_gcs_uri(uri)[1] for uri in uris]
    if len(names) == 1 and (names[0].endswith("/") or not names[0]):
        return FileSource.under(store, names[0])
    return FileSource(store, names)


def _load(
    store_for_bucket: Callable[[str], ArtifactStore], deployed: DeployedVersion, root: Path
) -> Servable:
    reader = UriReader(store_for_bucket)
    local = reader.download_tree(deployed.model_uri, root / "model")
    return load_servable(
        local, version=deployed.version, run_id=deployed.run_id, model_uri=deployed.model_uri
    )


def model_inputs(
    store_for_bucket: Callable[[str], ArtifactStore], deployed: DeployedVersion
) -> list[str]:
    """The inputs of the deployed version's serving signature (its key included)."""
    with tempfile.TemporaryDirectory(prefix="cascade-batch-") as folder:
        return sorted(_load(store_for_bucket, deployed, Path(folder)).inputs)


def run_batch(
    settings: Settings,
    *,
    dataset: str,
    table: str | None = None,
    files: Sequence[str] = (),
    version: str | None = None,
    sink: PredictionSink | None = None,
    store_for_bucket: Callable[[str], ArtifactStore] | None = None,
    now: Callable[[], datetime] = utc_now,
) -> BatchResult:
    """Score ``table`` or ``files`` with a deployed version of ``dataset`` (only the rows
    of its head when its config has ``serving.head``; ``now`` ends the head's window).
    ``store_for_bucket`` (tests: in-memory stores) defaults to Cloud Storage."""
    if (table is None) == (not files):
        raise BadRequestError("score either a BigQuery table (--table) or files (--files)")
    if store_for_bucket is None:
        storage_client = make_storage_client(settings)
        stores: dict[str, ArtifactStore] = {}

        def cloud_store(bucket: str) -> ArtifactStore:
            if bucket not in stores:
                stores[bucket] = ArtifactStore(
                    storage_client, bucket, update_attempts=settings.run_update_attempts
                )
            return stores[bucket]

        store_for_bucket = cloud_store
    artifacts = store_for_bucket(settings.artifacts_bucket)
    deployed = deployed_version(artifacts, dataset, version)
    head = load_pipeline_config(artifacts, dataset).serving.head
    store = None if sink is not None else precomputed_store_for(settings, artifacts, dataset)
    client = make_bigquery_client(settings)
    try:
        source: InstanceSource = (
            BigQueryTableSource(client, table)
            if table is not None
            else file_source(settings, store_for_bucket, files)
        )
        with tempfile.TemporaryDirectory(prefix="cascade-batch-") as folder:
            servable = _load(store_for_bucket, deployed, Path(folder))
            if isinstance(source, BigQueryTableSource):
                source.read_only(servable.inputs)
            filtered: HeadSource | None = None
            if head is not None:
                filtered = _head_of(
                    settings, client, artifacts, dataset, source, servable.key or "key", head, now
                )
            result = score_source(
                source=source if filtered is None else filtered,
                servable=servable,
                dataset=dataset,
                client=client,
                artifacts=artifacts,
                project=settings.project,
                bq_dataset=settings.warehouse_dataset(PREDICTIONS_WAREHOUSE),
                sink=sink if sink is not None else store,
            )
            if filtered is not None and not result.skipped:
                _log.info(
                    "batch %s of %s: %d row(s) of the head scored, %d row(s) outside the "
                    "head skipped",
                    result.manifest.batch_id,
                    dataset,
                    filtered.inside,
                    filtered.outside,
                )
            return result
    finally:
        client.close()  # type: ignore[no-untyped-call]
        if store is not None:
            store.close()


def _head_of(
    settings: Settings,
    client: bigquery.Client,
    artifacts: ArtifactStore,
    dataset: str,
    source: InstanceSource,
    key: str,
    config: HeadConfig,
    now: Callable[[], datetime],
) -> HeadSource | None:
    """``source`` filtered to the dataset's head, or None (the whole source) when the head
    is empty. The key field is the model's key input: what the model server logs each
    instance's key under, and what the batch keys rows by."""
    head = read_head(
        client,
        request_log_table(settings),
        config=config,
        endpoint=log_endpoint(artifacts, dataset),
        key_field=key,
        now=now(),
    )
    if head.empty:  # worth a warning: a hybrid dataset's batch scores everything
        _log.warning("batch of %s: %s", dataset, head.describe())
        return None
    _log.info("batch of %s: %s", dataset, head.describe())
    return HeadSource(source, head, key)


def precomputed_store_for(
    settings: Settings, artifacts: ArtifactStore, dataset: str
) -> PrecomputedStore | None:
    """The precomputed-answers store when ``dataset`` is served static or hybrid (its
    batch answers then go there too), else None; a static or hybrid dataset without a
    configured store is refused, as its answers would reach no server."""
    found = read_serving_state(artifacts, dataset)
    if found is None or found[0].mode == "dynamic":
        return None
    factory = store_factory(PrecomputedSettings(), settings.project)
    if factory is None:
        raise BadRequestError(
            f"{dataset!r} is served {found[0].mode} but no precomputed store is configured "
            "(CASCADE_PRECOMPUTED_INSTANCE)"
        )
    return factory()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cascade.batch.task")
    parser.add_argument("--dataset", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--table", help="project.dataset.table")
    source.add_argument("--files", nargs="+", help="gs:// objects, or one gs://bucket/prefix/")
    parser.add_argument("--version", default=None, help="model version (default: the primary)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(function_name="batch-task", project=settings.project)
        result = run_batch(
            settings,
            dataset=args.dataset,
            table=args.table,
            files=args.files or (),
            version=args.version,
        )
    except (BadRequestError, BadInputError, InvalidConfigError, ValueError) as error:
        print(f"batch prediction refused: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"skipped": result.skipped, **result.manifest.model_dump(mode="json")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
