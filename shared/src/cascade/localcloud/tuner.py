"""Hyperparameter tuning with Optuna, the local stand-in for a Vertex AI study.

The TuningSpec maps to Optuna as Vertex AI reads it: ``double`` → float, ``integer`` →
int, each searched in the space its scale defines; ``categorical`` and ``discrete`` → a
choice among their values. ``log`` (UNIT_LOG_SCALE) searches ``log(x)`` uniformly over
``[log(min), log(max)]``. ``reverse_log`` (UNIT_REVERSE_LOG_SCALE: "values close to the
top of the feasible space are spread out more than points near the bottom") is the mirror
image: Optuna searches ``y = max + min - x`` on a log scale, so the trial's value is
``x = max + min - y`` with ``log(y)`` uniform, and values lean toward ``max``. (The
study stores ``y``; ``value_of`` maps it back.) ``grid`` → ``GridSampler`` (integers
enumerate their range), ``random`` → ``RandomSampler``, ``bayesian`` → ``TPESampler``.
Samplers are seeded from the run id.

Trials run ``parallel_trials`` at a time (``Study.optimize`` threads, each waiting on
trainer processes); a trial's value is the metric it reported in its hypertune file.
The study lives in an Optuna journal file, so a restarted job service resumes it:
finished trials are kept, interrupted ones are run again with the same parameters.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from cascade.core.errors import InvalidConfigError
from cascade.core.job_spec import HyperparameterValue, ParameterSpec, TuningSpec

__all__ = [
    "BestTrial",
    "TrialFailedError",
    "TrialRunner",
    "distributions",
    "grid_space",
    "make_sampler",
    "run_study",
    "trial_id_of",
    "value_of",
]

TrialRunner = Callable[[str, dict[str, HyperparameterValue]], float]


class TrialFailedError(Exception):
    """A trial's trainer failed or reported no metric: the trial counts as failed."""


@dataclass(frozen=True)
class BestTrial:
    trial_id: str
    value: float
    parameters: dict[str, HyperparameterValue]
    completed: int
    failed: int


def trial_id_of(number: int) -> str:
    """Vertex AI numbers trials from 1."""
    return str(number + 1)


_LOG_SCALES = ("log", "reverse_log")


def _distribution(parameter: ParameterSpec) -> BaseDistribution:
    """What Optuna searches for ``parameter`` (for ``reverse_log``, ``max + min - x``)."""
    log = parameter.scale in _LOG_SCALES
    if parameter.type == "double":
        assert parameter.min is not None
        assert parameter.max is not None
        return FloatDistribution(parameter.min, parameter.max, log=log)
    if parameter.type == "integer":
        assert parameter.min is not None
        assert parameter.max is not None
        return IntDistribution(int(parameter.min), int(parameter.max), log=log)
    return CategoricalDistribution(list(parameter.values))


def value_of(parameter: ParameterSpec, searched: object) -> HyperparameterValue:
    """The hyperparameter value of what Optuna searched (its stored parameter)."""
    if parameter.scale == "reverse_log" and parameter.type in ("double", "integer"):
        assert parameter.min is not None
        assert parameter.max is not None
        assert isinstance(searched, (int, float))
        if parameter.type == "integer":
            return int(parameter.max) + int(parameter.min) - int(searched)
        # clamped: rounding may step a hair outside [min, max]
        return min(parameter.max, max(parameter.min, parameter.max + parameter.min - searched))
    assert isinstance(searched, (float, int, str, bool))
    return searched


def _suggest(trial: optuna.Trial, parameter: ParameterSpec) -> HyperparameterValue:
    """The trial's value of ``parameter``, drawn from the same distribution as above."""
    distribution = _distribution(parameter)
    searched: object
    if isinstance(distribution, FloatDistribution):
        searched = trial.suggest_float(
            parameter.name, distribution.low, distribution.high, log=distribution.log
        )
    elif isinstance(distribution, IntDistribution):
        searched = trial.suggest_int(
            parameter.name, distribution.low, distribution.high, log=distribution.log
        )
    else:
        searched = trial.suggest_categorical(parameter.name, list(parameter.values))
    return value_of(parameter, searched)


def distributions(tuning: TuningSpec) -> dict[str, BaseDistribution]:
    return {parameter.name: _distribution(parameter) for parameter in tuning.parameters}


def grid_space(tuning: TuningSpec) -> dict[str, list[HyperparameterValue]]:
    """Every value of every parameter; InvalidConfigError for a continuous one."""
    space: dict[str, list[HyperparameterValue]] = {}
    for parameter in tuning.parameters:
        if parameter.type == "double":
            raise InvalidConfigError(
                f"grid search cannot enumerate double parameter {parameter.name}"
            )
        if parameter.type == "integer":
            assert parameter.min is not None
            assert parameter.max is not None
            space[parameter.name] = list(range(int(parameter.min), int(parameter.max) + 1))
        else:
            space[parameter.name] = list(parameter.values)
    return space


def _seed(seed_text: str) -> int:
    return int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:4], "big")


def make_sampler(tuning: TuningSpec, seed_text: str) -> optuna.samplers.BaseSampler:
    seed = _seed(seed_text)
    if tuning.algorithm == "grid":
        return optuna.samplers.GridSampler(grid_space(tuning), seed=seed)
    if tuning.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = max(1, min(10, tuning.max_trials // 2))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def _trial_budget(tuning: TuningSpec) -> int:
    if tuning.algorithm != "grid":
        return tuning.max_trials
    points = 1
    for values in grid_space(tuning).values():
        points *= len(values)
    return min(tuning.max_trials, points)


def _open_study(tuning: TuningSpec, journal: Path, seed_text: str) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.create_study(
        study_name="cascade",
        storage=storage,
        sampler=make_sampler(tuning, seed_text),
        direction=tuning.goal,
        load_if_exists=True,
    )


def _requeue_interrupted(study: optuna.Study) -> int:
    """Trials left running by a dead service: fail them, enqueue their parameters again."""
    interrupted = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in interrupted:
        # GridSampler calls Study.stop() when this was the last open grid point, which
        # raises outside optimize(); the state is stored before that (tell's finally).
        with contextlib.suppress(RuntimeError):
            study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(dict(trial.params), skip_if_exists=False)
    return len(interrupted)


def run_study(
    tuning: TuningSpec,
    journal: Path,
    run_trial: TrialRunner,
    *,
    seed_text: str,
    should_stop: Callable[[], bool],
) -> BestTrial | None:
    """Run (or resume) the study; the best completed trial, or None if none completed.

    ``run_trial(trial_id, parameters)`` runs one trial and returns its metric, raising
    TrialFailedError when it failed.
    """
    study = _open_study(tuning, journal, seed_text)
    parameters_by_name = {parameter.name: parameter for parameter in tuning.parameters}
    requeued = _requeue_interrupted(study)
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    remaining = _trial_budget(tuning) - len(finished) + requeued

    def objective(trial: optuna.Trial) -> float:
        parameters = {parameter.name: _suggest(trial, parameter) for parameter in tuning.parameters}
        return run_trial(trial_id_of(trial.number), parameters)

    def stop_when_asked(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        if should_stop():
            study.stop()

    if remaining > 0 and not should_stop():
        study.optimize(
            objective,
            n_trials=remaining,
            n_jobs=min(tuning.parallel_trials, remaining),
            catch=(TrialFailedError,),
            callbacks=[stop_when_asked],
            gc_after_trial=False,
        )
    return _best(study, parameters_by_name)


def _best(study: optuna.Study, specs: dict[str, ParameterSpec]) -> BestTrial | None:
    trials = study.get_trials(deepcopy=False)
    completed = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    failed = sum(1 for t in trials if t.state == TrialState.FAIL)
    if not completed:
        return None
    best = study.best_trial
    assert best.value is not None
    parameters = {name: value_of(specs[name], value) for name, value in best.params.items()}
    return BestTrial(
        trial_id_of(best.number), float(best.value), parameters, len(completed), failed
    )
