"""What a Beam job is given: the spec, its template parameters, its job name (a file's
statistics, or with ``mode=materialize`` the transform's split).

Shared by the Dataflow launcher (``dataflow_runner``, which needs the Dataflow client)
and the local job service's client (``beam_jobs``, which does not).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

__all__ = [
    "BeamMaterializeSpec",
    "BeamSpec",
    "BeamStatisticsSpec",
    "dataflow_job_name",
    "launch_of",
    "materialize_parameters",
    "pipeline_parameters",
]

_JOB_NAME_MAX = 63
_NOT_NAME = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class BeamStatisticsSpec:
    """One file's statistics as a Beam job: what ``cascade.beam.pipeline`` reads."""

    run_id: str
    dataset: str
    input_uri: str
    """``gs://<landing>/<name>``: the object the job reads."""
    generation: int
    """The generation the job reads (the one the event named)."""
    uri: str
    """The file's name in messages and in the statistics (``gs://…#<generation>``)."""
    file_format: str
    validation_config: str
    """The dataset's ``ValidationConfig`` as JSON."""
    output_uri: str
    """Folder the job writes ``statistics.pb`` and ``result.json`` to."""
    float_features: tuple[str, ...] = ()
    string_features: tuple[str, ...] = ()
    block_bytes: int = 64 * 1024 * 1024
    record_fields: tuple[str, ...] | None = None
    """A stream file: the fields its records may hold (``DataSource.record_fields``)."""


def pipeline_parameters(spec: BeamStatisticsSpec) -> dict[str, str]:
    """The pipeline's arguments: Flex Template parameters in the cloud, command-line
    flags (``--name=value``) in the local job service."""
    parameters = {
        "input": spec.input_uri,
        "generation": str(spec.generation),
        "uri": spec.uri,
        "file_format": spec.file_format,
        "validation_config": spec.validation_config,
        "float_features": json.dumps(sorted(spec.float_features)),
        "string_features": json.dumps(sorted(spec.string_features)),
        "output": spec.output_uri,
        "block_bytes": str(spec.block_bytes),
    }
    if spec.record_fields is not None:  # only a stream file's job has the parameter
        parameters["record_fields"] = json.dumps(sorted(spec.record_fields))
    return parameters


@dataclass(frozen=True)
class BeamMaterializeSpec:
    """A run's train/eval split as a Beam job (``cascade.beam.materialize``)."""

    run_id: str
    dataset: str
    request_uri: str
    """``gs://<artifacts>/dataflow/inputs/<run>/materialize.json``: the
    ``MaterializeRequest`` the step stored (snapshot, fitted transform, split)."""
    output_uri: str
    """Folder the job writes the shards and ``result.json`` to (under ``dataflow/``)."""


def materialize_parameters(spec: BeamMaterializeSpec) -> dict[str, str]:
    """The materialisation's template parameters (flags in the local job service)."""
    return {"mode": "materialize", "request": spec.request_uri, "output": spec.output_uri}


BeamSpec = BeamStatisticsSpec | BeamMaterializeSpec
"""Either kind of Beam job a step launches (one template, two modes)."""


def launch_of(spec: BeamSpec) -> tuple[str, dict[str, str]]:
    """The job name and template parameters of either kind of Beam job."""
    if isinstance(spec, BeamMaterializeSpec):
        return dataflow_job_name(spec.run_id, kind="split"), materialize_parameters(spec)
    return dataflow_job_name(spec.run_id), pipeline_parameters(spec)


def dataflow_job_name(run_id: str, *, kind: str = "stats") -> str:
    """``cascade-<kind>-<run>`` (``stats``: a file's statistics; ``split``: the
    transform's materialisation): lowercase letters, digits and hyphens, a letter first
    and no hyphen last (Dataflow's ``[a-z]([-a-z0-9]{0,1022}[a-z0-9])?``), at most 63
    characters; a hash of the run id keeps shortened names unique."""
    cleaned = _NOT_NAME.sub("-", run_id.lower()).strip("-")
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:10]
    head = f"cascade-{kind}-{cleaned}"[: _JOB_NAME_MAX - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}"
