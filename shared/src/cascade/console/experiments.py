"""The Experiments page: two to six runs of a dataset side by side.

``/datasets/<d>/compare?run=A&run=B[...]`` shows, one column per run, what a person
needs to see what changed between two models: the trigger, state and time; the model
family and training settings; the hyperparameters the trainer used (rows are the union
of the runs' keys); the tuning trials (how many wrote metrics, and the best one); the
data snapshot (files and rows, and the files one run trained on that another did not);
the candidate's metrics overall and per slice (the union of the slices). A cell that
differs from the first run's is marked ``differs``. The training curves are served as
JSON (``/datasets/<d>/compare/curves.json``) and overlaid by ``static/compare.js``, one
chart per metric and one series per run.

Each run is read with the readers the run report uses (``RunLedger``, ``read_json``,
``metrics_name``, ``TrainerMetrics``, ``TrainingHistory``, the transform spec), so a
missing or unreadable artifact is a sentence in its cell, not an error. Reads are
bounded per run (its record, claims and results; evaluation, metrics, job spec, history
and transform spec; one ``stat`` per tuning trial up to ``MAX_TRIALS_PROBED``) and never
list the bucket. Run ids come from the query only to be checked (the system's form, of
this dataset, with a record of this dataset); object names are derived from them.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from cascade.console.views import when
from cascade.core.errors import BadRequestError
from cascade.core.job_spec import TrainingJobSpec
from cascade.core.paths import check_dataset_name
from cascade.core.run_index import READ_WORKERS, trigger_kind_of
from cascade.core.runs import RunLedger, RunRecord, check_system_run_id
from cascade.core.store import ArtifactStore
from cascade.evaluation.inputs import OVERALL
from cascade.evaluation.record import EvaluationRecord, evaluation_path
from cascade.jobs.records import job_spec_name, training_folder
from cascade.report import RunNotFoundError
from cascade.report.reading import object_name, read_json
from cascade.report.training_section import TRAIN_STEPS, TrainerMetrics, metrics_name
from cascade.trainer.history import HISTORY_FILE, TrainingHistory
from cascade.transform.catalog import transform_spec_name
from cascade.transform.spec import SnapshotFile, TransformSpec

if TYPE_CHECKING:
    from cascade.console.app import ConsoleConfig

__all__ = [
    "MAX_RUNS",
    "MIN_RUNS",
    "RunExperiment",
    "compare_view",
    "curves_view",
    "experiment_routes",
    "read_experiment",
]

PageRenderer = Callable[..., Response]

MIN_RUNS = 2
MAX_RUNS = 6
"""Six columns still fit a page; each run costs a bounded number of reads."""
MAX_TRIALS_PROBED = 32
"""Tuning trials whose ``metrics.json`` is looked for (one ``stat`` each), trial ids 1..n."""
MAX_FILES_LISTED = 20
"""Files one run trained on that another did not, listed per run (the rest counted)."""
MAX_METRIC_ROWS = 300
"""Metric rows (a metric in a scope) shown; a slice feature with many values is cut here."""
MAX_RUN_PARAM_CHARS = 100
"""A ``run`` value longer than a run id could be is refused before it is echoed."""
LETTERS = "ABCDEF"
"""Each run's label on the page and in the charts (data is never a chart label)."""
_VALIDATION_PREFIX = "val_"
_READERS = ThreadPoolExecutor(READ_WORKERS, thread_name_prefix="console-experiments")


# ------------------------------------------------------------------ reading one run


@dataclass
class Trials:
    """A tuning job's trials as its artifacts show them."""

    asked: int = 0
    with_metrics: int = 0
    probed: int = 0
    best_trial: str | None = None
    best_metric: str | None = None
    metric: str = ""


@dataclass
class RunExperiment:
    """What the compare page reads of one run (each ``*_note``: why a part is absent)."""

    run_id: str
    record: RunRecord
    spec: TrainingJobSpec | None = None
    spec_note: str = ""
    metrics: TrainerMetrics | None = None
    metrics_note: str = ""
    metrics_at: str = ""
    transform: TransformSpec | None = None
    transform_note: str = ""
    transform_run: str = ""
    trials: Trials = field(default_factory=Trials)


def check_run_ids(dataset: str, values: Sequence[str]) -> list[str]:
    """The ``run`` query values as run ids of ``dataset``: 2 to 6, distinct, each of the
    form the system derives; BadRequestError naming the field otherwise."""
    if not MIN_RUNS <= len(values) <= MAX_RUNS:
        raise BadRequestError(f"run: choose {MIN_RUNS} to {MAX_RUNS} runs, got {len(values)}")
    run_ids: list[str] = []
    for value in values:
        if len(value) > MAX_RUN_PARAM_CHARS:
            raise BadRequestError(f"run: a run id is at most {MAX_RUN_PARAM_CHARS} characters")
        try:
            run_ids.append(check_system_run_id(value, dataset))
        except BadRequestError as error:
            raise BadRequestError(f"run: {error}") from error
    if len(set(run_ids)) != len(run_ids):
        raise BadRequestError("run: each run may be chosen once")
    return run_ids


def _record(
    artifacts: ArtifactStore, dataset: str, run_id: str, *, steps: bool = True
) -> RunRecord:
    """The run's record (with its steps, or ``run.json`` alone), if it is ``dataset``'s."""
    ledger = RunLedger(artifacts)
    record = ledger.get(run_id) if steps else ledger.read_run_level(run_id)
    if record is None:
        raise RunNotFoundError(f"run: no run {run_id}")
    if record.dataset != dataset:
        raise BadRequestError(f"run: {run_id} is not a run of dataset {dataset}")
    return record


def _step_output(record: RunRecord, key: str) -> Any:
    for name in TRAIN_STEPS:
        step = record.steps.get(name)
        if step is not None and step.outputs.get(key) not in (None, ""):
            return step.outputs[key]
    return None


def _candidate_metric(metrics: TrainerMetrics, name: str) -> float | None:
    """The tuning metric on the candidate: ``eval_loss`` and ``loss`` are the same metric
    (as the trainer's ``EvaluationReport.metric`` reads it)."""
    overall = metrics.candidate.overall.metrics
    for candidate in (name, name.removeprefix("eval_")):
        if candidate in overall:
            return overall[candidate]
    return None


def _trials(artifacts: ArtifactStore, found: RunExperiment) -> Trials:
    """Trials asked (the job spec), trials that wrote ``<trial id>/metrics.json`` (one
    stat each, ids 1..``MAX_TRIALS_PROBED``: Vertex AI numbers trials from 1) and the
    best (the train step's outputs, else the evaluated metrics' trial)."""
    spec = found.spec
    if spec is None or spec.tuning is None:
        return Trials()
    tuning = spec.tuning
    probed = min(tuning.max_trials, MAX_TRIALS_PROBED)
    folder = training_folder(found.run_id)
    with_metrics = sum(
        artifacts.stat(f"{folder}/{trial}/metrics.json") is not None
        for trial in range(1, probed + 1)
    )
    best = _step_output(found.record, "best_trial")
    value = _step_output(found.record, "best_metric")
    metrics = found.metrics
    if best is None and metrics is not None:
        best = metrics.trial_id
    if value is None and metrics is not None and best is not None:
        value = _candidate_metric(metrics, tuning.metric)
    return Trials(
        asked=tuning.max_trials,
        with_metrics=with_metrics,
        probed=probed,
        best_trial=None if best is None else str(best),
        best_metric=None if value is None else _number(value),
        metric=f"{tuning.goal} {tuning.metric}",
    )


def _transform(artifacts: ArtifactStore, found: RunExperiment) -> None:
    """The transform the run trained on: the job spec's (a retrain trains on the latest
    transform, another run's), else the run's own."""
    name = None
    if found.spec is not None:
        name = object_name(artifacts, found.spec.transform_spec_uri)
    if name is None:
        name = transform_spec_name(found.run_id)
    read = read_json(artifacts, name, TransformSpec)
    found.transform, found.transform_note = read.value, read.problem or ""
    if read.value is not None:
        found.transform_run = read.value.run_id


def read_experiment(artifacts: ArtifactStore, dataset: str, run_id: str) -> RunExperiment:
    """One run as the compare page shows it; RunNotFoundError / BadRequestError when it
    is not a run of ``dataset``."""
    found = RunExperiment(run_id=run_id, record=_record(artifacts, dataset, run_id))
    evaluation = read_json(artifacts, evaluation_path(run_id), EvaluationRecord).value
    found.metrics_at = metrics_name(artifacts, run_id, evaluation)
    metrics = read_json(artifacts, found.metrics_at, TrainerMetrics)
    found.metrics, found.metrics_note = metrics.value, metrics.problem or ""
    spec = read_json(artifacts, job_spec_name(run_id), TrainingJobSpec)
    found.spec, found.spec_note = spec.value, spec.problem or ""
    _transform(artifacts, found)
    found.trials = _trials(artifacts, found)
    return found


def read_experiments(
    artifacts: ArtifactStore, dataset: str, run_ids: Sequence[str]
) -> list[RunExperiment]:
    """Every run, ``READ_WORKERS`` at a time, oldest first (run A is the baseline the
    others are compared with, whatever order they were chosen in); the first error raised."""
    runs = list(_READERS.map(lambda run_id: read_experiment(artifacts, dataset, run_id), run_ids))
    return sorted(runs, key=lambda run: (run.record.created_at, run.run_id))


# ------------------------------------------------------------------ the side-by-side view


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _row(label: str, values: Sequence[str | None], *, compare: bool = True) -> dict[str, Any]:
    """A table row: a cell per run; a cell that differs from the first run's is marked
    (None: the run has no value, shown as an empty cell)."""
    first = values[0]
    cells = [
        {
            "text": "" if value is None else value,
            "absent": value is None,
            "differs": compare and index > 0 and value != first,
        }
        for index, value in enumerate(values)
    ]
    return {
        "label": label,
        "cells": cells,
        "differs": any(cell["differs"] for cell in cells),
    }


def _overview(runs: Sequence[RunExperiment]) -> list[dict[str, Any]]:
    return [
        _row("trigger", [trigger_kind_of(run.run_id) for run in runs], compare=False),
        _row("state", [run.record.state for run in runs]),
        _row("created", [when(run.record.created_at) for run in runs], compare=False),
        _row("error", [run.record.error or None for run in runs], compare=False),
    ]


def _training(runs: Sequence[RunExperiment]) -> list[dict[str, Any]]:
    def of_spec(read: Callable[[TrainingJobSpec], Any]) -> list[str | None]:
        return [None if run.spec is None else _number(read(run.spec)) for run in runs]

    def tuning(spec: TrainingJobSpec) -> str:
        if spec.tuning is None:
            return "none"
        t = spec.tuning
        return f"{t.algorithm}, {t.max_trials} trials, {t.goal} {t.metric}"

    families = [
        run.metrics.model_family
        if run.metrics is not None and run.metrics.model_family
        else (run.spec.model if run.spec is not None else None)
        for run in runs
    ]
    return [
        _row("model family", families),
        _row("epochs (most)", of_spec(lambda spec: spec.epochs)),
        _row(
            "epochs trained",
            [None if run.metrics is None else _number(run.metrics.epochs_trained) for run in runs],
        ),
        _row("batch size", of_spec(lambda spec: spec.batch_size)),
        _row("early stopping patience", of_spec(lambda spec: spec.early_stopping_patience)),
        _row("replicas", of_spec(lambda spec: spec.replica_count)),
        _row("tuning", of_spec(tuning)),
    ]


def _hyperparameters(run: RunExperiment) -> dict[str, Any]:
    """What the trainer used (``metrics.json``: a tuned run's best trial's values), else
    what the job asked for."""
    if run.metrics is not None:
        return run.metrics.hyperparameters
    return dict(run.spec.hyperparameters) if run.spec is not None else {}


def _hyperparameter_rows(runs: Sequence[RunExperiment]) -> list[dict[str, Any]]:
    used = [_hyperparameters(run) for run in runs]
    names = sorted({name for values in used for name in values})
    return [
        _row(name, [_number(values[name]) if name in values else None for values in used])
        for name in names
    ]


def _trial_rows(runs: Sequence[RunExperiment]) -> list[dict[str, Any]]:
    trials = [run.trials for run in runs]
    if not any(t.asked for t in trials):
        return []

    def count(t: Trials) -> str | None:
        if not t.asked:
            return None
        more = f" (of the first {t.probed} looked at)" if t.probed < t.asked else ""
        return f"{t.with_metrics} of {t.asked} wrote metrics{more}"

    return [
        _row("trials", [count(t) for t in trials]),
        _row("metric", [t.metric or None for t in trials]),
        _row("best trial", [t.best_trial for t in trials]),
        _row("best value", [t.best_metric for t in trials]),
    ]


def _file_key(file: SnapshotFile) -> str:
    return f"{file.uri}#{file.generation}"


def _snapshot(runs: Sequence[RunExperiment]) -> dict[str, Any]:
    """Files and rows per run, and per run the files (``uri#generation``) that some other
    compared run did not train on (``MAX_FILES_LISTED`` of them, the rest counted)."""
    specs = [run.transform for run in runs]
    keys = [None if spec is None else [_file_key(f) for f in spec.snapshot] for spec in specs]
    known = [set(k) for k in keys if k is not None]
    common = set.intersection(*known) if known else set()
    only: list[dict[str, Any]] = []
    for found in keys:
        extra = [key for key in (found or []) if key not in common]
        only.append({"files": extra[:MAX_FILES_LISTED], "more": len(extra) - MAX_FILES_LISTED})

    def of(read: Callable[[TransformSpec], Any]) -> list[str | None]:
        return [None if spec is None else _number(read(spec)) for spec in specs]

    return {
        "rows": [
            _row("files", of(lambda spec: len(spec.snapshot))),
            _row("rows", of(lambda spec: sum(f.rows for f in spec.snapshot))),
            _row("train rows", of(lambda spec: spec.train_rows)),
            _row("eval rows", of(lambda spec: spec.eval_rows)),
            _row("features", of(lambda spec: ", ".join(spec.feature_names))),
            _row("transform of run", [run.transform_run or None for run in runs]),
        ],
        "only": only,
        "any_only": any(entry["files"] for entry in only),
    }


def _scopes(metrics: TrainerMetrics) -> dict[str, dict[str, float]]:
    """The candidate's metrics by scope: ``overall``, then each ``feature=value`` slice."""
    candidate = metrics.candidate
    scopes = {OVERALL: candidate.overall.metrics}
    for values in candidate.slices:
        scopes[values.name] = values.metrics
    return scopes


def _metric_rows(runs: Sequence[RunExperiment]) -> tuple[list[dict[str, Any]], bool]:
    """A row per (scope, metric) in the union of the runs' slices; overall first."""
    scoped = [_scopes(run.metrics) if run.metrics is not None else {} for run in runs]
    scopes = sorted({scope for found in scoped for scope in found}, key=lambda s: (s != OVERALL, s))
    rows: list[dict[str, Any]] = []
    for scope in scopes:
        names = sorted(
            {name for found in scoped for name in found.get(scope, {})},
            key=lambda name: (name != "loss", name),
        )
        for name in names:
            if len(rows) == MAX_METRIC_ROWS:
                return rows, True
            values = [
                _number(found[scope][name]) if name in found.get(scope, {}) else None
                for found in scoped
            ]
            row = _row(name, values)
            row["scope"] = scope
            rows.append(row)
    return rows, False


def _column(letter: str, run: RunExperiment) -> dict[str, Any]:
    notes = [
        note for note in (run.metrics_note, run.spec_note if run.metrics is None else "") if note
    ]
    if run.transform is None and run.transform_note:
        notes.append(run.transform_note)
    return {"letter": letter, "run_id": run.run_id, "notes": notes}


def compare_view(runs: Sequence[RunExperiment]) -> dict[str, Any]:
    """The page's tables: a column per run (labelled A, B, …) and rows as above."""
    metric_rows, metrics_cut = _metric_rows(runs)
    return {
        "columns": [_column(letter, run) for letter, run in zip(LETTERS, runs, strict=False)],
        "overview": _overview(runs),
        "training": _training(runs),
        "hyperparameters": _hyperparameter_rows(runs),
        "trials": _trial_rows(runs),
        "snapshot": _snapshot(runs),
        "metrics": metric_rows,
        "metrics_cut": metrics_cut,
        "max_metric_rows": MAX_METRIC_ROWS,
    }


# ------------------------------------------------------------------ training curves


def read_history(
    artifacts: ArtifactStore, dataset: str, run_id: str
) -> tuple[RunRecord, TrainingHistory | None]:
    """The run's record (checked as the page checks it) and ``history.json`` beside its
    ``metrics.json`` (as the run report reads it: the evaluated trial's folder after
    tuning)."""
    record = _record(artifacts, dataset, run_id, steps=False)
    evaluation = read_json(artifacts, evaluation_path(run_id), EvaluationRecord).value
    folder = posixpath.dirname(metrics_name(artifacts, run_id, evaluation))
    return record, read_json(artifacts, f"{folder}/{HISTORY_FILE}", TrainingHistory).value


def read_histories(
    artifacts: ArtifactStore, dataset: str, run_ids: Sequence[str]
) -> list[TrainingHistory | None]:
    """Every run's history, oldest run first (the page's column order)."""
    found = list(_READERS.map(lambda run_id: read_history(artifacts, dataset, run_id), run_ids))
    found.sort(key=lambda pair: (pair[0].created_at, pair[0].run_id))
    return [history for _, history in found]


def _chart_label(name: str) -> str:
    if name.startswith(_VALIDATION_PREFIX):
        return f"eval {name.removeprefix(_VALIDATION_PREFIX)}"
    return f"train {name}"


def curves_view(histories: Sequence[TrainingHistory | None]) -> dict[str, Any]:
    """One chart per Keras metric name (``loss``, ``val_loss``…), one series per run
    (None where the run has no value at that epoch); x is the epoch, from 1."""
    names = sorted(
        {name for history in histories if history is not None for name in history.metrics},
        key=lambda name: (name.removeprefix(_VALIDATION_PREFIX) != "loss", name),
    )
    epochs = max((h.epochs for h in histories if h is not None), default=0)
    charts = []
    for name in names:
        series = []
        for history in histories:
            values = [] if history is None else list(history.metrics.get(name, []))
            series.append((values + [None] * epochs)[:epochs])
        charts.append({"metric": name, "label": _chart_label(name), "series": series})
    return {
        "epochs": list(range(1, epochs + 1)),
        "runs": [
            {"letter": letter, "has_history": history is not None}
            for letter, history in zip(LETTERS, histories, strict=False)
        ],
        "charts": charts,
    }


# ------------------------------------------------------------------ routes


class ExperimentPages:
    """The compare page and its curves, over the console's artifacts bucket."""

    def __init__(self, config: ConsoleConfig, page: PageRenderer) -> None:
        self.config = config
        self.page = page

    def _run_ids(self, request: Request) -> tuple[str, list[str]]:
        dataset = check_dataset_name(request.path_params["dataset"])
        return dataset, check_run_ids(dataset, request.query_params.getlist("run"))

    def compare(self, request: Request) -> Response:
        dataset, run_ids = self._run_ids(request)
        runs = read_experiments(self.config.artifacts, dataset, run_ids)
        query = urlencode([("run", run.run_id) for run in runs])
        return self.page(
            request,
            "compare.html.j2",
            title=f"Compare runs of {dataset}",
            dataset=dataset,
            curves_api=f"/datasets/{dataset}/compare/curves.json?{query}",
            **compare_view(runs),
        )

    def curves(self, request: Request) -> Response:
        dataset, run_ids = self._run_ids(request)
        artifacts = self.config.artifacts
        return JSONResponse(curves_view(read_histories(artifacts, dataset, run_ids)))


def experiment_routes(config: ConsoleConfig, page: PageRenderer) -> list[BaseRoute]:
    """The Experiments routes, for ``create_app``'s route list."""
    pages = ExperimentPages(config, page)
    return [
        Route("/datasets/{dataset}/compare", pages.compare),
        Route("/datasets/{dataset}/compare/curves.json", pages.curves),
    ]
