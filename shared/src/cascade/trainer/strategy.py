"""The distribution strategy, chosen from the cluster and the visible accelerators.

- several training tasks in ``TF_CONFIG`` (chief + workers): ``MultiWorkerMirroredStrategy``,
  with the cluster passed explicitly (a resolver built from ``ClusterConfig``, so nothing
  here reads the environment);
- one task with several GPUs: ``MirroredStrategy``;
- otherwise: the default strategy.

TensorFlow requires the multi-worker strategy to exist before any other TensorFlow
operation runs, so the task chooses it first.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from cascade.trainer.args import ClusterConfig
from cascade.trainer.data import WorkerShard

__all__ = ["StrategyChoice", "choose_strategy"]


@dataclass(frozen=True)
class StrategyChoice:
    strategy: tf.distribute.Strategy
    kind: str
    worker: WorkerShard

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)


def choose_strategy(cluster: ClusterConfig | None, gpu_count: int | None = None) -> StrategyChoice:
    """``gpu_count`` defaults to the GPUs TensorFlow sees."""
    if cluster is not None and cluster.num_workers > 1:
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster.training_cluster),
            task_type=cluster.task_type,
            task_id=cluster.task_index,
            rpc_layer="grpc",
        )
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        return StrategyChoice(
            strategy,
            "multi_worker_mirrored",
            WorkerShard(cluster.worker_index, cluster.num_workers),
        )
    gpus = len(tf.config.list_physical_devices("GPU")) if gpu_count is None else gpu_count
    if gpus > 1:
        return StrategyChoice(tf.distribute.MirroredStrategy(), "mirrored", WorkerShard())
    return StrategyChoice(tf.distribute.get_strategy(), "default", WorkerShard())
