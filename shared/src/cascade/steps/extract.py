"""extract: a dataset's BigQuery source, incrementally, into the landing bucket.

Triggered by an ``ExtractRequest`` on ``extract-requests``: from the schedule
(``schedules.extract``: every dataset whose pipeline config has a ``bigquery_source``)
or from anyone allowed to publish there (one dataset). For each dataset:

1. read the state (``datasets/<d>/extraction/watermark.json``: extractions finished, the
   last ``high``) and the plan of the next extraction, if one was made;
2. without a plan: ``high = SELECT MAX(watermark)`` *before* exporting. No row above the
   last ``high``: nothing to do (no file, no run). Else create the plan (create-only:
   concurrent deliveries agree on one range; a crashed delivery's successor finds it);
3. take the extraction's claim (a lease: one delivery works at a time, a dead one's work
   is taken over), and unless an attempt's export is recorded (``exported.json``),
   ``EXPORT DATA`` the plan's rows (``low < wm <= high``, query parameters) as Parquet
   into this attempt's staging folder of the artifacts bucket (which triggers nothing),
   then record that attempt's shards (create-only: the first attempt recorded wins);
4. copy each recorded shard into the landing bucket as
   ``<dataset>/extracts/<extraction id>/part-<n>.parquet`` unless it is there
   (create-only): each is a landed file, validated by its own run as usual;
5. advance the state to the plan's ``high`` (generation precondition), mark the claim
   done, and delete the staging folders.

A crash anywhere repeats at most the current extraction's unfinished part: before the
export record, nothing has landed, and a new attempt exports again into its own folder;
after it, only missing shards are copied; after the copies, only the state advances.
A redelivered request after that finds the state advanced and no new rows. So each row
of the source lands once (rows are not lost unless one arrives later with a watermark at
or below an extracted ``high``: the column must grow with arrival).

A sweep's per-dataset failures do not stop the others: a permanent one (bad config,
refused by BigQuery) is alerted; a transient one is logged and left to the next tick. A
request naming one dataset raises a transient failure (redelivered with backoff).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import google.cloud.storage as storage
from google.api_core import exceptions as gexc

from cascade.core.bigquery_export import BigQueryExporter, SourceExporter
from cascade.core.bigquery_source import (
    BigQuerySource,
    WatermarkConfig,
    decode_watermark,
    encode_watermark,
)
from cascade.core.claims import Claim, ClaimHandle, LeaseHeartbeat
from cascade.core.clients import make_storage_client
from cascade.core.context import StepContext
from cascade.core.errors import (
    BadInputError,
    ConcurrentUpdateError,
    PermanentError,
    StepInProgressError,
    TransientError,
    is_transient,
    transient_errors,
)
from cascade.core.events import PubSubEnvelope, decode_message
from cascade.core.export_landing import ExportLanding, export_landing_for
from cascade.core.extraction import (
    SHARD_NAME,
    ExportedShards,
    ExtractionPaths,
    ExtractionPlan,
    ExtractionState,
    ExtractRequest,
    extraction_id_for,
)
from cascade.core.messages import Alert
from cascade.core.pipeline_config import load_pipeline_config
from cascade.core.settings import DATASET_NAME_PATTERN
from cascade.core.store import ArtifactStore
from cascade.core.warehouse import make_bigquery_client

__all__ = [
    "STEP",
    "ExtractReport",
    "ExtractTools",
    "Extraction",
    "ShardCopier",
    "StorageShardCopier",
    "datasets_with_sources",
    "extract_dataset",
    "handle_extract_request",
]

STEP = "extract"
_log = logging.getLogger("cascade.steps.extract")

Outcome = Literal["no-new-rows", "extracted", "already-extracted", "in-progress"]


@dataclass(frozen=True)
class Extraction:
    """What one dataset's extraction did."""

    dataset: str
    outcome: Outcome
    extraction_id: str | None = None
    low: str | int | None = None
    high: str | int | None = None
    landed: tuple[str, ...] = ()
    """Landing object names of the shards this extraction holds (copied now or before)."""


@dataclass
class ExtractReport:
    extractions: list[Extraction] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


class ShardCopier:
    """Copies a staged shard into the landing bucket, create-only (a protocol)."""

    def copy_new(self, source_bucket: str, name: str, landing_bucket: str, new_name: str) -> bool:
        """Copy unless ``new_name`` exists; True when this call created it."""
        raise NotImplementedError


class StorageShardCopier(ShardCopier):
    """Server-side copy (rewrite) with ``if_generation_match=0``: Cloud Storage refuses a
    second copy to the same name with 412 (locally the GCS front does, as fake-gcs-server
    ignores the precondition on copies). The destination is looked up first too, which
    saves a copy request for a shard a resumed extraction landed already."""

    def __init__(self, client: storage.Client) -> None:
        self._client = client

    def copy_new(self, source_bucket: str, name: str, landing_bucket: str, new_name: str) -> bool:
        source = self._client.bucket(source_bucket)
        destination = self._client.bucket(landing_bucket)
        with transient_errors(f"copying gs://{source_bucket}/{name}"):
            if destination.blob(new_name).exists():
                return False
            try:
                source.copy_blob(source.blob(name), destination, new_name, if_generation_match=0)
            except gexc.PreconditionFailed:
                return False
        return True


@dataclass
class ExtractTools:
    """What an extraction works with besides the context (fakes in unit tests)."""

    exporter: SourceExporter
    landing: ExportLanding
    copier: ShardCopier


# ---------------------------------------------------------------- the function


_TOOLS: list[tuple[StepContext, ExtractTools]] = []


def _tools(ctx: StepContext) -> ExtractTools:
    """This instance's tools, made on first use (clients created once per instance)."""
    for known, tools in _TOOLS:
        if known is ctx:
            return tools
    settings = ctx.settings
    tools = ExtractTools(
        exporter=BigQueryExporter(make_bigquery_client(settings), settings.warehouse_dataset),
        landing=export_landing_for(settings, ctx.store),
        copier=StorageShardCopier(make_storage_client(settings)),
    )
    _TOOLS[:] = [(ctx, tools)]
    return tools


def handle_extract_request(
    ctx: StepContext,
    attributes: dict[str, Any],
    data: Any,
    tools: ExtractTools | None = None,
) -> ExtractReport:
    """The ``extract`` function: one ``ExtractRequest`` (one dataset, or a sweep)."""
    envelope = PubSubEnvelope.from_cloudevent(attributes, data)
    request = decode_message(envelope, ExtractRequest)
    tools = tools or _tools(ctx)
    report = ExtractReport()
    if request.dataset is not None:
        extraction = extract_dataset(ctx, request.dataset, tools)
        if extraction.outcome == "in-progress":  # redelivered until its owner finishes
            raise StepInProgressError(
                f"extraction {extraction.extraction_id} of {request.dataset} is in progress"
            )
        report.extractions.append(extraction)
    else:
        for dataset in datasets_with_sources(ctx.artifacts):
            _sweep_one(ctx, dataset, tools, report)
    _log.info(
        "extract: %d extraction(s) landed, %d without new rows, %d failed",
        sum(item.outcome == "extracted" for item in report.extractions),
        sum(item.outcome == "no-new-rows" for item in report.extractions),
        len(report.failures),
        extra={
            "labels": {"event_id": envelope.event_id, "request_id": request.request_id or ""},
            "json_fields": asdict(report),
        },
    )
    return report


def _sweep_one(ctx: StepContext, dataset: str, tools: ExtractTools, report: ExtractReport) -> None:
    try:
        report.extractions.append(extract_dataset(ctx, dataset, tools))
    except PermanentError as error:
        report.failures[dataset] = str(error)
        _alert(ctx, dataset, str(error))
    except Exception as error:
        if not is_transient(error):
            raise
        report.failures[dataset] = str(error)
        _log.warning("extract: %s: %s (the next sweep tries again)", dataset, error)


def _alert(ctx: StepContext, dataset: str, summary: str) -> None:
    ctx.bus.publish(
        Alert(dataset=dataset, step=STEP, severity="ERROR", summary=summary[:1000], at=ctx.clock())
    )


def datasets_with_sources(artifacts: ArtifactStore) -> Iterator[str]:
    """Datasets whose pipeline config names a ``bigquery_source`` (a config that does
    not parse is reported by the extraction of that dataset, not skipped silently)."""
    prefix, suffix = "datasets/", "/pipeline.yaml"
    for name in artifacts.list_names(prefix):
        dataset = name[len(prefix) : -len(suffix)] if name.endswith(suffix) else ""
        if not DATASET_NAME_PATTERN.fullmatch(dataset):
            continue
        try:
            stored = artifacts.read(name)
        except BadInputError:  # stored encoded and unreadable: its extraction says why
            yield dataset
            continue
        if stored is not None and re.search(rb"(?m)^bigquery_source\s*:", stored.data):
            yield dataset


# ---------------------------------------------------------------- one dataset


def extract_dataset(ctx: StepContext, dataset: str, tools: ExtractTools) -> Extraction:
    """Extract ``dataset``'s new rows (see the module's steps 1-5)."""
    source = _source_of(ctx, dataset)
    paths = ExtractionPaths(dataset)
    state, state_generation = _state(ctx.artifacts, paths)
    plan = _read(ctx.artifacts, paths.plan(state.sequence), ExtractionPlan)
    if plan is None:
        plan = _plan(ctx, dataset, source, state, tools.exporter)
        if plan is None:
            return Extraction(dataset, "no-new-rows", low=state.watermark)
    handle = _acquire(ctx, paths, plan)
    if handle is None:  # done already: only the state may be behind
        _advance(ctx, paths, plan, state_generation)
        return _done(ctx, paths, plan)
    if isinstance(handle, Claim):
        return Extraction(dataset, "in-progress", plan.extraction_id, plan.low, plan.high)
    # The planned range is of the planned column, whatever the config says meanwhile.
    planned = WatermarkConfig(column=plan.watermark_column, type=plan.watermark_type)
    source = source.model_copy(update={"watermark": planned})
    with LeaseHeartbeat(handle, lease=ctx.claim_lease, clock=ctx.clock):
        exported = _exported(ctx, paths, plan, source, handle, tools)
        landed = _land(ctx, paths, plan, exported, tools.copier)
        _advance(ctx, paths, plan, state_generation)
        handle.complete("extracted")
    _clean_staging(ctx.artifacts, paths, plan.sequence)
    return Extraction(dataset, "extracted", plan.extraction_id, plan.low, plan.high, landed)


def _source_of(ctx: StepContext, dataset: str) -> BigQuerySource:
    source = load_pipeline_config(ctx.artifacts, dataset).bigquery_source
    if source is None:
        raise _NoSourceError(
            f"dataset {dataset}: its pipeline config names no bigquery_source to extract"
        )
    return source


class _NoSourceError(PermanentError):
    pass


def _read(store: ArtifactStore, name: str, model: type[Any]) -> Any:
    found = store.read_model(name, model)
    return None if found is None else found[0]


def _state(store: ArtifactStore, paths: ExtractionPaths) -> tuple[ExtractionState, int]:
    found = store.read_model(paths.state, ExtractionState)
    return (ExtractionState(), 0) if found is None else found


def _plan(
    ctx: StepContext,
    dataset: str,
    source: BigQuerySource,
    state: ExtractionState,
    exporter: SourceExporter,
) -> ExtractionPlan | None:
    """The next extraction's plan: created here, or by a delivery that won the race."""
    kind = source.watermark.type
    if state.watermark is not None and state.watermark_type not in (None, kind):
        raise _NoSourceError(
            f"dataset {dataset}: bigquery_source.watermark.type changed from "
            f"{state.watermark_type} to {kind} after extractions; delete "
            f"{ctx.artifacts.uri(ExtractionPaths(dataset).state)} to extract from scratch"
        )
    low = None if state.watermark is None else decode_watermark(kind, state.watermark)
    high = exporter.max_watermark(dataset, source)
    if high is None or (low is not None and high <= low):  # type: ignore[operator]
        return None
    encoded_high = encode_watermark(kind, high)
    plan = ExtractionPlan(
        dataset=dataset,
        sequence=state.sequence,
        extraction_id=extraction_id_for(dataset, state.sequence, state.watermark, encoded_high),
        watermark_column=source.watermark.column,
        watermark_type=kind,
        low=state.watermark,
        high=encoded_high,
        planned_at=ctx.clock(),
    )
    name = ExtractionPaths(dataset).plan(state.sequence)
    if ctx.artifacts.write_json(name, plan, if_generation_match=0) is None:
        winner: ExtractionPlan | None = _read(ctx.artifacts, name, ExtractionPlan)
        if winner is None:
            raise TransientError(f"{ctx.artifacts.uri(name)}: created and gone; retry")
        return winner
    return plan


def _acquire(
    ctx: StepContext, paths: ExtractionPaths, plan: ExtractionPlan
) -> ClaimHandle | Claim | None:
    """The extraction's claim: a handle to work with, the live Claim of another
    delivery, or None when the extraction is done."""
    name = paths.claim(plan.sequence)
    now = ctx.clock()
    owner = f"{ctx.settings.function_name}:{uuid.uuid4().hex}"

    def take(existing: Claim | None) -> Claim | None:
        if existing is None:
            return Claim(
                run_id=plan.extraction_id,
                step=STEP,
                owner=owner,
                claimed_at=now,
                lease_expires_at=now + ctx.claim_lease,
            )
        if existing.state == "done" or existing.lease_expires_at > now:
            return None
        return existing.model_copy(
            update={
                "owner": owner,
                "claimed_at": now,
                "lease_expires_at": now + ctx.claim_lease,
                "takeovers": existing.takeovers + 1,
            }
        )

    try:
        taken = ctx.artifacts.update(name, Claim, take, max_attempts=3)
    except ConcurrentUpdateError:
        return _read(ctx.artifacts, name, Claim) or _in_progress(plan)
    claim = taken.value
    assert claim is not None
    if claim.state == "done":
        return None
    if claim.owner != owner:
        return claim
    return ClaimHandle(ctx.artifacts, name, claim, taken.generation)


def _in_progress(plan: ExtractionPlan) -> Claim:
    raise StepInProgressError(f"extraction {plan.extraction_id} of {plan.dataset}: contended")


def _exported(
    ctx: StepContext,
    paths: ExtractionPaths,
    plan: ExtractionPlan,
    source: BigQuerySource,
    handle: ClaimHandle,
    tools: ExtractTools,
) -> ExportedShards:
    """The recorded export of the plan: an earlier attempt's, or this one's."""
    name = paths.exported(plan.sequence)
    recorded: ExportedShards | None = _read(ctx.artifacts, name, ExportedShards)
    if recorded is not None:
        return recorded
    attempt = handle.claim.takeovers
    staging = paths.staging(plan.sequence, attempt)
    kind = plan.watermark_type
    low = None if plan.low is None else decode_watermark(kind, plan.low)
    uri_prefix = ctx.artifacts.uri(staging)
    tools.exporter.export(plan.dataset, source, low, decode_watermark(kind, plan.high), uri_prefix)
    tools.landing.land(uri_prefix)
    shards = sorted(
        shard
        for shard in ctx.artifacts.list_names(staging)
        if SHARD_NAME.fullmatch(shard[len(staging) :])
    )
    exported = ExportedShards(
        extraction_id=plan.extraction_id, attempt=attempt, shards=shards, exported_at=ctx.clock()
    )
    if ctx.artifacts.write_json(name, exported, if_generation_match=0) is None:
        winner: ExportedShards | None = _read(ctx.artifacts, name, ExportedShards)
        if winner is None:
            raise TransientError(f"{ctx.artifacts.uri(name)}: created and gone; retry")
        return winner
    return exported


def _land(
    ctx: StepContext,
    paths: ExtractionPaths,
    plan: ExtractionPlan,
    exported: ExportedShards,
    copier: ShardCopier,
) -> tuple[str, ...]:
    landed = []
    for shard in exported.shards:
        new_name = paths.landed(plan.extraction_id, shard.rsplit("/", 1)[-1])
        copier.copy_new(ctx.artifacts.bucket_name, shard, ctx.settings.landing_bucket, new_name)
        landed.append(new_name)
    return tuple(landed)


def _advance(
    ctx: StepContext, paths: ExtractionPaths, plan: ExtractionPlan, state_generation: int
) -> None:
    """The state after ``plan`` (unless another delivery advanced it already)."""
    state = ExtractionState(
        sequence=plan.sequence + 1,
        watermark=plan.high,
        watermark_type=plan.watermark_type,
        extraction_id=plan.extraction_id,
        updated_at=ctx.clock(),
    )
    if ctx.artifacts.write_json(paths.state, state, if_generation_match=state_generation):
        return
    current, _ = _state(ctx.artifacts, paths)
    if current.sequence <= plan.sequence:
        raise TransientError(f"{ctx.artifacts.uri(paths.state)} changed meanwhile; retry")


def _done(ctx: StepContext, paths: ExtractionPaths, plan: ExtractionPlan) -> Extraction:
    exported: ExportedShards | None = _read(
        ctx.artifacts, paths.exported(plan.sequence), ExportedShards
    )
    landed = tuple(
        paths.landed(plan.extraction_id, shard.rsplit("/", 1)[-1])
        for shard in (exported.shards if exported else [])
    )
    return Extraction(
        plan.dataset, "already-extracted", plan.extraction_id, plan.low, plan.high, landed
    )


def _clean_staging(store: ArtifactStore, paths: ExtractionPaths, sequence: int) -> None:
    """Delete every attempt's staged shards (they have landed); a failure is logged."""
    try:
        for name in list(store.list_names(paths.staging_root(sequence))):
            store.delete(name)
    except Exception as error:
        if not is_transient(error):
            raise
        _log.warning(
            "extract: staged shards left under %s: %s", paths.staging_root(sequence), error
        )
