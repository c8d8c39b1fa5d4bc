"""The chief of a parameter-server test cluster: ``python -m tests.unit.trainer.ps_chief
JOB_SPEC_URI RESULT_PATH [EXIT_AFTER_EPOCH]`` with ``TF_CONFIG`` naming it the chief.

It runs ``cascade.trainer.task.run`` as the real entry point would (args from the command
line and the environment: ``AIP_CHECKPOINT_DIR``), on local paths, with a recording bus
(no Pub/Sub) and the load-and-probe check in this process, then writes what the test
asserts as JSON: each embedding table's type and shard devices, the fit's history, the
published message. Right after a checkpoint is restored it writes every variable's value
(``RESULT_PATH.restored.npz``); with ``EXIT_AFTER_EPOCH`` it dies (``os._exit``, nothing
cleaned up) as soon as that epoch's checkpoint is saved."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from cascade.core.fakes import RecordingBus
from cascade.core.store import ArtifactStore
from cascade.trainer import parameter_servers
from cascade.trainer.args import TrainerArgs
from cascade.trainer.probe import InfraCheck, probe_model
from cascade.trainer.storage import TrainerStorage
from cascade.trainer.task import run


def _probe_here(model_dir: Path, result_path: Path) -> InfraCheck:
    return probe_model(model_dir, calls=3)


def _no_buckets(bucket: str) -> ArtifactStore:
    raise AssertionError(f"the cluster test uses local paths, not gs://{bucket}")


DIED_AFTER_CHECKPOINT = 75


def _dump_after_restore(result_path: str) -> None:
    restore = parameter_servers._restore

    def restore_and_dump(checkpoints: Any, progress: Any, log: Any) -> str | None:
        restored = restore(checkpoints, progress, log)
        if restored is not None:
            network = checkpoints.checkpoint.network
            values = {
                **{
                    f"tables/{i}": np.asarray(tf.convert_to_tensor(t))
                    for i, t in enumerate(network.tables)
                },
                **{f"kernels/{i}": k.numpy() for i, k in enumerate(network.kernels)},
                **{f"biases/{i}": b.numpy() for i, b in enumerate(network.biases)},
                **{f"accumulators/{i}": a.numpy() for i, a in enumerate(network.accumulators)},
                "region_shard_rows": np.array(
                    [int(p.shape[0]) for p in network.tables[-1].variables]
                ),
                "epoch": progress.epoch.numpy(),
                "steps": progress.steps.numpy(),
            }
            np.savez(f"{result_path}.restored.npz", checkpoint=np.array(restored), **values)
        return restored

    parameter_servers._restore = restore_and_dump


def _die_after(epoch: int) -> None:
    save = parameter_servers._Checkpoints.save

    def save_and_die(self: Any, epochs_done: int) -> str:
        saved = save(self, epochs_done)
        if epochs_done == epoch:
            os._exit(DIED_AFTER_CHECKPOINT)
        return saved

    parameter_servers._Checkpoints.save = save_and_die  # type: ignore[method-assign]


def main(job_spec_uri: str, result_path: str, exit_after_epoch: str | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    _dump_after_restore(result_path)
    if exit_after_epoch is not None:
        _die_after(int(exit_after_epoch))
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
    sys.exit(main(*sys.argv[1:4]))
