"""Run the Beam pipeline as the local job service does: a process of .venv-beam.

The tests run under the project's venv (protobuf 7, pyarrow 26); Beam needs its own
(docs/beam.md). A missing .venv-beam fails the tests that need it, loudly: `make setup`
builds it, CI runs `make test` which does.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from cascade.validation.tfmd import statistics_pb2

REPO_ROOT = Path(__file__).resolve().parents[3]
BEAM_PYTHON = REPO_ROOT / ".venv-beam" / "bin" / "python"
PIPELINE_TIMEOUT_S = 300


def beam_python() -> Path:
    if not BEAM_PYTHON.exists():
        raise AssertionError(f"{BEAM_PYTHON} is missing: run `make setup` (it builds .venv-beam)")
    return BEAM_PYTHON


def run_statistics_pipeline(
    input_path: Path | str,
    output: Path,
    *,
    uri: str,
    file_format: str,
    config: dict[str, Any] | None = None,
    block_bytes: int = 64 * 1024,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    """Run cascade.beam.pipeline to completion; its result.json."""
    command = [
        str(beam_python()),
        "-m",
        "cascade.beam.pipeline",
        f"--input={input_path}",
        f"--uri={uri}",
        f"--file_format={file_format}",
        f"--validation_config={json.dumps(config or {})}",
        f"--output={output}",
        f"--block_bytes={block_bytes}",
        *(extra or []),
    ]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=PIPELINE_TIMEOUT_S,
        check=False,
        cwd=output.parent,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result: dict[str, Any] = json.loads((output / "result.json").read_text())
    return result


def read_statistics(path: Path) -> Any:
    statistics = statistics_pb2.DatasetFeatureStatisticsList()
    statistics.ParseFromString(path.read_bytes())
    return statistics


def rounded(message: Any, digits: int = 12) -> Any:
    """A copy of a proto with every float rounded to ``digits`` significant digits.

    Means and variances merge to rounding (Chan et al.'s formula), in whatever order
    Beam combines the ranges; every count, value, histogram and type is exact.
    """
    copy = type(message)()
    copy.CopyFrom(message)
    _round_in_place(copy, digits)
    return copy


def _round_in_place(message: Any, digits: int) -> None:
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            if (
                field.is_repeated
                and getattr(field.message_type, "GetOptions", None)
                and (field.message_type.GetOptions().map_entry)
            ):
                for item in value.values():
                    if hasattr(item, "ListFields"):
                        _round_in_place(item, digits)
                continue
            for item in value if field.is_repeated else [value]:
                _round_in_place(item, digits)
        elif field.type in (field.TYPE_DOUBLE, field.TYPE_FLOAT):
            if field.is_repeated:
                value[:] = [float(f"{item:.{digits}g}") for item in value]
            else:
                setattr(message, field.name, float(f"{value:.{digits}g}"))
