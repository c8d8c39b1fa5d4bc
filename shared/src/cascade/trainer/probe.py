"""Load-and-probe check of an exported model, in a fresh process.

``python -m cascade.trainer.probe MODEL_DIR [--result URI] [--max-latency-ms MS]``

Loads the SavedModel the way a server would (``tf.saved_model.load``, nothing shared
with the process that trained it) and calls ``serving_default`` with awkward rows built
from its signature: missing values (NaN, ``""``), unseen categories, extreme numbers
(±1e30, ±inf), and all of them in one batch. Every output must have one row per input
row, float outputs must be finite, probabilities must lie in [0, 1] and sum to 1, and a
passthrough key (an input that is also an output) must come back unchanged. Latency per
call is measured for one row and for a batch. The result (``InfraCheck``) is written to
``--result`` (a local path or gs:// URI, e.g. ``<output_dir>/infra_check.json``).

Exit status: 0 passed, 1 failed (the result says why), 2 the check could not run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cascade.core.errors import CascadeError
from cascade.trainer.infra_check import SIGNATURE, InfraCheck, LatencyStats, ProbeCase

__all__ = ["InfraCheck", "LatencyStats", "ProbeCase", "probe_model", "run_probe_in_subprocess"]

EXIT_PASSED, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
UNSEEN_CATEGORY = "__cascade_probe_unseen__ ünïcødé"
# (case name, numeric value, string value) for single-row cases
_CASES: list[tuple[str, float, str]] = [
    ("typical", 0.0, "a"),
    ("missing_values", float("nan"), ""),
    ("unseen_categories", 1.0, UNSEEN_CATEGORY),
    ("extreme_large", 1e30, UNSEEN_CATEGORY),
    ("extreme_small", -1e30, ""),
    ("positive_infinity", float("inf"), "a"),
    ("negative_infinity", float("-inf"), ""),
]
BATCH_ROWS = 256


def _rows(specs: dict[str, Any], numeric: Sequence[float], text: Sequence[str]) -> dict[str, Any]:
    import tensorflow as tf

    batch: dict[str, Any] = {}
    for name, spec in specs.items():
        if spec.dtype.is_floating:
            batch[name] = tf.constant(np.asarray(numeric, dtype=np.float64), dtype=spec.dtype)
        elif spec.dtype == tf.string:
            batch[name] = tf.constant(
                [
                    f"{name}-{index}-{value}" if value == "a" else value
                    for index, value in enumerate(text)
                ],
                dtype=tf.string,
            )
        else:
            batch[name] = tf.zeros([len(numeric)], dtype=spec.dtype)
    return batch


def _check_outputs(
    outputs: dict[str, Any], batch: dict[str, Any], rows: int, passthrough: set[str]
) -> list[str]:
    reasons = []
    for name, tensor in sorted(outputs.items()):
        value = tensor.numpy()
        if value.ndim == 0 or value.shape[0] != rows:
            reasons.append(f"output {name!r} has shape {list(value.shape)}, expected {rows} rows")
            continue
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            reasons.append(
                f"output {name!r} has {int(np.sum(~np.isfinite(value)))} non-finite values"
            )
        if name == "probabilities" and np.issubdtype(value.dtype, np.floating):
            finite = value[np.all(np.isfinite(value), axis=-1)] if value.ndim == 2 else value
            if np.any(finite < -1e-6) or np.any(finite > 1 + 1e-6):
                reasons.append("probabilities outside [0, 1]")
            elif value.ndim == 2 and not np.allclose(finite.sum(axis=1), 1.0, atol=1e-4):
                reasons.append("probabilities do not sum to 1")
        if name in passthrough and not np.array_equal(value, batch[name].numpy()):
            reasons.append(f"key {name!r} did not pass through unchanged")
    return reasons


def _latency(
    call: Callable[[dict[str, Any]], Any], single: dict[str, Any], batch: dict[str, Any], calls: int
) -> LatencyStats:
    def timed(inputs: dict[str, Any]) -> float:
        started = time.perf_counter()
        call(inputs)
        return (time.perf_counter() - started) * 1000

    call(single)
    call(batch)
    singles = [timed(single) for _ in range(calls)]
    batches = [timed(batch) for _ in range(max(3, calls // 5))]
    return LatencyStats(
        single_row_p50_ms=float(np.percentile(singles, 50)),
        single_row_p95_ms=float(np.percentile(singles, 95)),
        batch_rows=len(next(iter(batch.values()))),
        batch_p50_ms=float(np.percentile(batches, 50)),
        calls=calls,
    )


def _probe_batches() -> list[tuple[str, list[float], list[str]]]:
    """Each single-row case, then all of them together in one batch."""
    singles = [(name, [numeric], [text]) for name, numeric, text in _CASES]
    combined = [numeric for _, numeric, _ in _CASES], [text for _, _, text in _CASES]
    return [*singles, ("all_cases_in_one_batch", *combined)]


def _run_case(
    call: Callable[[dict[str, Any]], Any],
    specs: dict[str, Any],
    passthrough: set[str],
    name: str,
    numerics: list[float],
    texts: list[str],
) -> ProbeCase:
    import tensorflow as tf

    batch = _rows(specs, numerics, texts)
    try:
        reasons = _check_outputs(call(batch), batch, len(numerics), passthrough)
    except (tf.errors.OpError, ValueError, TypeError) as error:
        reasons = [f"the call failed: {type(error).__name__}: {error}"]
    return ProbeCase(name=name, rows=len(numerics), passed=not reasons, reasons=reasons)


def probe_model(model_dir: Path, *, max_latency_ms: float = 1000.0, calls: int = 50) -> InfraCheck:
    """Load ``model_dir`` and probe it (call this in a fresh process: see the module doc)."""
    import tensorflow as tf

    started = time.perf_counter()
    try:
        loaded = tf.saved_model.load(str(model_dir))
        signature = loaded.signatures[SIGNATURE]
    except (OSError, ValueError, KeyError, tf.errors.OpError) as error:
        return InfraCheck(
            model_dir=str(model_dir),
            passed=False,
            checked_at=datetime.now(UTC),
            reasons=[f"cannot load {SIGNATURE!r}: {error}"],
        )
    load_seconds = time.perf_counter() - started
    specs = dict(signature.structured_input_signature[1])
    passthrough = set(specs) & set(signature.structured_outputs)

    def call(inputs: dict[str, Any]) -> Any:
        return signature(**inputs)

    cases = [_run_case(call, specs, passthrough, *case) for case in _probe_batches()]
    reasons = [f"{case.name}: {reason}" for case in cases for reason in case.reasons]
    latency = None
    if not reasons:
        numerics = [numeric for _, numeric, _ in _CASES] * (BATCH_ROWS // len(_CASES) + 1)
        texts = [text for _, _, text in _CASES] * (BATCH_ROWS // len(_CASES) + 1)
        many = _rows(specs, numerics[:BATCH_ROWS], texts[:BATCH_ROWS])
        latency = _latency(call, _rows(specs, [0.0], ["a"]), many, calls)
        if latency.single_row_p95_ms > max_latency_ms:
            reasons.append(
                f"single-row latency p95 {latency.single_row_p95_ms:.1f} ms exceeds "
                f"{max_latency_ms:.0f} ms"
            )
    return InfraCheck(
        model_dir=str(model_dir),
        passed=not reasons,
        reasons=reasons,
        inputs={name: spec.dtype.name for name, spec in specs.items()},
        outputs=sorted(signature.structured_outputs),
        cases=cases,
        latency=latency,
        load_seconds=load_seconds,
        checked_at=datetime.now(UTC),
    )


def run_probe_in_subprocess(
    model_dir: Path, result_path: Path, *, timeout_s: float = 600.0, max_latency_ms: float = 1000.0
) -> InfraCheck:
    """Run ``python -m cascade.trainer.probe`` on a local model dir; its ``InfraCheck``."""
    command = [
        sys.executable,
        "-m",
        "cascade.trainer.probe",
        str(model_dir),
        "--result",
        str(result_path),
        "--max-latency-ms",
        str(max_latency_ms),
    ]
    completed = subprocess.run(  # noqa: S603 - our own module, no shell
        command, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if completed.returncode not in (EXIT_PASSED, EXIT_FAILED) or not result_path.exists():
        tail = (completed.stderr or completed.stdout)[-2000:]
        return InfraCheck(
            model_dir=str(model_dir),
            passed=False,
            checked_at=datetime.now(UTC),
            reasons=[f"the probe process exited {completed.returncode}: {tail}"],
        )
    return InfraCheck.model_validate_json(result_path.read_text())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cascade.trainer.probe", description=__doc__)
    parser.add_argument("model_dir", help="a local directory or gs:// URI of the SavedModel")
    parser.add_argument("--result", help="where to write the InfraCheck JSON (path or gs://)")
    parser.add_argument("--max-latency-ms", type=float, default=1000.0)
    options = parser.parse_args(argv)
    try:
        from cascade.core.clients import make_storage_client
        from cascade.core.settings import load_settings
        from cascade.trainer.storage import TrainerStorage, is_gcs_uri

        storage = None
        if is_gcs_uri(options.model_dir) or (options.result or "").startswith("gs://"):
            storage = TrainerStorage.from_client_factory(
                lambda: make_storage_client(load_settings())
            )
        with tempfile.TemporaryDirectory(prefix="cascade-probe-") as scratch:
            local = Path(options.model_dir)
            if storage is not None and is_gcs_uri(options.model_dir):
                local = storage.download_tree(options.model_dir, Path(scratch) / "model")
            check = probe_model(local, max_latency_ms=options.max_latency_ms)
            check = check.model_copy(update={"model_dir": options.model_dir})
        payload = check.model_dump_json(indent=2)
        if options.result and storage is not None and is_gcs_uri(options.result):
            storage.write_bytes(options.result, payload.encode(), content_type="application/json")
        elif options.result:
            Path(options.result).write_text(payload)
        else:
            sys.stdout.write(payload + "\n")
    except CascadeError as error:
        sys.stderr.write(f"probe: {error}\n")
        return EXIT_ERROR
    for reason in check.reasons:
        sys.stderr.write(f"probe: {reason}\n")
    return EXIT_PASSED if check.passed else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
