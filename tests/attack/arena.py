"""The attack suite's arena: one local cloud, the runs the attacks aim at, and the checks
every attack must leave true.

The arena holds a private local cloud (tests.conftest.running_test_cloud) under a
sentinel folder. Before and after each attack it takes a ``Snapshot``: every file under
the sentinel outside the cloud's state folder (and the test recorder's folder), every
object of the reference runs (``runs/<run_id>/...`` with its generation) and the event
router's counters. An attack passes only if its own outcome is the expected one and

- nothing was written outside the state folder,
- no reference run changed (no caller can change a run),
- the router made no failed delivery attempt (no 5xx, so no retry loop) and
  dead-lettered exactly what the design says.

Reference runs: ``upload``, the seed file's run (accepted by validate, failed at
transform: the dataset's config names no label, so no attack can start a training job),
and ``request``, a train request's run (failed: no transformed data).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from cascade.cli.sample_data import sample_csv
from cascade.core.clients import make_subscriber
from cascade.core.deployment_config import DeploymentConfig
from cascade.core.paths import RunPaths
from cascade.core.runs import RunRecord
from cascade.core.topology import load_topology
from cascade.deploy.deployer import Candidate
from cascade.deploy.local_deployer import LocalDeployer
from cascade.deploy.rollout import roll_out
from cascade.localcloud.processes import wait_until
from cascade.localcloud.pubsub_admin import archive_subscription_id
from cascade.localcloud.router import function_urls
from tests.conftest import REPO_ROOT, LocalCloud

__all__ = ["Arena", "ModelExport", "Snapshot", "poll"]

T = TypeVar("T")
SEED_CONFIG = """\
# The attack suite's dataset: no label, so an accepted file stops at transform and no
# attack can start a training job; a 1 MiB limit on decompressed gzip (the bomb).
validation:
  max_uncompressed_bytes: 1048576
"""
SEED_ROWS = 150  # enough values for the schema to infer domains of the string features
SERVED_ROW = {"age": 100.0, "city": "paris", "key": "row-1"}
_EXPORT = (
    "import sys\n"
    "from pathlib import Path\n"
    "from tests.unit.serving.saved_models import export_tiny_model\n"
    "export_tiny_model(Path(sys.argv[1]), weight=1.0)\n"
)


def poll(probe: Callable[[], T | None], what: str, timeout: float = 30, interval: float = 0.1) -> T:
    """``probe()`` once it is not None, checked every ``interval`` until ``timeout``."""
    found: list[T] = []

    def ready() -> bool:
        value = probe()
        if value is not None:
            found.append(value)
        return value is not None

    if not wait_until(ready, timeout, interval):
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
    return found[-1]


class ModelExport:
    """The tiny SavedModel, exported by a child process (TensorFlow stays out of pytest's
    process, and the export overlaps the local cloud's start)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._process = subprocess.Popen(
            [sys.executable, "-c", _EXPORT, str(directory)],
            cwd=REPO_ROOT,
            env={**_quiet_tensorflow(), "PYTHONPATH": str(REPO_ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait(self, timeout: float = 180) -> Path:
        _, stderr = self._process.communicate(timeout=timeout)
        assert self._process.returncode == 0, stderr.decode(errors="replace")[-2000:]
        return self.directory

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.communicate()


def _quiet_tensorflow() -> dict[str, str]:
    import os

    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


class _Progress:
    """The rollout's stages (``deploy.rollout.Progress``), kept in memory."""

    def __init__(self) -> None:
        self.done: dict[str, Any] = {}

    def record(self, **stages: Any) -> None:
        self.done.update(stages)


@dataclass(frozen=True)
class Snapshot:
    outside: dict[str, tuple[int, int]]
    """Files under the sentinel, outside the state folder: (size, mtime)."""
    references: dict[str, dict[str, int]]
    """Each reference run's objects and their generations."""
    runs: frozenset[str]
    """Every run's folder (``runs/<run_id>/``)."""
    stats: dict[str, int]


class AlertInbox:
    """Every alert published so far (pulled from the alerts topic's archive)."""

    def __init__(self, cloud: LocalCloud) -> None:
        self._subscriber = make_subscriber(cloud.settings)
        self._subscription = self._subscriber.subscription_path(
            cloud.settings.project, archive_subscription_id(cloud.settings, "alerts")
        )
        self.seen: list[dict[str, Any]] = []

    def _pull(self) -> None:
        response = self._subscriber.pull(
            subscription=self._subscription, max_messages=100, timeout=10
        )
        ack_ids = [received.ack_id for received in response.received_messages]
        if ack_ids:
            self._subscriber.acknowledge(subscription=self._subscription, ack_ids=ack_ids)
        self.seen.extend(json.loads(r.message.data) for r in response.received_messages)

    def find(self, *words: str, timeout: float = 30) -> dict[str, Any]:
        """The first alert whose summary holds every one of ``words``."""

        def probe() -> dict[str, Any] | None:
            for alert in self.seen:
                if all(word in str(alert.get("summary", "")) for word in words):
                    return alert
            self._pull()
            return None

        return poll(probe, f"an alert with {words}", timeout=timeout, interval=0.05)


@dataclass
class Arena:
    cloud: LocalCloud
    sentinel: Path
    dataset: str
    big_dataset: str
    seed_name: str
    seed_generation: int
    urls: dict[str, str]
    references: dict[str, str]
    alerts: AlertInbox
    export: ModelExport
    served: str | None = None
    exclude: tuple[Path, ...] = field(default_factory=tuple)

    # ------------------------------------------------------------------ setting up
    @classmethod
    def prepare(cls, cloud: LocalCloud, sentinel: Path, export: ModelExport) -> Arena:
        dataset, big = f"atk{uuid.uuid4().hex[:8]}", f"atkbig{uuid.uuid4().hex[:8]}"
        cloud.artifacts.write(
            f"datasets/{dataset}/pipeline.yaml", SEED_CONFIG.encode(), content_type="text/yaml"
        )
        seed = f"{dataset}/seed.csv"
        seed_generation = cloud.upload(seed, sample_csv(SEED_ROWS, seed=7))
        seed_run = cloud.run_id_for(seed, seed_generation)
        urls = function_urls(cloud.local, load_topology(cloud.local.topology_file))
        answer = cloud.call_http_function(
            "train-http",
            json={"dataset": dataset, "request_id": "reference", "reason": "reference run"},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        seeded = cloud.wait_for_run(seed_run, timeout=90)
        assert seeded.state == "failed", seeded
        assert seeded.steps["validate"].state == "succeeded", seeded
        assert "label" in (seeded.steps["transform"].error or ""), seeded
        assert cloud.artifacts.stat(f"datasets/{dataset}/schema.pbtxt") is not None
        requested = cloud.wait_for_run(answer.json()["run_id"], timeout=90)
        for run_id in (seed_run, requested.run_id):
            # each end is announced on run-ended and the report function renders the
            # run's report: the snapshots below must see it, not see it appear
            poll(
                lambda run_id=run_id: cloud.artifacts.stat(RunPaths(run_id).report),
                f"the report of {run_id}",
                timeout=60,
            )
        arena = cls(
            cloud=cloud,
            sentinel=sentinel,
            dataset=dataset,
            big_dataset=big,
            seed_name=seed,
            seed_generation=seed_generation,
            urls=urls,
            references={"upload": seed_run, "request": requested.run_id},
            alerts=AlertInbox(cloud),
            export=export,
            exclude=(cloud.local.state_dir, cloud.record_dir),
        )
        arena.wait_for_quiet()
        return arena

    def serve_model(self) -> str:
        """A dataset the model server serves (the tiny model: age, city, key)."""
        if self.served is None:
            name = f"atkserve{uuid.uuid4().hex[:8]}"
            run_id = f"{name}-{uuid.uuid4().hex[:16]}"
            prefix = f"runs/{run_id}/training/model"
            directory = self.export.wait()
            for path in sorted(directory.rglob("*")):
                if path.is_file():
                    relative = path.relative_to(directory).as_posix()
                    self.cloud.artifacts.write(f"{prefix}/{relative}", path.read_bytes())
            deployer = LocalDeployer(
                self.cloud.artifacts, self.model_server, clock=lambda: datetime.now(UTC)
            )
            config = DeploymentConfig(canary_traffic_percent=20, canary_requests=3)
            candidate = Candidate(name, run_id, self.cloud.artifacts.uri(prefix))
            result = roll_out(deployer, candidate, config, [SERVED_ROW], _Progress())
            assert result.promoted, result.canary.detail
            self.served = name
        return self.served

    @property
    def model_server(self) -> str:
        return self.cloud.refresh_state().environment["CASCADE_DEPLOY_MODEL_SERVER_URL"]

    # ------------------------------------------------------------------ observing
    def run(self, run_id: str, timeout: float = 90) -> RunRecord:
        """The run once it ended."""
        return self.cloud.wait_for_run(run_id, timeout=timeout, interval=0.05)

    def stats(self) -> dict[str, int]:
        return self.cloud.router_stats()

    def snapshot(self) -> Snapshot:
        outside = {
            str(path.relative_to(self.sentinel)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in self.sentinel.rglob("*")
            if not any(path == top or top in path.parents for top in self.exclude)
        }
        references = {
            run_id: {
                info.name: info.generation
                for info in self.cloud.artifacts.list_objects(f"runs/{run_id}/")
            }
            for run_id in self.references.values()
        }
        return Snapshot(
            outside=outside, references=references, runs=self.run_folders(), stats=self.stats()
        )

    def run_folders(self) -> frozenset[str]:
        bucket = self.cloud.storage_client.bucket(self.cloud.settings.artifacts_bucket)
        listing = bucket.list_blobs(prefix="runs/", delimiter="/")
        for _ in listing:  # the folders (prefixes) fill in as the pages are read
            pass
        return frozenset(listing.prefixes)

    def wait_for_quiet(self, timeout: float = 30) -> None:
        """Until the router's counters stay the same for half a second."""
        last: dict[str, int] = {}
        steady_since = time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() - steady_since < 0.5:
            assert time.monotonic() < deadline, "the event router never went quiet"
            current = self.stats()
            if current != last:
                last, steady_since = current, time.monotonic()
            time.sleep(0.1)

    def wait_for_counts(self, before: dict[str, int], expected: dict[str, int]) -> None:
        """Until each of the router's ``expected`` counters grew by at least its value."""

        def reached() -> bool | None:
            now = self.stats()
            done = all(now.get(k, 0) - before.get(k, 0) >= n for k, n in expected.items())
            return True if done else None

        poll(reached, f"router counts {expected}", timeout=60, interval=0.05)
