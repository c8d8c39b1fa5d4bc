"""The console's web application: Starlette routes over the artifacts bucket.

Pages are rendered on the server (Jinja2, autoescaping always on); the only scripts are
the package's static files (``static/``), allowed by the Content-Security-Policy, and
they set data as text, never as HTML. Bad input (a run id the system would not derive,
an unknown filter, a foreign page token) is a 400 page naming the field, never a 5xx.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cascade.console.actions import MAX_WHY_CHARS, Caller, request_retrain
from cascade.console.alerts import alert_routes
from cascade.console.datasets import dataset_routes
from cascade.console.experiments import experiment_routes
from cascade.console.models import bless_view, model_routes
from cascade.console.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SecurityHeaders,
    csrf_token_of,
    csrf_valid,
    new_csrf_token,
)
from cascade.console.timeline import timeline
from cascade.console.vertex_links import vertex_run_links
from cascade.console.views import RUN_STATES, TRIGGER_KINDS, run_row, when
from cascade.core.bus import MessageBus
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError, TransientError
from cascade.core.paths import RunPaths, check_dataset_name
from cascade.core.run_index import IndexLister, IndexPage, RunIndex, TriggerKind
from cascade.core.runs import SYSTEM_RUN_ID_PATTERN, RunRecord, check_system_run_id
from cascade.core.store import ArtifactStore, ObjectInfo
from cascade.deploy.deployer import Deployer
from cascade.report import RunNotFoundError, collect_run_report, render_run_report

__all__ = ["ConsoleConfig", "create_app"]

_STATIC = Path(__file__).parent / "static"
MAX_FORM_BYTES = 16 * 1024
MAX_ARTIFACTS_LISTED = 500


@dataclass
class ConsoleConfig:
    """What the console reads and acts through; built once at the edge (the CLI)."""

    artifacts: ArtifactStore
    lister: IndexLister
    bus: Callable[[], MessageBus]
    """Made on the first action (a publisher client is not needed to read)."""
    caller_of: Callable[[Request], Caller]
    """Who a request acts as: the local user locally; the signed-in caller on Cloud Run."""
    page_size: int = 25
    poll_ms: int = 2000
    allowed_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1", "localhost"])
    scan_limit: int = 200
    step_context: Callable[[], StepContext] | None = None
    """The steps' context (made on the first quarantine review): a release re-validates
    the file with the validate step's own code, as ``cascade quarantine release`` does.
    None: the dataset page lists quarantined files without their review actions."""
    deployer: Callable[[], Deployer] | None = None
    """What rollback and promote act through (made on the first one): ``cascade
    rollback``'s deployer. None: the models pages show no actions."""
    tensorboard: Callable[[str], str] | None = None
    """Starts TensorBoard on a run's logs and answers its address (``cascade console``
    fills it locally with what ``cascade tensorboard`` does). None: no such action."""
    vertex_tensorboard: str | None = None
    """The Vertex AI TensorBoard the trainer logs experiments to (``Settings.vertex_tensorboard``,
    in the cloud): a run's page links to its experiment run. None locally."""


@cache
def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("cascade.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["when"] = when
    return environment


def _page(request: Request, template: str, status_code: int = 200, **values: Any) -> Response:
    """Render ``template``; gives the browser a CSRF cookie when it has none."""
    token = csrf_token_of(request)
    fresh = token is None
    token = token or new_csrf_token()
    html = (
        _templates()
        .get_template(template)
        .render(
            csrf_field=CSRF_FIELD, csrf_token=token, form_id=secrets.token_urlsafe(24), **values
        )
    )
    response = HTMLResponse(html, status_code=status_code)
    if fresh:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


def _one(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value or None


def _requested(request: Request) -> str | None:
    """The run a retrain just asked for (shown as a link), if it is a system run id."""
    value = _one(request, "requested")
    return value if value is not None and SYSTEM_RUN_ID_PATTERN.fullmatch(value) else None


def _choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = _one(request, name)
    if value is not None and value not in allowed:
        raise BadRequestError(f"{name}: one of {', '.join(allowed)}")
    return value


class _Console:
    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.index = RunIndex(config.artifacts, config.lister, scan_limit=config.scan_limit)
        self._bus: MessageBus | None = None

    def bus(self) -> MessageBus:
        if self._bus is None:
            self._bus = self.config.bus()
        return self._bus

    # -- the runs list ---------------------------------------------------------------------

    def _filters(self, request: Request, dataset: str | None) -> dict[str, str]:
        chosen = dataset if dataset is not None else _one(request, "dataset")
        filters = {
            "dataset": check_dataset_name(chosen) if chosen is not None else None,
            "state": _choice(request, "state", RUN_STATES),
            "trigger": _choice(request, "trigger", TRIGGER_KINDS),
        }
        return {name: value for name, value in filters.items() if value is not None}

    def _index_page(self, filters: dict[str, str], token: str | None) -> IndexPage:
        trigger: TriggerKind | None = None
        if "trigger" in filters:
            trigger = "request" if filters["trigger"] == "request" else "object"
        return self.index.page(
            size=self.config.page_size,
            dataset=filters.get("dataset"),
            trigger=trigger,
            state=filters.get("state"),
            token=token,
        )

    def runs_page(
        self,
        request: Request,
        dataset: str | None = None,
        template: str = "runs.html.j2",
        **extra: Any,
    ) -> Response:
        filters = self._filters(request, dataset)
        token = _one(request, "page")
        page = self._index_page(filters, token)
        query = dict(filters, **({"page": token} if token else {}))
        next_query = dict(filters, page=page.next_token) if page.next_token else None
        return _page(
            request,
            template,
            title=f"Dataset {dataset}" if dataset else "Runs",
            dataset_page=dataset,
            filters=filters,
            states=RUN_STATES,
            triggers=TRIGGER_KINDS,
            rows=[run_row(run) for run in page.runs],
            scanned=page.scanned,
            api_url="/api/runs?" + urlencode(query),
            next_url=f"{request.url.path}?{urlencode(next_query)}" if next_query else None,
            first_url=f"{request.url.path}?{urlencode(filters)}" if token else None,
            poll_ms=self.config.poll_ms,
            requested=_requested(request),
            max_why=MAX_WHY_CHARS,
            **extra,
        )

    def runs_json(self, request: Request) -> Response:
        filters = self._filters(request, None)
        page = self._index_page(filters, _one(request, "page"))
        return JSONResponse(
            {
                "runs": [run_row(run) for run in page.runs],
                "next": page.next_token,
                "scanned": page.scanned,
            }
        )

    # -- one run -----------------------------------------------------------------------------

    def run_page(self, request: Request) -> Response:
        run_id = check_system_run_id(request.path_params["run_id"])
        report = collect_run_report(self.config.artifacts, run_id)
        return _page(
            request,
            "run.html.j2",
            title=f"Run {run_id}",
            run_id=run_id,
            dataset=report.dataset,
            reason=self._reason(run_id),
            summary=report.summary,
            timeline=timeline(report),
            max_why=MAX_WHY_CHARS,
            bless=bless_view(self.config.artifacts, run_id),
            tensorboard=self.config.tensorboard is not None,
            vertex=vertex_run_links(
                self.config.vertex_tensorboard, dataset=report.dataset, run_id=run_id
            ),
        )

    def _reason(self, run_id: str) -> str:
        """Why the run was asked for (who and why, for a console action)."""
        found = self.config.artifacts.read_model(RunPaths(run_id).record, RunRecord)
        return "" if found is None else found[0].trigger.reason

    def run_report(self, request: Request) -> Response:
        run_id = check_system_run_id(request.path_params["run_id"])
        return HTMLResponse(render_run_report(self.config.artifacts, run_id))

    def run_artifacts(self, request: Request) -> Response:
        run_id = check_system_run_id(request.path_params["run_id"])
        if self.config.artifacts.stat(RunPaths(run_id).record) is None:
            raise RunNotFoundError(f"no run {run_id}")
        prefix = RunPaths(run_id).root + "/"
        objects: list[ObjectInfo] = []
        for info in self.config.artifacts.list_objects(prefix):
            if len(objects) == MAX_ARTIFACTS_LISTED:
                break
            objects.append(info)
        return _page(
            request,
            "artifacts.html.j2",
            title=f"Artifacts of {run_id}",
            run_id=run_id,
            objects=objects,
            uri=self.config.artifacts.uri,
            truncated=len(objects) == MAX_ARTIFACTS_LISTED,
        )

    # -- actions -------------------------------------------------------------------------

    async def retrain(self, request: Request) -> Response:
        dataset = check_dataset_name(request.path_params["dataset"])
        form = await _form(request)
        if not csrf_valid(request, form.get(CSRF_FIELD)):
            raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page")
        caller = self.config.caller_of(request)
        requested = await run_in_threadpool(
            request_retrain,
            self.bus(),
            caller,
            dataset,
            form.get("reason", ""),
            form.get("form_id", ""),
        )
        target = f"/datasets/{dataset}?" + urlencode({"requested": requested.run_id})
        return RedirectResponse(target, status_code=303)


async def _form(request: Request, limit: int = MAX_FORM_BYTES) -> dict[str, str]:
    """An urlencoded form's fields (the first value of each); 413 / 415 / 400 otherwise."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise HTTPException(415, "send the form as application/x-www-form-urlencoded")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HTTPException(413, f"a form is at most {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"a form is at most {limit} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as error:
        raise BadRequestError("the form is not valid UTF-8 urlencoded data") from error
    return {name: values[0] for name, values in fields.items()}


def _error_page(request: Request, status_code: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status_code)
    return _page(request, "error.html.j2", status_code, title="Error", message=message)


async def _bad_request(request: Request, error: Exception) -> Response:
    status_code = 404 if isinstance(error, RunNotFoundError) else 400
    return _error_page(request, status_code, str(error))


async def _unavailable(request: Request, error: Exception) -> Response:
    return _error_page(request, 503, f"the artifacts bucket did not answer: {error}")


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return _error_page(request, error.status_code, str(error.detail))


def create_app(config: ConsoleConfig) -> Starlette:
    """The console as an ASGI application (served by uvicorn; tested with TestClient)."""
    console = _Console(config)

    def home(request: Request) -> Response:
        return RedirectResponse("/runs", status_code=303)

    def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    routes = [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/runs", console.runs_page),
        Route("/api/runs", console.runs_json),
        Route("/runs/{run_id}", console.run_page),
        Route("/runs/{run_id}/report", console.run_report),
        Route("/runs/{run_id}/artifacts", console.run_artifacts),
        *dataset_routes(console, _page, _form),
        *experiment_routes(config, _page),
        *model_routes(console, _page, _form),
        *alert_routes(console, _page),
        Route("/datasets/{dataset}/retrain", console.retrain, methods=["POST"]),
        Mount("/static", StaticFiles(directory=_STATIC), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(TrustedHostMiddleware, allowed_hosts=config.allowed_hosts),
        ],
        exception_handlers={
            BadRequestError: _bad_request,
            TransientError: _unavailable,
            HTTPException: _http_error,
        },
    )
