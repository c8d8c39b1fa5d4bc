"""The console's models pages and their actions: a dataset's model versions, traffic
split, lineage and verdicts (``models/<dataset>/serving.json``, read with the code the
local model server reads), rollback and promote; force-bless and TensorBoard on a run.

Every action is the CLI's call (``cascade.console.actions``) as the request's caller,
behind the form's CSRF token; refusals are the CLI's messages, shown as a 400 page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from cascade.console.actions import (
    MAX_WHY_CHARS,
    force_bless_run,
    promote_version,
    roll_back_serving,
)
from cascade.console.security import CSRF_FIELD, csrf_valid
from cascade.core.bus import MessageBus
from cascade.core.context import utc_now
from cascade.core.errors import BadRequestError, TransientError
from cascade.core.paths import check_dataset_name
from cascade.core.runs import check_system_run_id
from cascade.core.store import ArtifactStore
from cascade.deploy.deployer import Deployer
from cascade.evaluation.record import EvaluationRecord, evaluation_path
from cascade.serving.state import ServingState, read_serving_state, serving_states
from cascade.transform.catalog import read_transform

if TYPE_CHECKING:
    from cascade.console.app import ConsoleConfig

__all__ = [
    "MAX_FILES_SHOWN",
    "MAX_VERSIONS_SHOWN",
    "BlessView",
    "VersionView",
    "bless_view",
    "model_routes",
    "version_views",
]

MAX_VERSIONS_SHOWN = 20
"""Newest first; each costs two reads (its evaluation and its run's transform spec)."""
MAX_FILES_SHOWN = 20
MAX_METRICS_SHOWN = 8

PageRenderer = Callable[..., Response]
FormReader = Callable[[Request], Awaitable[dict[str, str]]]


class ConsoleParts(Protocol):
    """What the routes need of the console (``cascade.console.app._Console``)."""

    config: ConsoleConfig

    def bus(self) -> MessageBus: ...


@dataclass
class VersionView:
    version: str
    state: str
    share: int
    run_id: str
    deployed_at: str
    lineage: list[tuple[str, str]]
    files: list[str] = field(default_factory=list)
    files_more: int = 0
    train_rows: int | None = None
    verdict: str = ""
    override: str = ""
    metrics: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class BlessView:
    """A run's evaluation verdict and whether ``cascade bless`` would accept it."""

    verdict: str
    blessable: bool
    note: str


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _evaluation(artifacts: ArtifactStore, run_id: str) -> EvaluationRecord | None:
    found = artifacts.read_model(evaluation_path(run_id), EvaluationRecord)
    return None if found is None else found[0]


def _with_evaluation(view: VersionView, record: EvaluationRecord | None) -> None:
    if record is None:
        view.verdict = "no evaluation recorded"
        return
    view.verdict = record.verdict
    if record.override is not None:
        done = record.override
        view.override = f"force-blessed by {done.actor} via {done.via}: {done.reason}"
    for check in record.checks:
        if check.metric is None or check.value is None or check.slice is not None:
            continue
        baseline = f" (baseline {_number(check.baseline_value)})" if check.baseline_value else ""
        text = f"{_number(check.value)}{baseline} · {check.verdict}"
        view.metrics.append((check.metric, text))
        if len(view.metrics) == MAX_METRICS_SHOWN:
            break


def _with_data(view: VersionView, artifacts: ArtifactStore) -> None:
    try:
        spec = read_transform(artifacts, view.run_id)
    except BadRequestError:
        spec = None  # a run id naming no valid object: lineage shows what serving.json has
    if spec is None:
        return
    names = [f"{item.uri}#{item.generation} ({item.rows} rows)" for item in spec.snapshot]
    view.files = names[:MAX_FILES_SHOWN]
    view.files_more = max(0, len(names) - MAX_FILES_SHOWN)
    view.train_rows = spec.train_rows


def _run_link(run_id: str) -> str | None:
    try:
        return check_system_run_id(run_id)
    except BadRequestError:
        return None


def version_views(artifacts: ArtifactStore, state: ServingState) -> list[VersionView]:
    """The dataset's versions, newest first (at most ``MAX_VERSIONS_SHOWN``), with their
    share of traffic, lineage, data files and evaluation."""
    newest = sorted(state.versions, key=lambda item: int(item.version), reverse=True)
    views = []
    for entry in newest[:MAX_VERSIONS_SHOWN]:
        view = VersionView(
            version=entry.version,
            state=entry.state,
            share=state.traffic.get(entry.version, 0),
            run_id=entry.run_id,
            deployed_at=entry.deployed_at.isoformat(),
            lineage=sorted(entry.lineage.items()),
        )
        if _run_link(entry.run_id) is not None:
            _with_evaluation(view, _evaluation(artifacts, entry.run_id))
            _with_data(view, artifacts)
        views.append(view)
    return views


def bless_view(artifacts: ArtifactStore, run_id: str) -> BlessView | None:
    """None when the run has no evaluation; the verdict and, when ``cascade bless``
    would refuse, why (its messages)."""
    record = _evaluation(artifacts, run_id)
    if record is None:
        return None
    if record.override is not None:
        done = record.override
        note = f"force-blessed by {done.actor} via {done.via} (was {done.previous_verdict}): "
        return BlessView(record.verdict, False, note + done.reason)
    if record.blessed:
        return BlessView(record.verdict, False, f"run {run_id} is already {record.verdict}")
    if not record.infra_passed:
        note = "its model failed its load-and-probe check and cannot be served"
        return BlessView(record.verdict, False, note)
    return BlessView(record.verdict, True, record.summary)


def _checked(request: Request, form: dict[str, str]) -> None:
    if not csrf_valid(request, form.get(CSRF_FIELD)):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page")


def model_routes(console: ConsoleParts, page: PageRenderer, read_form: FormReader) -> list[Route]:
    """``/models``, ``/models/<dataset>`` and the actions (registered by ``create_app``)."""
    config = console.config

    def models_index(request: Request) -> Response:
        datasets = [
            {
                "dataset": dataset,
                "target": state.target,
                "primary": state.primary.version if state.primary else "",
                "traffic": state.traffic,
                "updated_at": state.updated_at,
            }
            for dataset, state in serving_states(config.artifacts)
        ]
        return page(request, "models.html.j2", title="Models", datasets=datasets)

    def model_page(request: Request) -> Response:
        dataset = check_dataset_name(request.path_params["dataset"])
        found = read_serving_state(config.artifacts, dataset)
        if found is None:
            raise HTTPException(404, f"no model of dataset {dataset} has been deployed")
        state = found[0]
        return page(
            request,
            "model.html.j2",
            title=f"Models of {dataset}",
            dataset=dataset,
            state=state,
            versions=version_views(config.artifacts, state),
            history=list(reversed(state.history))[:25],
            actions=config.deployer is not None,
            max_why=MAX_WHY_CHARS,
            done=request.query_params.get("done", "") in ("rollback", "promote"),
        )

    def _deployer() -> Deployer:
        if config.deployer is None:
            raise HTTPException(404, "this console has no deployer: rollback and promote are off")
        try:
            return config.deployer()
        except TransientError as error:  # e.g. the local cloud (its model server) is down
            raise HTTPException(503, str(error)) from error

    async def rollback(request: Request) -> Response:
        dataset = check_dataset_name(request.path_params["dataset"])
        form = await read_form(request)
        _checked(request, form)
        caller = config.caller_of(request)
        deployer = await run_in_threadpool(_deployer)
        await run_in_threadpool(
            roll_back_serving, deployer, caller, dataset, form.get("reason", "")
        )
        return RedirectResponse(f"/models/{dataset}?done=rollback", status_code=303)

    async def promote(request: Request) -> Response:
        dataset = check_dataset_name(request.path_params["dataset"])
        form = await read_form(request)
        _checked(request, form)
        caller = config.caller_of(request)
        deployer = await run_in_threadpool(_deployer)
        await run_in_threadpool(
            promote_version,
            deployer,
            caller,
            dataset,
            form.get("version", ""),
            form.get("reason", ""),
        )
        return RedirectResponse(f"/models/{dataset}?done=promote", status_code=303)

    async def bless(request: Request) -> Response:
        run_id = check_system_run_id(request.path_params["run_id"])
        form = await read_form(request)
        _checked(request, form)
        caller = config.caller_of(request)
        await run_in_threadpool(
            force_bless_run,
            config.artifacts,
            console.bus(),
            caller,
            run_id,
            form.get("reason", ""),
            utc_now(),
        )
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    async def tensorboard(request: Request) -> Response:
        run_id = check_system_run_id(request.path_params["run_id"])
        form = await read_form(request)
        _checked(request, form)
        launcher = config.tensorboard
        if launcher is None:
            raise HTTPException(404, "this console starts no TensorBoard (use the run's link)")
        address = await run_in_threadpool(launcher, run_id)
        return page(
            request,
            "models_tensorboard.html.j2",
            title="TensorBoard",
            run_id=run_id,
            address=address,
        )

    return [
        Route("/models", models_index),
        Route("/models/{dataset}", model_page),
        Route("/models/{dataset}/rollback", rollback, methods=["POST"]),
        Route("/models/{dataset}/promote", promote, methods=["POST"]),
        Route("/runs/{run_id}/bless", bless, methods=["POST"]),
        Route("/runs/{run_id}/tensorboard", tensorboard, methods=["POST"]),
    ]
