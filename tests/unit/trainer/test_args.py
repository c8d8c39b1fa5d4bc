"""TrainerArgs from the command line and the Vertex AI environment; hyperparameter resolution."""

from __future__ import annotations

import json

import pytest

from cascade.core.errors import InvalidConfigError
from cascade.core.hyperparameters import resolve_hyperparameters
from cascade.core.job_spec import TrainingJobSpec
from cascade.trainer.args import ClusterConfig, TrainerArgs, parse_hyperparameter_value

JOB_SPEC = "gs://cascade-artifacts/runs/r1/training/job_spec.json"


def _job_spec(**fields: object) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate(
        {
            "run_id": "r1",
            "dataset": "credit",
            "display_name": "train-r1",
            "transform_spec_uri": "gs://b/t.json",
            "output_dir": "gs://b/out",
            **fields,
        }
    )


def test_vertex_environment_and_trial_flags_are_read() -> None:
    tf_config = {
        "cluster": {"chief": ["h0:1"], "worker": ["h1:1", "h2:1"]},
        "task": {"type": "worker", "index": 1},
    }
    environ = {
        "AIP_MODEL_DIR": "gs://b/out/7/model",
        "AIP_TENSORBOARD_LOG_DIR": "gs://b/tb",
        "AIP_CHECKPOINT_DIR": "gs://b/ckpt",
        "TF_CONFIG": json.dumps(tf_config),
        "CLOUD_ML_TRIAL_ID": "7",
        "CLOUD_ML_HP_METRIC_FILE": "/tmp/m/output.metrics",
        "CLOUD_ML_HP_METRIC_TAG": "eval_auc",
        "CLOUD_ML_JOB_ID": "123",
    }

    args = TrainerArgs.from_command_line(
        [
            "--job-spec-uri",
            JOB_SPEC,
            "--learning_rate=0.05",
            "--hidden_units=128",
            "--dropout",
            "0.2",
        ],
        environ,
    )

    assert args.job_spec_uri == JOB_SPEC
    assert args.hyperparameter_overrides == {
        "learning_rate": 0.05,
        "hidden_units": 128,
        "dropout": 0.2,
    }
    assert (args.model_dir, args.tensorboard_dir, args.checkpoint_dir) == (
        "gs://b/out/7/model",
        "gs://b/tb",
        "gs://b/ckpt",
    )
    assert args.trial_id == "7"
    assert args.is_tuning_trial
    assert args.hp_metric_file == "/tmp/m/output.metrics"
    assert args.hp_metric_tag == "eval_auc"
    assert args.job_name == "123"
    assert args.cluster is not None
    assert (args.cluster.num_workers, args.cluster.worker_index, args.is_chief) == (3, 2, False)


def test_plain_local_run_has_no_cluster_and_is_chief() -> None:
    args = TrainerArgs.from_command_line(
        [f"--job-spec-uri={JOB_SPEC}"], {"CASCADE_JOB_NAME": "j", "CLOUD_ML_JOB_ID": "7"}
    )

    assert args.cluster is None
    assert args.is_chief
    assert not args.is_tuning_trial
    assert args.job_name == "j"


@pytest.mark.parametrize(
    ("cluster", "task", "chief", "index"),
    [
        ({"chief": ["a:1"], "worker": ["b:1"]}, {"type": "chief", "index": 0}, True, 0),
        ({"chief": ["a:1"], "worker": ["b:1"]}, {"type": "worker", "index": 0}, False, 1),
        ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}, True, 0),
        ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}, False, 1),
    ],
)
def test_chief_is_the_chief_task_or_worker_zero(
    cluster: dict[str, list[str]], task: dict[str, object], chief: bool, index: int
) -> None:
    config = ClusterConfig.from_tf_config(json.dumps({"cluster": cluster, "task": task}))

    assert (config.is_chief, config.worker_index, config.num_workers) == (chief, index, 2)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--learning_rate=0.1"],
        ["positional"],
        ["--job-spec-uri"],
        ["--job-spec-uri=a", "--x=1", "--x=2"],
    ],
)
def test_bad_command_lines_are_config_errors(argv: list[str]) -> None:
    with pytest.raises(InvalidConfigError):
        TrainerArgs.from_command_line(argv, {})


def test_bad_tf_config_is_a_config_error() -> None:
    with pytest.raises(InvalidConfigError, match="TF_CONFIG"):
        TrainerArgs.from_command_line([f"--job-spec-uri={JOB_SPEC}"], {"TF_CONFIG": "{not json"})
    with pytest.raises(InvalidConfigError, match="not in its cluster"):
        ClusterConfig.from_tf_config(
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}'
        )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("64", 64),
        ("-3", -3),
        ("0.5", 0.5),
        ("1e-3", 1e-3),
        ("true", True),
        ("False", False),
        ("relu", "relu"),
    ],
)
def test_hyperparameter_values_are_typed(text: str, value: object) -> None:
    parsed = parse_hyperparameter_value(text)

    assert parsed == value
    assert type(parsed) is type(value)


def test_flags_override_job_spec_hyperparameters_which_override_its_fields() -> None:
    job_spec = _job_spec(epochs=4, batch_size=32, hyperparameters={"epochs": 6, "hidden_units": 32})

    resolved = resolve_hyperparameters(job_spec, {"hidden_units": 8.0, "learning_rate": 0.2})

    assert (resolved.epochs, resolved.batch_size) == (6, 32)
    assert (resolved.hidden_units, resolved.learning_rate) == (8, 0.2)
    assert resolved.early_stopping_patience == job_spec.early_stopping_patience


@pytest.mark.parametrize("overrides", [{"hiden_units": 8}, {"dropout": 1.5}, {"hidden_units": 2.5}])
def test_unknown_or_invalid_hyperparameters_are_config_errors(overrides: dict[str, object]) -> None:
    with pytest.raises(InvalidConfigError, match="invalid hyperparameters"):
        resolve_hyperparameters(_job_spec(), overrides)  # type: ignore[arg-type]
