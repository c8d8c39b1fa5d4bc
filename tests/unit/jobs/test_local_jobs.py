"""The local job runner's engine: trainer subprocesses, Vertex AI's environment, Optuna.

The trainer is ``tests.unit.jobs.fake_trainer``, whose metric is a known function of its
hyperparameters, so the best trial of every algorithm can be checked exactly.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cascade.core.job_spec import ParameterSpec, TrainingJobSpec, TuningSpec, WorkerPool
from cascade.jobs.local_runner import LocalJob
from cascade.localcloud.job_executor import LocalJobExecutor, LocalJobStore
from tests.unit.jobs.fake_trainer import metric_of

REPO_ROOT = Path(__file__).resolve().parents[3]
TIMEOUT_S = 120


class RecordingNotifier:
    def __init__(self, failures: int = 0) -> None:
        self.ended: list[LocalJob] = []
        self._failures = failures

    def job_ended(self, job: LocalJob) -> None:
        if self._failures:
            self._failures -= 1
            raise ConnectionError("pubsub unavailable")
        self.ended.append(job)


def _environment() -> dict[str, str]:
    return {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}


def _executor(root: Path, notifier: RecordingNotifier) -> LocalJobExecutor:
    return LocalJobExecutor(
        LocalJobStore(root / "jobs"),
        notifier,
        project="p",
        trainer_module="tests.unit.jobs.fake_trainer",
        python=sys.executable,
        base_environment=_environment(),
        cwd=REPO_ROOT,
        clock=lambda: datetime(2026, 11, 27, tzinfo=UTC),
    )


def _spec(tmp_path: Path, **changes: object) -> TrainingJobSpec:
    spec = TrainingJobSpec.model_validate(
        {
            "run_id": "credit-r1",
            "dataset": "credit",
            "display_name": "cascade-train-credit-r1",
            "transform_spec_uri": "gs://cascade-artifacts/runs/credit-r1/transform/transform.json",
            "output_dir": str(tmp_path / "out"),
            "hyperparameters": {"learning_rate": 0.001, "hidden_units": 64},
            **changes,
        }
    )
    Path(spec.output_dir).mkdir(parents=True, exist_ok=True)
    Path(spec.job_spec_uri).write_text(spec.model_dump_json())
    return spec


def _run(tmp_path: Path, spec: TrainingJobSpec, notifier: RecordingNotifier) -> LocalJob:
    executor = _executor(tmp_path, notifier)
    job = executor.submit(spec, "credit-r1")
    finished = executor.wait(job.job_id, TIMEOUT_S)
    assert finished is not None
    assert finished.finished, finished
    return finished


def test_a_training_job_runs_the_trainer_with_vertex_environment(tmp_path: Path) -> None:
    notifier = RecordingNotifier()

    job = _run(tmp_path, _spec(tmp_path), notifier)

    assert job.state == "succeeded", job.error
    assert job.model_dir == f"{tmp_path}/out/model"
    model = json.loads((tmp_path / "out" / "model" / "model.json").read_text())
    assert model["job_id"] == job.job_id
    assert model["trial_id"] is None
    assert model["tf_config"] == {}
    out = f"{tmp_path}/out"
    assert model["environment"] == {  # exactly Vertex AI's (no CLUSTER_SPEC: one replica)
        "AIP_MODEL_DIR": f"{out}/model/",
        "AIP_CHECKPOINT_DIR": f"{out}/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": f"{out}/logs/",
        "CLOUD_ML_JOB_ID": job.job_id,
    }
    assert [ended.job_id for ended in notifier.ended] == [job.job_id]
    assert job.announced


def test_several_workers_get_a_tf_config_cluster(tmp_path: Path) -> None:
    spec = _spec(tmp_path, workers=WorkerPool(replica_count=2).model_dump())

    job = _run(tmp_path, spec, RecordingNotifier())

    assert job.state == "succeeded", job.error
    replicas = {
        path.stem: json.loads(path.read_text())["tf_config"]
        for path in (tmp_path / "out" / "replicas").iterdir()
    }
    assert set(replicas) == {"chief-0", "worker-0", "worker-1"}
    cluster = replicas["chief-0"]["cluster"]
    assert len(cluster["chief"]) == 1
    assert len(cluster["worker"]) == 2
    assert all(config["cluster"] == cluster for config in replicas.values())
    assert replicas["worker-1"]["task"] == {"type": "worker", "index": 1}
    assert replicas["worker-1"]["environment"] == "cloud"
    told = json.loads((tmp_path / "out" / "replicas" / "worker-1.json").read_text())
    cluster_spec = json.loads(told["environment"]["CLUSTER_SPEC"])
    assert cluster_spec["cluster"] == {
        "workerpool0": cluster["chief"],
        "workerpool1": cluster["worker"],
    }
    assert cluster_spec["task"] == {"type": "workerpool1", "index": 1}


def test_a_failing_trainer_fails_the_job_with_its_log(tmp_path: Path) -> None:
    notifier = RecordingNotifier()
    spec = _spec(tmp_path, hyperparameters={"fail": True})

    job = _run(tmp_path, spec, notifier)

    assert job.state == "failed"
    assert "exited with status 3" in job.error
    assert "failing as asked" in job.error
    assert [ended.state for ended in notifier.ended] == ["failed"]


def test_submitting_the_same_request_twice_returns_one_job(tmp_path: Path) -> None:
    executor = _executor(tmp_path, RecordingNotifier())
    spec = _spec(tmp_path)

    first = executor.submit(spec, "credit-r1")
    second = executor.submit(spec, "credit-r1")
    executor.wait(first.job_id, TIMEOUT_S)

    assert first.name == second.name
    assert len(executor.store.all()) == 1


def test_an_announcement_that_failed_is_retried(tmp_path: Path) -> None:
    notifier = RecordingNotifier(failures=1)
    job = _run(tmp_path, _spec(tmp_path), notifier)
    assert not job.announced
    assert notifier.ended == []

    executor = _executor(tmp_path, notifier)
    executor.announce_pending()

    assert [ended.job_id for ended in notifier.ended] == [job.job_id]
    stored = executor.store.load(job.job_id)
    assert stored is not None
    assert stored.announced


LEARNING_RATES = [0.0001, 0.001, 0.01, 0.1]
UNITS = [32, 64, 128]


@pytest.mark.parametrize("algorithm", ["grid", "random", "bayesian"])
def test_tuning_picks_the_trial_with_the_best_metric(tmp_path: Path, algorithm: str) -> None:
    tuning = TuningSpec(
        metric="eval_loss",
        goal="minimize",
        algorithm=algorithm,
        max_trials=6,
        parallel_trials=3,
        parameters=[
            ParameterSpec(name="learning_rate", type="discrete", values=LEARNING_RATES),
            ParameterSpec(name="hidden_units", type="categorical", values=UNITS),
        ],
    )
    notifier = RecordingNotifier()

    job = _run(tmp_path, _spec(tmp_path, tuning=tuning.model_dump()), notifier)

    assert job.state == "succeeded", job.error
    assert job.trials_completed == 6
    assert job.trials_failed == 0
    trials = {
        path.name: json.loads((path / "model" / "model.json").read_text())
        for path in (tmp_path / "out").iterdir()
        if path.name.isdigit()
    }
    assert len(trials) == 6
    lowest = min(trial["metric"] for trial in trials.values())
    best_id = job.best_trial_id
    assert best_id in trials  # random search may draw a point twice: ties are either trial
    assert trials[best_id]["metric"] == pytest.approx(lowest)
    assert job.best_metric == pytest.approx(lowest)
    assert job.best_hyperparameters is not None
    assert job.best_hyperparameters.items() <= trials[best_id]["hyperparameters"].items()
    assert job.best_metric == pytest.approx(metric_of(job.best_hyperparameters))
    assert job.model_dir == f"{tmp_path}/out/{best_id}/model"
    assert all(trial["trial_id"] == trial_id for trial_id, trial in trials.items())
    out = f"{tmp_path}/out"
    for trial_id, trial in trials.items():  # each trial's base is <base>/<trial id>/
        assert trial["environment"] == {
            "AIP_MODEL_DIR": f"{out}/{trial_id}/model/",
            "AIP_CHECKPOINT_DIR": f"{out}/{trial_id}/checkpoints/",
            "AIP_TENSORBOARD_LOG_DIR": f"{out}/{trial_id}/logs/",
            "CLOUD_ML_JOB_ID": job.job_id,
            "CLOUD_ML_TRIAL_ID": trial_id,
            # local only: trials share this machine, so each gets its own metric file
            "CLOUD_ML_HP_METRIC_FILE": str(
                tmp_path
                / "jobs"
                / job.job_id
                / "trials"
                / trial_id
                / "hypertune"
                / "output.metrics"
            ),
        }
    if algorithm == "grid":
        points = {
            (t["hyperparameters"]["learning_rate"], t["hyperparameters"]["hidden_units"])
            for t in trials.values()
        }
        assert len(points) == 6  # a grid never evaluates a point twice
    assert [ended.job_id for ended in notifier.ended] == [job.job_id]


def test_tuning_maximises_when_asked_and_counts_failed_trials(tmp_path: Path) -> None:
    tuning = TuningSpec(
        metric="eval_loss",
        goal="maximize",
        algorithm="grid",
        max_trials=10,
        parallel_trials=2,
        parameters=[
            ParameterSpec(name="hidden_units", type="discrete", values=[16, 64, 256]),
            ParameterSpec(name="fail", type="categorical", values=[False]),
        ],
    )

    job = _run(tmp_path, _spec(tmp_path, tuning=tuning.model_dump()), RecordingNotifier())

    assert job.state == "succeeded", job.error
    assert job.trials_completed == 3  # the grid has 3 points, fewer than max_trials
    assert job.best_hyperparameters is not None
    assert job.best_hyperparameters["hidden_units"] == 256


def test_tuning_where_every_trial_fails_fails_the_job(tmp_path: Path) -> None:
    tuning = TuningSpec(
        algorithm="random",
        max_trials=2,
        parallel_trials=2,
        parameters=[ParameterSpec(name="fail", type="categorical", values=[True])],
    )
    notifier = RecordingNotifier()

    job = _run(tmp_path, _spec(tmp_path, tuning=tuning.model_dump()), notifier)

    assert job.state == "failed"
    assert "no trial" in job.error
    assert [ended.state for ended in notifier.ended] == ["failed"]


def test_a_restarted_service_finishes_the_jobs_it_had_started(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    store = LocalJobStore(tmp_path / "jobs")
    store.save(
        LocalJob(
            job_id="00000000000000aa",
            name="projects/p/locations/local/customJobs/00000000000000aa",
            request_id="credit-r1",
            kind="custom",
            spec=spec,
            state="running",
            created_at=datetime(2026, 11, 27, tzinfo=UTC),
            pids=[2**22 + 7],
        )
    )
    notifier = RecordingNotifier()
    executor = _executor(tmp_path, notifier)

    executor.resume()
    job = executor.wait("00000000000000aa", TIMEOUT_S)

    assert job is not None
    assert job.state == "succeeded", job
    assert [ended.job_id for ended in notifier.ended] == ["00000000000000aa"]


def test_a_resumed_study_keeps_finished_trials_and_reruns_the_interrupted(
    tmp_path: Path,
) -> None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from cascade.localcloud.tuner import distributions

    tuning = TuningSpec(
        algorithm="random",
        max_trials=3,
        parallel_trials=1,
        parameters=[ParameterSpec(name="hidden_units", type="discrete", values=[32, 64, 128])],
    )
    spec = _spec(tmp_path, tuning=tuning.model_dump())
    job_id = "00000000000000bb"
    folder = tmp_path / "jobs" / job_id
    folder.mkdir(parents=True)
    study = optuna.create_study(
        study_name="cascade",
        direction="minimize",
        storage=JournalStorage(JournalFileBackend(str(folder / "study.journal"))),
    )
    space = distributions(tuning)
    study.tell(study.ask(space), 9.0)  # trial 1 finished before the service died
    interrupted = study.ask(space)  # trial 2 was running
    LocalJobStore(tmp_path / "jobs").save(
        LocalJob(
            job_id=job_id,
            name=f"projects/p/locations/local/hyperparameterTuningJobs/{job_id}",
            request_id="credit-r1",
            kind="tuning",
            spec=spec,
            state="running",
            created_at=datetime(2026, 11, 27, tzinfo=UTC),
        )
    )
    executor = _executor(tmp_path, RecordingNotifier())

    executor.resume()
    job = executor.wait(job_id, TIMEOUT_S)

    assert job is not None
    assert job.state == "succeeded", job
    assert job.trials_completed == 3  # the one kept, the rerun, and one more
    reran = json.loads((tmp_path / "out" / "3" / "model" / "model.json").read_text())
    assert reran["hyperparameters"]["hidden_units"] == interrupted.params["hidden_units"]
    assert not (tmp_path / "out" / "1").exists()  # finished before: not run again
