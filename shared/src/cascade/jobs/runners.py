"""Which job runner a process uses: the local job service when its URL is set, else Vertex AI.

The local cloud sets ``CASCADE_JOB_SERVICE_URL`` on every function it starts; Terraform
does not, so deployed functions submit to Vertex AI with the project, region, trainer
image and jobs service account of ``Settings``.
"""

from __future__ import annotations

from functools import cache

from cascade.core.job_spec import JobRunner
from cascade.core.settings import Settings

__all__ = ["job_runner_for"]


@cache
def job_runner_for(settings: Settings) -> JobRunner:
    """One runner per process (clients are created lazily, on first use)."""
    if settings.job_service_url:
        from cascade.jobs.local_runner import LocalJobRunner

        return LocalJobRunner(settings.job_service_url)
    from cascade.jobs.vertex_runner import VertexJobRunner

    return VertexJobRunner.from_settings(settings, timeout_s=settings.job_timeout_s)
