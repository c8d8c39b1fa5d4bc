"""The ``deployment`` section of a dataset's pipeline config: how a blessed model rolls out.

    deployment:
      canary_traffic_percent: 10     # the new version's share until its checks pass; 0: none
      canary_requests: 20            # smoke predictions the canary must answer
      canary_max_error_rate: 0.0     # failed share of those allowed
      canary_max_latency_ms: 1000    # p95 of those allowed
      keep_versions: 2               # deployed versions kept (the rest are undeployed)
      machine_type: n1-standard-2    # Vertex AI only
      min_replicas: 1
      max_replicas: 2
      serving_image: null            # Vertex AI only: another image of the serving container
                                     # (default: the one CI built, CASCADE_SERVING_IMAGE)

The first version of a dataset takes all traffic at once (there is nothing to compare a
canary with); later versions start at ``canary_traffic_percent`` and are promoted to 100%
when the canary's checks pass, or rolled back.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DeploymentConfig"]


class DeploymentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    canary_traffic_percent: int = Field(10, ge=0, le=100)
    canary_requests: int = Field(20, ge=1, le=1000)
    canary_max_error_rate: float = Field(0.0, ge=0, le=1)
    canary_max_latency_ms: float = Field(1000.0, gt=0)
    keep_versions: int = Field(2, ge=1, le=10, description="Deployed versions kept.")
    machine_type: str = Field("n1-standard-2", min_length=1)
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(2, ge=1)
    serving_image: str | None = Field(
        None,
        min_length=1,
        description=(
            "Vertex AI only: an image of Cascade's serving container (shared/Dockerfile.serving)"
            " to serve this dataset; by default the one CI built (CASCADE_SERVING_IMAGE)."
        ),
    )
    endpoint_service_account: str | None = Field(
        None, description="Service account the Vertex AI deployed model runs as."
    )

    @model_validator(mode="after")
    def _replicas_ordered(self) -> DeploymentConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self
