"""``cascade train DATASET --local``: a training experiment on this machine.

It trains on what the pipeline would train on now — the dataset's latest transform
(the snapshot of every accepted file, its split and its Parquet shards) and its
pipeline config — with the trainer the training job runs (``cascade.trainer.task.run``),
in this process, and deploys and publishes nothing: no run record, no message, no
model version. What it changes: ``--model FAMILY``, ``--model-module FILE`` (implies
``custom``) and ``--set NAME=VALUE`` hyperparameters; tuning is off and one process
trains (``workers: 1``).

- **Run id**: ``exp-<UTC time>-<6 hex>``, a name of its own that no pipeline run
  (``<dataset>-<16 hex>``, ``<dataset>-r<16 hex>``) can take.
- **Outputs**: ``<state dir>/experiments/<dataset>/<run id>/`` (``--output DIR``):
  ``job_spec.json``, ``model/``, ``metrics.json``, ``history.json``,
  ``infra_check.json``, ``logs/`` (TensorBoard), as a training job writes them.
- **Module**: the job spec pins a module by generation and hash in the artifacts
  bucket, as a run's does, so ``--model-module FILE`` stores the file under
  ``datasets/<dataset>/models/experiments/<sha256[:16]>.py`` (once per content) and
  pins that; without it, ``model: custom`` pins the config's module.
- **Baseline**: the model serving the dataset, when one does, is evaluated on the same
  eval split, as in a run, so the summary compares the two.

Errors (no transformed data yet, an invalid module or setting, training failed) are one
clear line and exit status 1; an unexpected error's traceback goes to ``error.txt`` in
the output directory instead of the terminal.
"""

from __future__ import annotations

import secrets
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import click
from google.api_core.exceptions import GoogleAPIError
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade.core.clients import make_storage_client
from cascade.core.errors import (
    CascadeError,
    PermanentError,
    TransientError,
    describe_validation_error,
)
from cascade.core.hyperparameters import family_problem, resolve_hyperparameters
from cascade.core.job_spec import HyperparameterValue, ModelFamily, TrainingJobSpec
from cascade.core.messages import TrainRequest
from cascade.core.model_modules import (
    MAX_MODULE_BYTES,
    experiment_module_name,
    pin_model_module,
    pinned_uri,
    source_problem,
    stage_experiment_module,
)
from cascade.core.paths import check_dataset_name, check_run_id_name
from cascade.core.pipeline_config import PipelineConfig, load_pipeline_config
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore
from cascade.core.training_config import TrainingConfig, TuningConfig
from cascade.jobs.spec_builder import build_job_spec
from cascade.serving.state import deployed_model_uri
from cascade.trainer.args import TrainerArgs, parse_hyperparameter_value
from cascade.trainer.metrics import ModelMetrics
from cascade.trainer.storage import TrainerStorage
from cascade.transform.catalog import TransformPointer, latest_transform

if TYPE_CHECKING:
    from cascade.trainer.task import TrainingResult

__all__ = [
    "Experiment",
    "ExperimentError",
    "ExperimentSetup",
    "experiment_from_options",
    "experiment_run_id",
    "local_options",
    "open_stores",
    "parse_overrides",
    "prepare_experiment",
    "run_experiment",
    "train_in_process",
]

EXPERIMENTS_FOLDER = "experiments"


class ExperimentError(Exception):
    """What the user asked for cannot be run; the message says why and what to do."""


@dataclass(frozen=True)
class Experiment:
    """What ``cascade train DATASET --local`` was asked."""

    dataset: str
    model: ModelFamily | None = None
    module_file: Path | None = None
    overrides: Sequence[str] = ()
    """``NAME=VALUE`` hyperparameters, later ones winning."""
    output: Path | None = None


@dataclass(frozen=True)
class ExperimentSetup:
    """The job spec of an experiment and what it was built from."""

    spec: TrainingJobSpec
    transform: TransformPointer
    output_dir: Path
    dropped: list[str] = field(default_factory=list)
    """The config's hyperparameters the chosen family does not read (left out)."""


_LOCAL_OPTIONS = (
    click.option(
        "--local",
        "local_run",
        is_flag=True,
        help="Train here on the dataset's accepted data (an experiment); deploy and "
        "publish nothing.",
    ),
    click.option(
        "--model", type=click.Choice(get_args(ModelFamily)), help="--local: the model family."
    ),
    click.option(
        "--model-module",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="--local: your model code (implies --model custom).",
    ),
    click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="NAME=VALUE",
        help="--local: a hyperparameter (repeatable).",
    ),
    click.option(
        "--output",
        type=click.Path(file_okay=False, path_type=Path),
        help="--local: where outputs go [default: <state dir>/experiments/<dataset>/<run id>].",
    ),
)


def local_options(command: Callable[..., None]) -> Callable[..., None]:
    """``cascade train``'s options for an experiment (``experiment_from_options``)."""
    for option in reversed(_LOCAL_OPTIONS):
        command = option(command)
    return command


def experiment_from_options(
    dataset: str, request_id: str | None, tune: bool, options: Mapping[str, Any]
) -> Experiment | None:
    """The experiment ``cascade train --local`` asks for; None without ``--local`` (then
    a request id is required). click.UsageError for options that do not go together."""
    flags = {
        "model": "--model",
        "model_module": "--model-module",
        "overrides": "--set",
        "output": "--output",
    }
    local_only = [flag for name, flag in flags.items() if options.get(name)]
    if not options.get("local_run"):
        if local_only:
            raise click.UsageError(f"{', '.join(local_only)}: only with --local")
        if request_id is None:
            raise click.UsageError("--request-id is required (or --local for an experiment)")
        return None
    if request_id is not None or tune:
        raise click.UsageError("--local trains once, here: no --request-id and no --tune")
    return Experiment(
        dataset=dataset,
        model=options.get("model"),
        module_file=options.get("model_module"),
        overrides=tuple(options.get("overrides") or ()),
        output=options.get("output"),
    )


def experiment_run_id(now: datetime, token: str | None = None) -> str:
    """``exp-<YYYYmmdd-HHMMSS>-<6 hex>``: one path segment (``check_run_id_name``), never
    the form of a pipeline run id."""
    stamp = now.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    return check_run_id_name(f"exp-{stamp}-{token or secrets.token_hex(3)}")


def parse_overrides(pairs: Sequence[str]) -> dict[str, HyperparameterValue]:
    """``NAME=VALUE`` pairs as hyperparameters (``64`` → int, ``0.1`` → float, ``true``
    → bool, else text), held to a train request's limits (names, count, text length)."""
    values: dict[str, HyperparameterValue] = {}
    for pair in pairs:
        name, equals, text = pair.partition("=")
        if not equals or not name:
            raise ExperimentError(f"--set {pair!r}: use --set NAME=VALUE, e.g. --set epochs=20")
        values[name.strip()] = parse_hyperparameter_value(text.strip())
    try:
        TrainRequest(dataset="experiment", hyperparameters=values)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'][1:]) or 'hyperparameters'}: {item['msg']}"
            for item in error.errors()
        )
        raise ExperimentError(f"--set: {problems}") from None
    return values


def _module_source(
    experiment: Experiment, family: ModelFamily, config: PipelineConfig
) -> tuple[bytes | None, str | None]:
    """A ``custom`` experiment's module file (checked) and its name under the dataset:
    the file given (named by its content), else the config's ``training.model_module``
    (no bytes: it is in the bucket already)."""
    if family != "custom":
        return None, None
    if experiment.module_file is not None:
        path = experiment.module_file
        size = path.stat().st_size
        if size > MAX_MODULE_BYTES:
            raise ExperimentError(
                f"{path}: is {size} bytes; a model module is at most {MAX_MODULE_BYTES} (1 MiB)"
            )
        data = path.read_bytes()
        problem = source_problem(data)
        if problem is not None:
            raise ExperimentError(f"{path} {problem}")
        return data, experiment_module_name(data)
    if config.training.model_module is None:
        raise ExperimentError(
            f"model custom needs --model-module FILE ({experiment.dataset}'s config names "
            "no training.model_module)"
        )
    return None, config.training.model_module


def _family(experiment: Experiment, config: PipelineConfig) -> ModelFamily:
    if experiment.module_file is None:
        return experiment.model or config.training.model
    if experiment.model not in (None, "custom"):
        raise ExperimentError(
            f"--model-module trains model custom; --model {experiment.model} trains a "
            "built-in family: give one of them"
        )
    return "custom"


def _experiment_config(
    config: PipelineConfig,
    family: ModelFamily,
    module_name: str | None,
    overrides: Mapping[str, HyperparameterValue],
) -> tuple[PipelineConfig, list[str]]:
    """The config with the experiment's family, module and hyperparameters, one worker
    and no tuning. The config's hyperparameters that ``family`` does not read (it was
    written for another family) are left out and named."""
    training = config.training
    kept = dict(training.hyperparameters)
    dropped = sorted(name for name in kept if family_problem(family, [name]) is not None)
    for name in dropped:
        del kept[name]
    try:
        changed = TrainingConfig.model_validate(
            {
                **training.model_dump(),
                "model": family,
                "model_module": module_name,
                "workers": 1,
                "hyperparameters": {**kept, **overrides},
            }
        )
    except ValidationError as error:
        problems = describe_validation_error(error, root="training")
        raise ExperimentError(f"invalid training settings: {problems}") from None
    return config.model_copy(update={"training": changed, "tuning": TuningConfig()}), dropped


def prepare_experiment(
    experiment: Experiment,
    artifacts: ArtifactStore,
    *,
    state_dir: Path,
    now: datetime,
    token: str | None = None,
) -> ExperimentSetup:
    """The experiment's job spec (ExperimentError or CascadeError when it cannot run)."""
    dataset = check_dataset_name(experiment.dataset)
    overrides = parse_overrides(experiment.overrides)
    pointer = latest_transform(artifacts, dataset)
    if pointer is None:
        raise ExperimentError(
            f"dataset {dataset} has no transformed data yet: upload a data file "
            f"(`cascade upload {dataset} FILE`) and let its run transform it first"
        )
    config = load_pipeline_config(artifacts, dataset)
    family = _family(experiment, config)
    source, module_name = _module_source(experiment, family, config)
    config, dropped = _experiment_config(config, family, module_name, overrides)
    module = None
    if source is not None:  # stored once per content, then pinned like a run's module
        module = stage_experiment_module(artifacts, dataset, source)
    elif module_name is not None:
        module = pin_model_module(artifacts, dataset, module_name)
    run_id = experiment_run_id(now, token)
    output_dir = (experiment.output or state_dir / EXPERIMENTS_FOLDER / dataset / run_id).resolve()
    spec = build_job_spec(
        run_id=run_id,
        dataset=dataset,
        transform_spec_uri=pointer.transform_uri,
        output_dir=str(output_dir),
        config=config,
        hyperparameters={},
        tune=False,
        baseline_model_uri=deployed_model_uri(artifacts, dataset),
        model_module=module,
    )
    if spec.model != "custom":  # a module's own names are known only when it is loaded
        resolve_hyperparameters(spec, {})  # InvalidConfigError now, not after loading data
    return ExperimentSetup(spec=spec, transform=pointer, output_dir=output_dir, dropped=dropped)


def open_stores(settings: Settings) -> tuple[ArtifactStore, TrainerStorage]:
    """The artifacts bucket and the trainer's storage, over one storage client."""
    client = make_storage_client(settings)
    return (
        ArtifactStore(client, settings.artifacts_bucket),
        TrainerStorage(lambda bucket: ArtifactStore(client, bucket)),
    )


def train_in_process(args: TrainerArgs, storage: TrainerStorage) -> TrainingResult:
    """The training job's trainer, in this process; ``bus=None``: nothing is published."""
    from cascade.trainer.task import run  # TensorFlow: only when an experiment trains

    return run(args, storage=storage, bus=None)


def run_experiment(
    experiment: Experiment,
    *,
    settings: Settings,
    state_dir: Path,
    console: Console,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Prepare, train and summarise; the exit status (0 trained, 1 not)."""

    def say(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True)

    try:
        artifacts, storage = open_stores(settings)
        setup = prepare_experiment(experiment, artifacts, state_dir=state_dir, now=clock())
    except (ExperimentError, CascadeError, GoogleAPIError) as error:
        hint = " (is the local cloud running? `cascade up`)" if _unreachable(error) else ""
        say(
            f"[red]cannot train {escape(experiment.dataset)} locally:[/red] "
            f"{escape(str(error))}{hint}"
        )
        return 1
    _announce(say, setup)
    spec = setup.spec
    storage.write_bytes(
        spec.job_spec_uri, spec.model_dump_json(indent=2).encode(), content_type="application/json"
    )
    args = TrainerArgs(
        job_spec_uri=spec.job_spec_uri,
        job_name=f"experiment {spec.run_id}",
        storage_emulated=bool(settings.storage_emulator_host),
    )
    try:
        result = train_in_process(args, storage)
    except CascadeError as error:
        kind = "permanent" if isinstance(error, PermanentError) else "transient"
        say(f"[red]training failed ({kind}):[/red] {escape(str(error))}")
        say(f"outputs so far: {escape(str(setup.output_dir))}")
        return 1
    except Exception as error:  # noqa: BLE001 - a user's module can raise anything
        trace = setup.output_dir / "error.txt"
        trace.parent.mkdir(parents=True, exist_ok=True)
        trace.write_text(traceback.format_exc())
        say(f"[red]training failed:[/red] {escape(type(error).__name__)}: {escape(str(error))}")
        say(f"traceback: {escape(str(trace))}")
        return 1
    _summarise(say, console, setup, result)
    return 0


def _unreachable(error: Exception) -> bool:
    return isinstance(error, (TransientError, GoogleAPIError))


def _announce(say: Callable[[str], None], setup: ExperimentSetup) -> None:
    spec, pointer = setup.spec, setup.transform
    say(
        f"experiment {spec.run_id}: training {spec.dataset} locally with model {spec.model} "
        f"on the transform of run {pointer.run_id} ({pointer.files} files, {pointer.rows} rows)"
    )
    if spec.model_module is not None:
        module = spec.model_module
        say(f"  module    {escape(pinned_uri(module))} (sha256 {module.sha256})")
    if spec.hyperparameters:
        shown = ", ".join(f"{name}={value}" for name, value in sorted(spec.hyperparameters.items()))
        say(f"  settings  {escape(shown)}")
    if setup.dropped:
        say(
            f"  [yellow]left out[/yellow] the config's {', '.join(setup.dropped)}: "
            f"model {spec.model} does not read them"
        )
    say(
        f"  baseline  {escape(spec.baseline_model_uri or f'none (no model serves {spec.dataset})')}"
    )
    say(f"  outputs   {escape(str(setup.output_dir))}")


def _metrics_table(
    candidate: ModelMetrics, baseline: ModelMetrics | None, extra: Mapping[str, Mapping[str, float]]
) -> Table:
    """Overall eval metrics: the candidate, the deployed model, and with ``model: auto``
    each family it trained."""
    table = Table(title=f"eval metrics ({candidate.overall.examples} rows)")
    table.add_column("metric")
    table.add_column("candidate", justify="right")
    if baseline is not None:
        table.add_column("deployed", justify="right")
    for family in extra:
        table.add_column(family, justify="right")
    names = set(candidate.overall.metrics) | set(baseline.overall.metrics if baseline else ())
    for name in sorted(names):
        row = [name, _number(candidate.overall.metrics.get(name))]
        if baseline is not None:
            row.append(_number(baseline.overall.metrics.get(name)))
        row.extend(_number(metrics.get(name)) for metrics in extra.values())
        table.add_row(*row)
    return table


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _summarise(
    say: Callable[[str], None], console: Console, setup: ExperimentSetup, result: TrainingResult
) -> None:
    spec, locations, report = setup.spec, result.locations, result.report
    if report is not None:  # a chief's run (an experiment is one process) always has one
        family = report.model_family if spec.model == "auto" else spec.model
        unit = "boosting rounds" if family == "boosted_trees" else "epochs"
        chosen = f" (model auto kept {report.model_family})" if spec.model == "auto" else ""
        say(f"trained model {family}{chosen}: {report.epochs_trained} {unit}")
        console.print(_metrics_table(report.candidate, report.baseline, report.model_selection))
        if report.baseline is None and report.baseline_error:
            say(f"  the deployed model could not be evaluated: {escape(report.baseline_error)}")
    for label, where in (
        ("model", locations.model_dir),
        ("metrics", locations.metrics_uri),
        ("history", locations.history_uri),
        ("probe", locations.infra_check_uri),
        ("tensorboard", locations.tensorboard_dir),
    ):
        say(f"  {label:<12}{escape(where)}")
    say("nothing was deployed or published")
