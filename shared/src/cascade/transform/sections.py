"""The transform, training and tuning sections of a dataset's pipeline config.

``PipelineConfig`` gains ``transform``, ``training`` and ``tuning`` sections; until it
has them, a config without the attribute runs with each section's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from cascade.pipeline_config import PipelineConfig
from cascade.training_config import TrainingConfig, TransformConfig, TuningConfig

__all__ = ["TrainingSections", "training_sections"]


@dataclass(frozen=True)
class TrainingSections:
    transform: TransformConfig
    training: TrainingConfig
    tuning: TuningConfig


def training_sections(config: PipelineConfig) -> TrainingSections:
    """The three sections of ``config``, defaults for any it does not have yet."""
    transform = getattr(config, "transform", None)
    training = getattr(config, "training", None)
    tuning = getattr(config, "tuning", None)
    return TrainingSections(
        transform=transform if isinstance(transform, TransformConfig) else TransformConfig(),
        training=training if isinstance(training, TrainingConfig) else TrainingConfig(),
        tuning=tuning if isinstance(tuning, TuningConfig) else TuningConfig(),
    )
