"""``infra_check.json``: the result of the trainer's load-and-probe check.

The models only, without TensorFlow or numpy, so that evaluation and the run report
read a probe's result without importing what running the probe needs
(``cascade.trainer.probe``).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SIGNATURE", "InfraCheck", "LatencyStats", "ProbeCase"]

SIGNATURE = "serving_default"


class ProbeCase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    rows: int
    passed: bool
    reasons: list[str] = Field(default_factory=list)


class LatencyStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    single_row_p50_ms: float
    single_row_p95_ms: float
    batch_rows: int
    batch_p50_ms: float
    calls: int


class InfraCheck(BaseModel):
    """``infra_check.json``: did the exported model load and answer sensibly, and how fast."""

    model_config = ConfigDict(extra="forbid")

    model_dir: str
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    signature: str = SIGNATURE
    inputs: dict[str, str] = Field(default_factory=dict)
    outputs: list[str] = Field(default_factory=list)
    cases: list[ProbeCase] = Field(default_factory=list)
    latency: LatencyStats | None = None
    load_seconds: float = 0.0
    checked_at: datetime
