from __future__ import annotations

import pytest

from cascade.cli.sample_data import SAMPLE_PIPELINE_CONFIG
from cascade.core.errors import InvalidConfigError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.pipeline_config import load_pipeline_config, push_pipeline_config


def test_sample_config_is_stored_and_read_back() -> None:
    artifacts = MemoryArtifactStore("cascade-artifacts")

    uri = push_pipeline_config(artifacts, "credit", SAMPLE_PIPELINE_CONFIG.encode(), where="sample")

    assert uri == "gs://cascade-artifacts/datasets/credit/pipeline.yaml"
    config = load_pipeline_config(artifacts, "credit")
    assert config.label == "defaulted"
    assert config.problem_type == "binary"
    assert config.transform.key_column == "customer_id"
    assert config.training.slice_features == ["region", "employment"]


def test_invalid_config_is_refused_naming_the_field_and_not_stored() -> None:
    artifacts = MemoryArtifactStore()

    with pytest.raises(InvalidConfigError, match=r"training\.epochs"):
        push_pipeline_config(artifacts, "credit", b"training:\n  epochs: 0\n", where="bad.yaml")
    assert artifacts.objects == {}
