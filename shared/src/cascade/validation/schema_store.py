"""The dataset's stored schema, and taking a new column into it (``accept-feature``).

``datasets/<d>/schema.pbtxt`` decides which columns are features: only they enter the
baseline and the transform. A column a file brings that the schema does not list is a
``SCHEMA_NEW_COLUMN`` finding of that file and nothing more, until a person takes it
in: by editing the schema, or with ``accept_feature`` (``cascade schema
accept-feature``), which infers the feature from the statistics where it was seen and
appends it to the stored text, keeping the user's comments and formatting, with a
comment that records who took it, when and why. The write is conditional on the
generation read (``if_generation_match``): a concurrent edit makes it read again and
redo the change on the newer schema, never overwrite it.

From then on the next accepted file's statistics of that feature enter the baseline
and the next transform fits it. The files accepted before keep their statistics out
of the baseline (they were accepted under the old schema); their rows of the new
column are trained on, filled where a file lacks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf.message import DecodeError  # type: ignore[import-untyped,unused-ignore]

from cascade.core.errors import InvalidConfigError, TransientError
from cascade.core.paths import DatasetPaths, RunPaths
from cascade.core.store import ArtifactStore, Payload, StoredObject
from cascade.core.validation_config import ValidationConfig
from cascade.validation.baseline_store import load_baseline_summary
from cascade.validation.manifest import AcceptedFile
from cascade.validation.schema import (
    inactive_reason,
    infer_feature,
    infer_schema,
    parse_schema_text,
    schema_to_text,
)
from cascade.validation.statistics import summary_of_statistics
from cascade.validation.summaries import DatasetSummary, FeatureSummary
from cascade.validation.tfmd import schema_pb2, statistics_pb2

__all__ = ["AcceptedFeature", "StoredSchema", "accept_feature", "read_schema", "schema_rows"]


@dataclass(frozen=True)
class StoredSchema:
    schema: Any
    text: str
    generation: int
    uri: str

    @property
    def versioned_uri(self) -> str:
        return f"{self.uri}#{self.generation}"


@dataclass(frozen=True)
class AcceptedFeature:
    """What ``accept_feature`` did: ``added`` is False when the schema had it already."""

    feature: str
    added: bool
    schema_uri: str
    """The schema's ``gs://`` URI and its generation now (``...schema.pbtxt#<n>``)."""
    statistics_from: str
    """Where the inferred constraints came from (the baseline, or a run's statistics)."""
    feature_text: str
    """The feature as it now stands in the schema, in text format."""


def _domain(feature: Any) -> str:
    if feature.HasField("string_domain"):
        return f"{len(feature.string_domain.value)} values"
    if feature.HasField("int_domain"):
        return f"{feature.int_domain.min}..{feature.int_domain.max}"
    if feature.HasField("float_domain") and feature.float_domain.HasField("min"):
        return f"{feature.float_domain.min:g}..{feature.float_domain.max:g}"
    return ""


def _drift_setting(feature: Any) -> str:
    comparator = feature.drift_comparator
    if comparator.jensen_shannon_divergence.threshold:
        return f"JSD > {comparator.jensen_shannon_divergence.threshold:g}"
    if comparator.infinity_norm.threshold:
        return f"L-inf > {comparator.infinity_norm.threshold:g}"
    return ""


def schema_rows(stored: StoredSchema) -> list[dict[str, str]]:
    """One row per feature, as people read a schema (``cascade schema show``, the
    console): name, type, minimum presence, domain, drift comparator, status."""
    return [
        {
            "feature": feature.name,
            "type": schema_pb2.FeatureType.Name(feature.type),
            "presence": f"{feature.presence.min_fraction:g}",
            "domain": _domain(feature),
            "drift": _drift_setting(feature),
            "status": inactive_reason(feature) or "active: checked and trained on",
        }
        for feature in stored.schema.feature
    ]


def read_schema(store: ArtifactStore, dataset: str) -> StoredSchema | None:
    """The dataset's schema as stored (a user's edits included), or None if it has none.

    An unparsable schema is an InvalidConfigError naming the problem.
    """
    name = DatasetPaths(dataset).schema
    stored = store.read(name)
    if stored is None:
        return None
    text = stored.data.decode("utf-8", errors="replace")
    uri = store.uri(name)
    return StoredSchema(parse_schema_text(text, where=uri), text, stored.generation, uri)


@dataclass(frozen=True)
class _SchemaText:
    """The schema object as text, for ``ArtifactStore.update``."""

    reads_metadata = False

    def decode(self, stored: StoredObject) -> str:
        return stored.data.decode("utf-8", errors="replace")

    def encode(self, value: str) -> Payload:
        return Payload(value.encode(), "text/plain")


@dataclass(frozen=True)
class _Seen:
    """A column's statistics where it was seen, and the examples they cover."""

    feature: FeatureSummary
    examples: int
    where: str


def accept_feature(
    store: ArtifactStore,
    dataset: str,
    feature: str,
    *,
    reason: str,
    actor: str,
    now: datetime,
    config: ValidationConfig,
    run_id: str | None = None,
) -> AcceptedFeature:
    """Take ``feature`` into ``dataset``'s schema, inferred from where it was seen.

    The statistics come from the run ``run_id`` (any validated file, a quarantined one
    included) when given, else from the baseline (a baseline written before it followed
    the schema may hold it), else from the newest accepted file that had it.
    InvalidConfigError when it was never seen, or the schema lists it but disabled.
    """
    if not reason.strip():
        raise InvalidConfigError("accepting a feature needs a reason (it is recorded)")
    seen = _statistics_of(store, dataset, feature, run_id)
    proto = infer_feature(feature, seen.feature, seen.examples, config)
    note = " ".join(reason.split())
    header = (
        f"Feature {feature!r} accepted by {actor} at {now.isoformat()} with cascade schema "
        f"accept-feature, inferred from the statistics of {seen.where}: {note}"
    )
    block = _feature_text(proto, header)
    name = DatasetPaths(dataset).schema
    uri = store.uri(name)
    added = False

    def change(current: str | None) -> str | None:
        nonlocal added
        base = _schema_from_baseline(store, dataset, config) if current is None else current
        schema = parse_schema_text(base, where=uri)
        existing = next((f for f in schema.feature if f.name == feature), None)
        if existing is not None:
            disabled = inactive_reason(existing)
            if disabled is not None:
                raise InvalidConfigError(
                    f"{uri}: feature {feature!r} is listed but {disabled}: edit the schema "
                    "to turn it on again"
                )
            added = False
            return None
        added = True
        updated = base if base.endswith("\n") or not base else base + "\n"
        updated += block
        parse_schema_text(updated, where=uri)  # never store a schema that does not parse
        return updated

    result = store.update(name, _SchemaText(), change)
    stored = parse_schema_text(result.value or "", where=uri)
    now_listed = next(f for f in stored.feature if f.name == feature)
    return AcceptedFeature(
        feature=feature,
        added=added,
        schema_uri=f"{uri}#{result.generation}",
        statistics_from=seen.where,
        feature_text=_feature_text(now_listed, ""),
    )


def _feature_text(feature: Any, header: str) -> str:
    schema = schema_pb2.Schema()
    schema.feature.add().CopyFrom(feature)
    return schema_to_text(schema, header=header)


def _schema_from_baseline(store: ArtifactStore, dataset: str, config: ValidationConfig) -> str:
    """A dataset without a schema but with a baseline: the schema inference would give it."""
    baseline = _baseline_summary(store, dataset)
    if baseline is None:
        raise InvalidConfigError(
            f"dataset {dataset} has no schema and no accepted data yet: its first accepted "
            "file's columns become its schema"
        )
    header = "Inferred by cascade schema accept-feature from the dataset's baseline."
    return schema_to_text(infer_schema(baseline, config), header=header)


def _statistics_of(store: ArtifactStore, dataset: str, feature: str, run_id: str | None) -> _Seen:
    if run_id is not None:
        name = f"{RunPaths(run_id).step_dir('validation')}/stats.pb"
        summary = _summary_at(store, name)
        if summary is None:
            raise InvalidConfigError(f"run {run_id} has no validation statistics ({name})")
        found = summary.features.get(feature)
        if found is None:
            raise InvalidConfigError(f"run {run_id}'s file has no column {feature!r}")
        return _Seen(found, summary.num_examples, f"run {run_id}")
    baseline = _baseline_summary(store, dataset)
    if baseline is not None and feature in baseline.features:
        return _Seen(baseline.features[feature], baseline.num_examples, "the dataset's baseline")
    for manifest in _accepted_newest_first(store, dataset):
        summary = _summary_at(store, _object_name(store, manifest.stats_uri))
        if summary is not None and feature in summary.features:
            return _Seen(summary.features[feature], summary.num_examples, f"run {manifest.run_id}")
    raise InvalidConfigError(
        f"dataset {dataset}: no accepted file has a column {feature!r} (name the run of a "
        "quarantined file that has it to take its statistics)"
    )


def _baseline_summary(store: ArtifactStore, dataset: str) -> DatasetSummary | None:
    return load_baseline_summary(store, dataset)


def _summary_at(store: ArtifactStore, name: str) -> DatasetSummary | None:
    stored = store.read(name)
    if stored is None:
        return None
    statistics = statistics_pb2.DatasetFeatureStatisticsList()
    try:
        statistics.ParseFromString(stored.data)
    except DecodeError as error:
        raise TransientError(f"{store.uri(name)} is not a statistics proto: {error}") from error
    return summary_of_statistics(statistics)


def _object_name(store: ArtifactStore, uri: str) -> str:
    """The object name of a ``gs://`` URI in ``store``'s bucket (else the URI as is)."""
    return uri.removeprefix(f"gs://{store.bucket_name}/")


def _accepted_newest_first(store: ArtifactStore, dataset: str) -> list[AcceptedFile]:
    manifests = []
    for name in store.list_names(DatasetPaths(dataset).accepted_prefix):
        if name.endswith(".json"):
            found = store.read_model(name, AcceptedFile)
            if found is not None:
                manifests.append(found[0])
    return sorted(manifests, key=lambda m: (m.accepted_at, m.file_id), reverse=True)
