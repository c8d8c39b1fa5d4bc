"""The distribution strategy, chosen from the cluster and the visible accelerators.

- ``ps`` tasks in ``TF_CONFIG`` (worker pool 2): ``ParameterServerStrategy`` on the chief,
  the coordinator (``cascade.trainer.parameter_servers`` trains through it); the worker
  and ps tasks only serve (``serve_cluster_task``);
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

from cascade.core.errors import InvalidConfigError
from cascade.core.job_spec import ParameterServerSpec
from cascade.trainer.args import ClusterConfig
from cascade.trainer.data import WorkerShard

__all__ = [
    "PARAMETER_SERVER",
    "StrategyChoice",
    "choose_strategy",
    "cluster_resolver",
    "serve_cluster_task",
]

PARAMETER_SERVER = "parameter_server"


@dataclass(frozen=True)
class StrategyChoice:
    strategy: tf.distribute.Strategy
    kind: str
    worker: WorkerShard

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)


def cluster_resolver(
    cluster: ClusterConfig, tasks: dict[str, list[str]]
) -> tf.distribute.cluster_resolver.SimpleClusterResolver:
    """The cluster of ``tasks`` with this process's task, passed explicitly (nothing here
    reads ``TF_CONFIG``)."""
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(tasks),
        task_type=cluster.task_type,
        task_id=cluster.task_index,
        rpc_layer="grpc",
    )


def _parameter_server_strategy(
    cluster: ClusterConfig, sharding: ParameterServerSpec | None
) -> StrategyChoice:
    """The coordinator's strategy: every variable of at least twice ``min_shard_bytes``
    is split along its rows into shards of at least that size, at most one per ps task."""
    if sharding is None:
        raise InvalidConfigError(
            "TF_CONFIG has ps tasks but the job spec has no parameter_servers / sharding"
        )
    if not cluster.cluster.get("chief") or not cluster.cluster.get("worker"):
        raise InvalidConfigError(
            "parameter-server training needs a chief (the coordinator) and workers in "
            f"TF_CONFIG; got {sorted(cluster.cluster)}"
        )
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=sharding.min_shard_bytes, max_shards=len(cluster.parameter_servers)
    )
    strategy = tf.distribute.ParameterServerStrategy(
        cluster_resolver(cluster, cluster.full_cluster), variable_partitioner=partitioner
    )
    return StrategyChoice(strategy, PARAMETER_SERVER, WorkerShard())


def serve_cluster_task(cluster: ClusterConfig) -> None:
    """A worker or ps task of parameter-server training: serve the chief until stopped
    (TensorFlow's servers never return; the job ends when the chief does)."""
    server = tf.distribute.Server(
        tf.train.ClusterSpec(cluster.full_cluster),
        job_name=cluster.task_type,
        task_index=cluster.task_index,
        protocol="grpc",
        start=True,
    )
    server.join()


def choose_strategy(
    cluster: ClusterConfig | None,
    gpu_count: int | None = None,
    *,
    sharding: ParameterServerSpec | None = None,
) -> StrategyChoice:
    """``gpu_count`` defaults to the GPUs TensorFlow sees; ``sharding`` (the job spec's)
    is what a cluster with ps tasks needs."""
    if cluster is not None and cluster.parameter_servers:
        return _parameter_server_strategy(cluster, sharding)
    if cluster is not None and cluster.num_workers > 1:
        resolver = cluster_resolver(cluster, cluster.training_cluster)
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
