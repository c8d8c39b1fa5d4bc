"""Which deployer a deploy function uses: ``Settings.deploy_target`` (``vertex`` in the
cloud, where it is the default; ``local`` in the local cloud, which also sets
``CASCADE_DEPLOY_MODEL_SERVER_URL``)."""

from __future__ import annotations

from cascade.core.context import StepContext
from cascade.core.errors import InvalidConfigError
from cascade.deploy.deployer import Deployer

__all__ = ["deployer_for"]


def deployer_for(ctx: StepContext) -> Deployer:
    settings = ctx.settings
    if settings.deploy_target == "local":
        from cascade.deploy.local_deployer import (
            LocalDeployer,  # only the deployer in use is imported
        )

        if not settings.deploy_model_server_url:
            raise InvalidConfigError("CASCADE_DEPLOY_MODEL_SERVER_URL is not set (local target)")
        return LocalDeployer(ctx.artifacts, settings.deploy_model_server_url, clock=ctx.clock)
    from cascade.deploy.vertex_deployer import VertexDeployer  # aiplatform is slow to import

    return VertexDeployer(
        ctx.artifacts,
        project=settings.project,
        region=settings.region,
        clock=ctx.clock,
        serving_image=settings.serving_image,
    )
