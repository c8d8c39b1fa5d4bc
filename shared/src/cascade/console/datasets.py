"""The dataset pages: the datasets index and a dataset's schema, files, drift and serving plan.

``/datasets/<dataset>`` keeps the dataset's runs list and retrain form and adds:

- the stored schema (``datasets/<d>/schema.pbtxt``) as a table, and an editor that
  parses the edited text with the validation package's own parser
  (``parse_schema_text``, what every step reads the schema with) before saving, and
  saves it only over the generation the page showed (``if_generation_match``): a
  concurrent change (an ``accept-feature``, another editor) is refused with 409, never
  overwritten. The save appends a comment naming who, when, from which generation and
  why, as ``cascade schema accept-feature`` records its changes in the schema itself, so
  the audit is part of the same atomic write;
- the accepted files (one page of accepted-file manifests per view: one listing of
  ``datasets/<d>/accepted/`` from a page token, capped) and the quarantined files with
  their findings (one listing of ``quarantine/<d>/``, capped), each quarantined file
  with release and discard forms that call ``cascade.steps.quarantine_review`` exactly
  as ``cascade quarantine release|discard`` does (``via="console"``);
- per feature, the drift the validate step measured for each accepted file against the
  baseline (``runs/<run>/validation/anomalies.pbtxt``, ``drift_skew_info``), served as
  JSON for the page's uPlot chart;
- the dataset's stored serving plan (``cascade serving-plan --save``), or what is missing.

Every string shown comes from data (feature names, findings, file names): templates
escape it and the script sets it as text.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlencode

from google.protobuf import text_format  # type: ignore[import-untyped,unused-ignore]
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from cascade.console.roles import Role
from cascade.console.security import CSRF_FIELD, csrf_valid
from cascade.console.views import when
from cascade.core.context import StepContext
from cascade.core.errors import BadRequestError, CascadeError, InvalidConfigError
from cascade.core.paths import DatasetPaths, RunPaths, check_dataset_name
from cascade.core.run_index import READ_WORKERS, IndexLister
from cascade.core.runs import check_system_run_id
from cascade.core.store import ArtifactStore
from cascade.report.serving_plan import format_bytes, load_serving_plan
from cascade.steps.quarantine_review import (
    MAX_REVIEW_REASON_CHARS,
    CannotReviewError,
    QuarantinedRun,
    UnknownRunError,
    discard,
    quarantined_run,
    read_review,
    release,
)
from cascade.validation.manifest import AcceptedFile
from cascade.validation.schema import parse_schema_text
from cascade.validation.schema_store import StoredSchema, read_schema, schema_rows
from cascade.validation.tfmd import anomalies_pb2

if TYPE_CHECKING:
    from cascade.console.app import _Console

__all__ = [
    "MAX_SCHEMA_CHARS",
    "SchemaChangedError",
    "dataset_names",
    "dataset_routes",
    "drift_series",
    "save_schema",
]

PageRenderer = Callable[..., Response]
FormReader = Callable[..., Awaitable[dict[str, str]]]

MAX_SCHEMA_CHARS = 256 * 1024
"""An edited schema's size (a form of at most this much, plus its other fields)."""
MAX_SCHEMA_FORM_BYTES = MAX_SCHEMA_CHARS * 4
MAX_WHY_CHARS = 500
MIN_WHY_CHARS = 3
QUARANTINE_NAMES_PER_RUN = 20
"""A page of quarantined runs lists at most this many names per run it shows (a run's
quarantine holds its data file's copy and its anomalies)."""
DRIFT_FILES = 200
"""Accepted files a drift chart reads (one page of manifests and their anomalies)."""
MAX_FEATURE_CHARS = 256
_DATASETS_PREFIX = "datasets/"
_MEASURES = {
    anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "L-infinity distance",
    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: "Jensen-Shannon divergence",
    # TFMD names no two-sample KS measurement; Cascade writes its KS statistic as UNKNOWN.
    anomalies_pb2.DriftSkewInfo.Measurement.UNKNOWN: "Kolmogorov-Smirnov statistic",
}


class SchemaChangedError(CascadeError):
    """The schema changed since the page showed it (HTTP 409)."""


# ------------------------------------------------------------------ page tokens


def _token_of(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _offset_of(token: str | None, field: str, prefix: str) -> str | None:
    """The listing's start offset a page token names; 400 naming ``field`` if it is not
    one of this listing's."""
    if token is None:
        return None
    try:
        name = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise BadRequestError(f"{field}: not a page token of this list") from error
    if len(token) > 2048 or not name.startswith(prefix) or not name.isprintable():
        raise BadRequestError(f"{field}: not a page token of this list")
    return name


# ------------------------------------------------------------------ the datasets index


def dataset_names(
    lister: IndexLister, start: str | None, limit: int
) -> tuple[list[str], str | None]:
    """Up to ``limit`` dataset names from ``start`` on and the next page's offset.

    One listing request of one name per dataset: after a dataset's first object the
    listing skips to the names after its folder (``datasets/<d>0`` sorts after every
    ``datasets/<d>/...``), so a dataset with a million objects costs one name.
    """
    names: list[str] = []
    offset = start or _DATASETS_PREFIX
    while True:
        first = next(iter(lister.list_from(_DATASETS_PREFIX, offset, 1)), None)
        if first is None:
            return names, None
        dataset = first.removeprefix(_DATASETS_PREFIX).split("/", 1)[0]
        if len(names) == limit:
            return names, first
        with contextlib.suppress(BadRequestError):  # else not a dataset the system names
            names.append(check_dataset_name(dataset))
        offset = f"{_DATASETS_PREFIX}{dataset}0"


# ------------------------------------------------------------------ schema


def _why(reason: str, field: str = "reason") -> str:
    text = " ".join(reason.split())
    if not MIN_WHY_CHARS <= len(text) <= MAX_WHY_CHARS:
        raise BadRequestError(
            f"{field}: {MIN_WHY_CHARS} to {MAX_WHY_CHARS} characters (got {len(text)}): say "
            "why, it is recorded"
        )
    return text


def _generation(value: str | None) -> int:
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 20:
        raise BadRequestError("generation: reload the page (the schema's generation is missing)")
    return int(value)


def save_schema(
    store: ArtifactStore,
    dataset: str,
    text: str,
    *,
    generation: int,
    actor: str,
    reason: str,
    now: datetime,
) -> int:
    """Store ``text`` as ``dataset``'s schema if it parses and the stored schema is still
    at ``generation`` (0: there is none yet); the new generation.

    InvalidConfigError (with the parser's line, column and field) when it does not
    parse; SchemaChangedError when the schema changed meanwhile. The saved text ends
    with a comment naming who changed it, when, from which generation and why.
    """
    why = _why(reason)
    if len(text) > MAX_SCHEMA_CHARS:
        raise BadRequestError(f"schema: at most {MAX_SCHEMA_CHARS} characters")
    name = DatasetPaths(dataset).schema
    uri = store.uri(name)
    if not parse_schema_text(text, where=f"the edited {uri}").feature:
        raise InvalidConfigError(f"the edited {uri} lists no feature: nothing would be trained on")
    body = text if text.endswith("\n") or not text else text + "\n"
    saved = (
        f"{body}# Edited by {' '.join(actor.split())} at {now.isoformat()} in the console "
        f"(from generation {generation}): {why}\n"
    )
    parse_schema_text(saved, where=uri)  # never store a schema that does not parse
    written = store.write(
        name, saved.encode(), content_type="text/plain", if_generation_match=generation
    )
    if written is None:
        raise SchemaChangedError(
            f"{uri} changed since generation {generation} was shown (another edit or "
            "accept-feature): nothing was saved; reload the page and edit the newer schema"
        )
    return written


# ------------------------------------------------------------------ files


Item = TypeVar("Item")
Result = TypeVar("Result")

_READERS = ThreadPoolExecutor(READ_WORKERS, thread_name_prefix="console-datasets")


def _read_all(read: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    """``read`` of every item, ``READ_WORKERS`` at a time (as the run index reads its
    pages), in the items' order; the first error is raised."""
    return list(_READERS.map(read, items))


def _accepted_page(
    store: ArtifactStore, lister: IndexLister, dataset: str, start: str | None, size: int
) -> tuple[list[AcceptedFile], str | None]:
    prefix = DatasetPaths(dataset).accepted_prefix
    names = [name for name in lister.list_from(prefix, start, size + 1) if name.endswith(".json")]
    following = names[size] if len(names) > size else None
    found = _read_all(lambda name: store.read_model(name, AcceptedFile), names[:size])
    return [manifest for manifest, _ in filter(None, found)], following


def _quarantined_run_ids(
    lister: IndexLister, dataset: str, start: str | None, size: int
) -> tuple[list[str], str | None]:
    """Up to ``size`` run ids under ``quarantine/<dataset>/`` and the next offset."""
    prefix = f"quarantine/{DatasetPaths(dataset).dataset}/"
    budget = (size + 1) * QUARANTINE_NAMES_PER_RUN
    run_ids: list[str] = []
    for examined, name in enumerate(lister.list_from(prefix, start, size + 1), start=1):
        run_id = name.removeprefix(prefix).split("/", 1)[0]
        if run_ids and run_ids[-1] == run_id:
            continue
        if len(run_ids) == size or examined > budget:
            return run_ids, f"{prefix}{run_id}/"
        run_ids.append(run_id)
    return run_ids, None


def _quarantined_row(ctx: StepContext, run_id: str) -> dict[str, Any]:
    row: dict[str, Any] = {"run_id": run_id, "source": "", "at": "", "findings": []}
    row["review"] = ""
    try:
        found: QuarantinedRun = quarantined_run(ctx, check_system_run_id(run_id))
    except BadRequestError as error:
        row["problem"] = str(error)
        return row
    review = read_review(ctx, found.run.dataset, run_id)
    row.update(
        source=found.source.uri,
        at=when(found.quarantined_at),
        findings=found.errors,
        problem="",
    )
    if review is not None:
        then = f" as run {review.release_run_id}" if review.release_run_id else ""
        row["review"] = f"{review.done} by {review.actor}{then}: {review.reason}"
        row["release_run_id"] = review.release_run_id
    return row


# ------------------------------------------------------------------ drift


def _drift_of(store: ArtifactStore, run_id: str) -> dict[str, tuple[str, float, float]]:
    """Each feature's drift measurement of the run's file: (measure, value, threshold)."""
    stored = store.read(f"{RunPaths(run_id).step_dir('validation')}/anomalies.pbtxt")
    if stored is None:
        return {}
    anomalies = anomalies_pb2.Anomalies()
    try:
        text_format.Parse(stored.data.decode("utf-8", errors="replace"), anomalies)
    except text_format.ParseError:
        return {}
    found: dict[str, tuple[str, float, float]] = {}
    for info in anomalies.drift_skew_info:
        feature = ".".join(info.path.step)
        for measurement in info.drift_measurements:
            found.setdefault(
                feature,
                (
                    _MEASURES.get(measurement.type, "distance"),
                    float(measurement.value),
                    float(measurement.threshold),
                ),
            )
    return found


def drift_series(
    store: ArtifactStore,
    lister: IndexLister,
    dataset: str,
    feature: str | None,
    start: str | None = None,
) -> dict[str, Any]:
    """The drift the validate step measured, per accepted file, for ``feature`` (the first
    measured feature when None): up to ``DRIFT_FILES`` files from ``start``, in order
    of acceptance."""
    manifests, _ = _accepted_page(store, lister, dataset, start, DRIFT_FILES)
    ordered = sorted(manifests, key=lambda m: (m.accepted_at, m.file_id))
    drifts = _read_all(lambda manifest: _drift_of(store, manifest.run_id), ordered)
    measured = list(zip(ordered, drifts, strict=True))
    features = sorted({name for _, drift in measured for name in drift})
    if feature is not None and feature not in features:
        raise BadRequestError(
            "feature: no drift was measured for this feature in the accepted files read"
        )
    chosen = feature if feature is not None else (features[0] if features else None)
    points = []
    measure = ""
    for manifest, drift in measured:
        if chosen is None or chosen not in drift:
            continue
        measure, value, threshold = drift[chosen]
        points.append(
            {
                "t": manifest.accepted_at.astimezone(UTC).timestamp(),
                "at": when(manifest.accepted_at),
                "value": value,
                "threshold": threshold,
                "run_id": manifest.run_id,
                "file": manifest.uri,
            }
        )
    return {
        "dataset": dataset,
        "features": features,
        "feature": chosen,
        "measure": measure,
        "points": points,
        "files": len(manifests),
    }


# ------------------------------------------------------------------ serving plan


def _serving_plan(store: ArtifactStore, dataset: str) -> dict[str, Any]:
    try:
        stored = load_serving_plan(store, dataset)
    except ValidationError:
        return {"missing": "the stored serving plan is not a plan this version reads"}
    if stored is None:
        return {
            "missing": (
                f"no serving plan stored for {dataset}: it needs the model server's request "
                f"log and the key column's statistics; compute and store one with "
                f"`cascade serving-plan {dataset} --save`"
            )
        }
    plan = stored.plan
    return {
        "missing": "",
        "mode": plan.mode,
        "reason": plan.reason,
        "requests": plan.requests,
        "window": f"{when(stored.start)} to {when(stored.end)}",
        "computed_at": when(stored.computed_at),
        "costs": [
            {
                "mode": cost.mode,
                "recommended": cost.mode == plan.mode,
                "keys": cost.precomputed_keys,
                "storage": format_bytes(cost.storage_bytes),
                "model_share": f"{cost.model_share:.0%}",
                "calls": "" if cost.model_calls_per_s is None else f"{cost.model_calls_per_s:.3g}",
                "cores": "" if cost.cpu_cores is None else f"{cost.cpu_cores:.3g}",
                "mean_ms": f"{cost.mean_latency_ms:.3g}",
                "p50_ms": f"{cost.p50_latency_ms:.3g}",
            }
            for cost in plan.costs
        ],
    }


# ------------------------------------------------------------------ routes


@dataclass
class _Notice:
    kind: str
    text: str


class DatasetPages:
    """The dataset routes over the console's store, lister, caller and step context."""

    def __init__(self, console: _Console, page: PageRenderer, read_form: FormReader) -> None:
        self.console = console
        self.config = console.config
        self.page = page
        self.read_form = read_form
        self._ctx: StepContext | None = None

    def ctx(self) -> StepContext | None:
        if self._ctx is None and self.config.step_context is not None:
            self._ctx = self.config.step_context()
        return self._ctx

    # -- reading ------------------------------------------------------------------------

    def index(self, request: Request) -> Response:
        token = request.query_params.get("page") or None
        start = _offset_of(token, "page", _DATASETS_PREFIX)
        names, following = dataset_names(self.config.lister, start, self.config.page_size)
        return self.page(
            request,
            "datasets.html.j2",
            title="Datasets",
            datasets=names,
            next_url=f"/datasets?{urlencode({'page': _token_of(following)})}"
            if following
            else None,
            first_url="/datasets" if token else None,
        )

    def _schema_view(self, dataset: str) -> dict[str, Any]:
        """The stored schema, or why it does not parse with its raw text and generation
        (so the editor can fix it over that generation)."""
        try:
            stored = read_schema(self.config.artifacts, dataset)
        except InvalidConfigError as error:
            raw = self.config.artifacts.read(DatasetPaths(dataset).schema)
            return {
                "schema_problem": str(error),
                "schema": None,
                "text": "" if raw is None else raw.data.decode("utf-8", errors="replace"),
                "generation": 0 if raw is None else raw.generation,
            }
        return {
            "schema_problem": "",
            "schema": stored,
            "text": stored.text if stored is not None else "",
            "generation": stored.generation if stored is not None else 0,
        }

    def dataset(self, request: Request, notice: _Notice | None = None, **edit: Any) -> Response:
        dataset = check_dataset_name(request.path_params["dataset"])
        files_token = request.query_params.get("files") or None
        quarantine_token = request.query_params.get("quarantined") or None
        accepted_prefix = DatasetPaths(dataset).accepted_prefix
        quarantine_prefix = f"quarantine/{dataset}/"
        files_start = _offset_of(files_token, "files", accepted_prefix)
        quarantine_start = _offset_of(quarantine_token, "quarantined", quarantine_prefix)
        size = self.config.page_size
        store, lister = self.config.artifacts, self.config.lister
        manifests, files_next = _accepted_page(store, lister, dataset, files_start, size)
        run_ids, quarantine_next = _quarantined_run_ids(lister, dataset, quarantine_start, size)
        ctx = self.ctx()
        quarantined = (
            _read_all(lambda run_id: _quarantined_row(ctx, run_id), run_ids)
            if ctx is not None
            else [{"run_id": run_id, "problem": "", "review": ""} for run_id in run_ids]
        )
        view = self._schema_view(dataset)
        stored: StoredSchema | None = view["schema"]
        base = f"/datasets/{dataset}"

        def link(**query: str | None) -> str:
            kept = {
                "files": files_token,
                "quarantined": quarantine_token,
                **query,
            }
            shown = {name: value for name, value in kept.items() if value}
            return f"{base}?{urlencode(shown)}" if shown else base

        return self.console.runs_page(
            request,
            dataset,
            "dataset.html.j2",
            notice=notice or self._notice(request),
            schema=stored,
            schema_problem=view["schema_problem"],
            schema_rows=schema_rows(stored) if stored is not None else [],
            schema_text=edit.get("schema_text", view["text"]),
            schema_generation=edit.get("schema_generation", view["generation"]),
            schema_error=edit.get("schema_error", ""),
            schema_status=edit.get("schema_status", ""),
            max_schema_chars=MAX_SCHEMA_CHARS,
            accepted=[
                {
                    "uri": m.uri,
                    "generation": m.generation,
                    "rows": m.num_examples,
                    "at": when(m.accepted_at),
                    "run_id": m.run_id,
                    "skews": "; ".join(skew.brief() for skew in m.value_skews),
                    "duplicate_of": m.duplicate_of or "",
                }
                for m in sorted(manifests, key=lambda m: (m.accepted_at, m.file_id))
            ],
            files_next=link(files=_token_of(files_next)) if files_next else None,
            files_first=link(files=None) if files_token else None,
            quarantined=quarantined,
            reviewable=ctx is not None,
            quarantine_next=link(quarantined=_token_of(quarantine_next))
            if quarantine_next
            else None,
            quarantine_first=link(quarantined=None) if quarantine_token else None,
            max_review=MAX_REVIEW_REASON_CHARS,
            drift_api=f"/api{base}/drift"
            + (f"?{urlencode({'files': files_token})}" if files_token else ""),
            serving=_serving_plan(store, dataset),
        )

    def _notice(self, request: Request) -> _Notice | None:
        if request.query_params.get("saved") == "1":
            return _Notice("saved", "Schema saved.")
        done = request.query_params.get("reviewed")
        action = request.query_params.get("action")
        if done is None or action not in ("released", "discarded"):
            return None
        try:
            check_system_run_id(done)
        except BadRequestError:
            return None
        return _Notice("reviewed", f"Quarantined run {done} {action}.")

    def drift(self, request: Request) -> Response:
        dataset = check_dataset_name(request.path_params["dataset"])
        feature = request.query_params.get("feature") or None
        if feature is not None and len(feature) > MAX_FEATURE_CHARS:
            raise BadRequestError(f"feature: at most {MAX_FEATURE_CHARS} characters")
        token = request.query_params.get("files") or None
        start = _offset_of(token, "files", DatasetPaths(dataset).accepted_prefix)
        series = drift_series(
            self.config.artifacts, self.config.lister, dataset, feature, start=start
        )
        return JSONResponse(series)

    # -- acting -------------------------------------------------------------------------

    async def _checked_form(self, request: Request, limit: int | None = None) -> dict[str, str]:
        form = await (self.read_form(request) if limit is None else self.read_form(request, limit))
        if not csrf_valid(request, form.get(CSRF_FIELD)):
            raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page")
        return form

    async def save(self, request: Request) -> Response:
        dataset = check_dataset_name(request.path_params["dataset"])
        form = await self._checked_form(request, MAX_SCHEMA_FORM_BYTES)
        generation = _generation(form.get("generation"))
        text = form.get("schema")
        if text is None:
            raise BadRequestError("schema: the form has no schema text")
        caller = self.config.caller_of(request)
        caller.require(Role.REVIEW)  # the data stewards: review_http_invokers
        try:
            await run_in_threadpool(
                save_schema,
                self.config.artifacts,
                dataset,
                text,
                generation=generation,
                actor=caller.name,
                reason=form.get("reason", ""),
                now=datetime.now(UTC),
            )
        except InvalidConfigError as error:
            return self._refused(request, 400, str(error), text, generation)
        except SchemaChangedError as error:
            return self._refused(request, 409, str(error), text, generation)
        return RedirectResponse(f"/datasets/{dataset}?saved=1#schema", status_code=303)

    def _refused(
        self, request: Request, status: int, message: str, text: str, generation: int
    ) -> Response:
        response = self.dataset(
            request,
            schema_text=text,
            schema_generation=generation,
            schema_error=message,
            schema_status="refused",
        )
        response.status_code = status
        return response

    async def review(self, request: Request, action: Literal["release", "discard"]) -> Response:
        dataset = check_dataset_name(request.path_params["dataset"])
        run_id = check_system_run_id(request.path_params["run_id"])
        form = await self._checked_form(request)
        ctx = await run_in_threadpool(self.ctx)
        if ctx is None:
            raise HTTPException(503, "this console reviews no quarantine (no step context)")
        caller = self.config.caller_of(request)
        caller.require(Role.REVIEW)  # the data stewards: review_http_invokers
        reason = form.get("reason", "")

        def act() -> None:
            found = quarantined_run(ctx, run_id)
            if found.run.dataset != dataset:
                raise UnknownRunError(f"no quarantined run {run_id} in dataset {dataset}")
            if action == "release":
                release(ctx, run_id, actor=caller.name, reason=reason, via="console")
            else:
                discard(ctx, run_id, actor=caller.name, reason=reason, via="console")

        try:
            await run_in_threadpool(act)
        except UnknownRunError as error:
            raise HTTPException(404, str(error)) from error
        except CannotReviewError as error:
            raise HTTPException(409, str(error)) from error
        done = "released" if action == "release" else "discarded"
        query = urlencode({"reviewed": run_id, "action": done})
        return RedirectResponse(f"/datasets/{dataset}?{query}#quarantined", status_code=303)

    async def release(self, request: Request) -> Response:
        return await self.review(request, "release")

    async def discard(self, request: Request) -> Response:
        return await self.review(request, "discard")


def dataset_routes(console: _Console, page: PageRenderer, read_form: FormReader) -> list[BaseRoute]:
    """The dataset routes, for ``create_app``'s route list."""
    pages = DatasetPages(console, page, read_form)
    return [
        Route("/datasets", pages.index),
        Route("/datasets/{dataset}", pages.dataset),
        Route("/datasets/{dataset}/schema", pages.save, methods=["POST"]),
        Route("/datasets/{dataset}/quarantine/{run_id}/release", pages.release, methods=["POST"]),
        Route("/datasets/{dataset}/quarantine/{run_id}/discard", pages.discard, methods=["POST"]),
        Route("/api/datasets/{dataset}/drift", pages.drift),
    ]
