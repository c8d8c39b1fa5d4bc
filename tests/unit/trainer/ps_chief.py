"""The chief of a parameter-server test cluster: ``python -m tests.unit.trainer.ps_chief
JOB_SPEC_URI RESULT_PATH`` with ``TF_CONFIG`` naming it the chief.

It runs ``cascade.trainer.task.run`` as the real entry point would (args from the command
line and the environment), on local paths, with a recording bus (no Pub/Sub) and the
load-and-probe check in this process, then writes what the test asserts as JSON: each
embedding table's type and shard devices, the fit's history, the published message."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from cascade.core.fakes import RecordingBus
from cascade.core.store import ArtifactStore
from cascade.trainer.args import TrainerArgs
from cascade.trainer.probe import InfraCheck, probe_model
from cascade.trainer.storage import TrainerStorage
from cascade.trainer.task import run


def _probe_here(model_dir: Path, result_path: Path) -> InfraCheck:
    return probe_model(model_dir, calls=3)


def _no_buckets(bucket: str) -> ArtifactStore:
    raise AssertionError(f"the cluster test uses local paths, not gs://{bucket}")


def main(job_spec_uri: str, result_path: str) -> int:
    args = TrainerArgs.from_command_line([f"--job-spec-uri={job_spec_uri}"], os.environ)
    bus = RecordingBus()
    result = run(args, storage=TrainerStorage(_no_buckets), bus=bus, probe=_probe_here)
    assert result.sharded is not None
    network = result.sharded.network
    tables = {
        name: {
            "type": type(table).__name__,
            "shards": [
                {"device": part.device, "rows": int(part.shape[0])}
                for part in getattr(table, "variables", [table])
            ],
        }
        for name, table in zip(network.table_names, network.tables, strict=True)
    }
    document = {
        "tables": tables,
        "history": result.fit.history,
        "steps": result.fit.steps,
        "model_dir": result.locations.model_dir,
        "infra_check_passed": bool(result.infra_check and result.infra_check.passed),
        "published": [message.model_dump(mode="json") for message in bus.published],
    }
    Path(result_path).write_text(json.dumps(document))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
