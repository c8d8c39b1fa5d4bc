"""The end-to-end suite's local cloud, scenario helpers and per-test counts.

One local cloud for the whole suite, as `cascade up` starts it but on free ports, with
the **real** trainer (TensorFlow) behind the local job service and the model server in
place of the endpoint. Some settings differ from the defaults so faults resolve within
a test: retry backoff scaled to 0.2 (10 s -> 2 s; five deliveries span ~30 s), a 5 s
claim lease (a crashed step is taken over 5 s after its last heartbeat), and the
scheduled reconcile sweep every 15 s for work without progress for 20 s (the topology
says every 10 minutes, 600 s): nothing here runs `cascade reconcile` by hand.

Each test gets its own dataset (uuid name). At teardown the test's counts (events the
test sent, deliveries the router made, failed attempts, dead letters, training jobs
submitted for the dataset) go to the terminal summary and to the junit properties.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from cascade.cli.sample_data import sample_csv, sample_instance
from cascade.core.messages import StepMessage
from cascade.core.paths import RunPaths
from cascade.core.runs import RunRecord
from cascade.jobs.local_runner import LocalJob, LocalJobRunner
from cascade.serving.state import ServingState, read_serving_state
from tests.conftest import LocalCloud, running_test_cloud

RECONCILE_PERIOD_S = 15
"""The local scheduler's period for every schedule here (the topology's cron: 10 min).
Not shorter: a sweep lists every dataset's objects, and as the suite's buckets fill
(fake-gcs-server lists by walking its folder) sweeps every 5 s ran back to back and kept
the machine's two cores busy for the rest of the suite."""
RECONCILE_STALE_AFTER_S = 20
"""The scheduled sweep resumes work without progress for this long (topology: 600 s)."""
COUNTS_KEY = pytest.StashKey[list[tuple[str, dict[str, int]]]]()
E2E_PIPELINE = """\
label: defaulted
problem_type: binary
transform:
  key_column: customer_id
  exclude: [customer_id]
training:
  model: network
  epochs: 10
  batch_size: 64
evaluation:
  thresholds:
    - {metric: auc, tier: blocking, lower_bound: 0.55}
deployment:
  canary_requests: 3
"""
"""The network family (the default is boosted_trees): the tests' hyperparameters
(hidden_units, learning_rate, ...) are the network's."""
NO_THRESHOLDS = E2E_PIPELINE.split("evaluation:")[0] + "deployment:\n  canary_requests: 3\n"
"""The pipeline without evaluation thresholds: every candidate is blessed."""


def pytest_configure(config: pytest.Config) -> None:
    config.stash[COUNTS_KEY] = []


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(COUNTS_KEY, [])
    if not rows:
        return
    terminalreporter.section("end-to-end counts")
    header = ("test", "sent", "delivered", "failed", "dead-lettered", "jobs")
    terminalreporter.write_line(f"{header[0]:<62} " + " ".join(f"{h:>13}" for h in header[1:]))
    for name, counts in rows:
        values = (
            counts["events_sent"],
            counts["events_processed"],
            counts["failed_attempts"],
            counts["dead_lettered"],
            counts["jobs_submitted"],
        )
        terminalreporter.write_line(f"{name:<62} " + " ".join(f"{v:>13}" for v in values))


@pytest.fixture(scope="package")  # stopped when the suite ends, before other suites' clouds
def e2e_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    with running_test_cloud(
        tmp_path_factory.mktemp("e2e-cloud"),
        backoff_scale=0.2,
        claim_lease_s=5,
        scheduler_period_s=RECONCILE_PERIOD_S,
        reconcile_stale_after_s=RECONCILE_STALE_AFTER_S,
    ) as cloud:
        yield cloud


@dataclass
class Scenario:
    """One test's view of the local cloud: its dataset, and what it sent."""

    cloud: LocalCloud
    dataset: str
    sent: int = 0
    files: list[str] = field(default_factory=list)
    upload_retries: int = 0

    # ------------------------------------------------------------------ acting
    def configure(self, pipeline_yaml: str) -> None:
        """Replace the dataset's pipeline config."""
        self.cloud.artifacts.write(
            f"datasets/{self.dataset}/pipeline.yaml",
            pipeline_yaml.encode(),
            content_type="text/yaml",
        )

    def upload(
        self,
        rows: int,
        seed: int,
        *,
        name: str | None = None,
        drift: bool = False,
        unseen_regions: bool | None = None,
    ) -> str:
        """Upload a sample file (``drift``, ``unseen_regions``: see ``sample_csv``); the
        run id of its upload."""
        object_name = f"{self.dataset}/{name or f'day-{seed}'}.csv"
        data = sample_csv(rows, seed=seed, drift=drift, unseen_regions=unseen_regions)
        generation = self.cloud.upload(object_name, data)
        self.sent += 1
        self.files.append(object_name)
        return self.cloud.run_id_for(object_name, generation)

    def publish(self, message: StepMessage) -> str:
        self.sent += 1
        return self.cloud.publish(message)

    # ------------------------------------------------------------------ observing
    def wait(
        self,
        run_id: str,
        until: Callable[[RunRecord], bool] = lambda run: run.state != "running",
        timeout: float = 180,
    ) -> RunRecord:
        return self.cloud.wait_for_run(run_id, until, timeout=timeout, interval=0.2)

    def runs(self) -> list[RunRecord]:
        """Every run of this dataset (run ids start with the dataset's name)."""
        names = self.cloud.artifacts.list_names(f"runs/{self.dataset}-")
        found = [self.cloud.ledger.get(n.split("/")[1]) for n in names if n.endswith("/run.json")]
        return [run for run in found if run is not None]

    def settle(self, timeout: float = 300) -> list[RunRecord]:
        """Wait until every run of the dataset (follow-ups too) and every job has ended,
        twice in a row a second apart; the runs. (A look lists the dataset's runs and
        reads each: not more often.)"""
        deadline, quiet = time.monotonic() + timeout, 0
        while quiet < 2:
            assert time.monotonic() < deadline, f"still busy: {self.runs()}"
            time.sleep(1.0)
            runs = self.runs()
            idle = all(
                run.state != "running" and all(s.state != "running" for s in run.steps.values())
                for run in runs
            ) and all(job.finished for job in self.jobs())
            quiet = quiet + 1 if idle else 0
        return runs

    def report(self, run_id: str, timeout: float = 60) -> str:
        """The run's HTML report, once the report function has written it (it renders
        the report from the run's announced end, run-ended)."""
        deadline = time.monotonic() + timeout
        while (stored := self.cloud.artifacts.read(RunPaths(run_id).report)) is None:
            assert time.monotonic() < deadline, f"no report for {run_id} after {timeout} s"
            time.sleep(0.2)
        return stored.data.decode("utf-8")

    def jobs(self) -> list[LocalJob]:
        runner = LocalJobRunner(self.cloud.state.environment["CASCADE_JOB_SERVICE_URL"])
        return [job for job in runner.list_jobs() if job.spec.dataset == self.dataset]

    def wait_for_jobs_to_end(self, timeout: float = 180) -> list[LocalJob]:
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.jobs()
            if all(job.finished for job in jobs):
                return jobs
            assert time.monotonic() < deadline, f"jobs still running: {jobs}"
            time.sleep(0.5)

    def serving(self) -> ServingState | None:
        found = read_serving_state(self.cloud.artifacts, self.dataset)
        return None if found is None else found[0]

    def predict(self, seed: int = 99) -> requests.Response:
        """Ask the model server about one sample row, as a client of the endpoint would."""
        url = self.cloud.refresh_state().environment["CASCADE_DEPLOY_MODEL_SERVER_URL"]
        return requests.post(
            f"{url}/v1/models/{self.dataset}:predict",
            json={"instances": [sample_instance(seed)]},
            timeout=30,
        )


def _router_totals(cloud: LocalCloud) -> dict[str, int]:
    totals = {"delivered": 0, "failed_attempts": 0, "dead_lettered": 0}
    for key, value in cloud.router_stats().items():
        kind = key.rsplit(".", 1)[-1]
        if kind in totals:
            totals[kind] += int(value)
    return totals


@pytest.fixture
def scenario(e2e_cloud: LocalCloud, request: pytest.FixtureRequest) -> Iterator[Scenario]:
    e2e_cloud.refresh_state()
    dataset = f"e2e{uuid.uuid4().hex[:10]}"
    current = Scenario(e2e_cloud, dataset)
    current.configure(E2E_PIPELINE)
    before = _router_totals(e2e_cloud)
    yield current
    after = _router_totals(e2e_cloud)
    counts = {
        "events_sent": current.sent,
        "events_processed": after["delivered"] - before["delivered"],
        "failed_attempts": after["failed_attempts"] - before["failed_attempts"],
        "dead_lettered": after["dead_lettered"] - before["dead_lettered"],
        "jobs_submitted": len(current.jobs()),
    }
    for key, value in counts.items():
        request.node.user_properties.append((key, value))
    request.config.stash[COUNTS_KEY].append((request.node.name, counts))
