"""The load-and-probe check, in a fresh process: NaN models fail, good models pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import tensorflow as tf

from cascade.core.hyperparameters import Hyperparameters
from cascade.trainer.export import export_serving_model
from cascade.trainer.model import build_model
from cascade.trainer.probe import InfraCheck, run_probe_in_subprocess
from tests.unit.trainer.builders import make_spec


class _Scorer(tf.Module):
    """A hand-made serving model: ``probabilities`` from ``x``, a passthrough ``key``."""

    def __init__(self, produce_nan: bool) -> None:
        super().__init__()
        self.scale = tf.Variable(float("nan") if produce_nan else 0.5)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="x"),
            tf.TensorSpec([None], tf.string, name="key"),
        ]
    )
    def serve(self, x: tf.Tensor, key: tf.Tensor) -> dict[str, tf.Tensor]:
        positive = tf.sigmoid(tf.where(tf.math.is_finite(x), x, 0.0) * self.scale)
        return {"probabilities": tf.stack([1 - positive, positive], axis=1), "key": key}


def _save(module: tf.Module, directory: Path) -> Path:
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    return directory


def test_a_model_that_returns_nan_fails(tmp_path: Path) -> None:
    model_dir = _save(_Scorer(produce_nan=True), tmp_path / "nan-model")

    check = run_probe_in_subprocess(model_dir, tmp_path / "check.json")

    assert not check.passed
    assert any("non-finite" in reason for reason in check.reasons)
    assert {case.name for case in check.cases if not case.passed} >= {"typical", "missing_values"}
    assert check.latency is None


def test_a_sound_hand_made_model_passes(tmp_path: Path) -> None:
    model_dir = _save(_Scorer(produce_nan=False), tmp_path / "good-model")

    check = run_probe_in_subprocess(model_dir, tmp_path / "check.json")

    assert check.passed, check.reasons
    assert check.inputs == {"x": "float32", "key": "string"}
    assert all(case.passed for case in check.cases)


def test_an_exported_trainer_model_passes_in_a_fresh_process(tmp_path: Path) -> None:
    spec = make_spec("multiclass")
    built = build_model(spec, Hyperparameters(hidden_units=8))
    export_dir = export_serving_model(built.model, spec, tmp_path / "export")

    check = run_probe_in_subprocess(export_dir, tmp_path / "check.json")

    assert check.passed, check.reasons
    assert check.latency is not None
    assert check.latency.batch_rows == 256
    assert set(check.outputs) == {"probabilities", "class_ids", "classes", "customer_id"}


def test_a_model_with_an_exploding_layer_fails(tmp_path: Path) -> None:
    inputs = {"x": keras.Input(shape=(), dtype="float32", name="x")}
    doubled = keras.layers.Lambda(lambda x: keras.ops.expand_dims(x, -1) * 1e30)(inputs["x"])
    model = keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="ones")(doubled))
    module = tf.Module()
    module.model = model
    module.serve = tf.function(
        lambda x: {"predictions": tf.reshape(model({"x": x}), [-1])},
        input_signature=[tf.TensorSpec([None], tf.float32, name="x")],
    )
    model_dir = _save(module, tmp_path / "exploding")

    check = run_probe_in_subprocess(model_dir, tmp_path / "check.json")

    assert not check.passed
    assert any("extreme_large" in reason and "non-finite" in reason for reason in check.reasons)


def test_command_line_exit_status_and_result_file(tmp_path: Path) -> None:
    good = _save(_Scorer(produce_nan=False), tmp_path / "good")
    bad = _save(_Scorer(produce_nan=True), tmp_path / "bad")
    probe = [sys.executable, "-m", "cascade.trainer.probe"]

    passed = subprocess.run(
        [*probe, str(good), "--result", str(tmp_path / "g.json")],
        check=False,
        capture_output=True,
        text=True,
    )
    failed = subprocess.run(
        [*probe, str(bad), "--result", str(tmp_path / "b.json")],
        check=False,
        capture_output=True,
        text=True,
    )
    missing = subprocess.run(
        [*probe, str(tmp_path / "nothing")], check=False, capture_output=True, text=True
    )

    assert (passed.returncode, failed.returncode, missing.returncode) == (0, 1, 1)
    assert InfraCheck.model_validate_json((tmp_path / "g.json").read_text()).passed
    assert "non-finite" in failed.stderr
    assert "cannot load" in missing.stderr
