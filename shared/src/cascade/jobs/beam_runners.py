"""Which Beam runner a process uses: the local job service when its URL is set, else Dataflow.

Apart from ``jobs.runners`` (Vertex AI's selector) so that a function that launches or
follows Beam jobs installs Dataflow's client and not Vertex AI's.
"""

from __future__ import annotations

from functools import cache

from cascade.core.settings import Settings
from cascade.jobs.beam_records import BeamRunner

__all__ = ["beam_runner_for"]


@cache
def beam_runner_for(settings: Settings) -> BeamRunner:
    """Beam jobs (statistics, splits): the local job service's Dataflow stand-in when its URL is
    set (the local cloud sets it on every function), else Dataflow, whose client library
    is imported only then."""
    if settings.job_service_url:
        from cascade.jobs.beam_jobs import LocalBeamRunner

        return LocalBeamRunner(settings.job_service_url)
    from cascade.jobs.dataflow_runner import DataflowBeamRunner

    return DataflowBeamRunner.from_settings(settings)
