"""Computing a dataset's serving plan from its request log (what ``cascade serving-plan``
and ``cascade report`` share).

``compute_serving_plan`` reads the dataset's serving state (its endpoint) and key
column's distinct count (the baseline statistics), counts the requests per key in the
request log (BigQuery), and asks the advisor (``cascade.serving.plan.advise``); it
returns a ``StoredServingPlan`` ready to save (``cascade.report.serving_plan``).

On the report floor: above the serving floor (the advisor, the log reader, the serving
state) and the validation floor (the statistics), which it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from cascade.core.context import utc_now
from cascade.core.pipeline_config import load_pipeline_config
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore
from cascade.report.serving_plan import StoredServingPlan
from cascade.serving.plan import Assumptions, NoRequestsError, advise
from cascade.serving.request_log import REQUEST_LOG_TABLE, read_key_counts
from cascade.serving.state import read_serving_state
from cascade.validation.baseline_store import BaselineStore

__all__ = [
    "DEFAULT_WINDOW",
    "DEFAULT_WINDOW_LABEL",
    "REQUEST_LOG_TABLE_ENV",
    "NoServingPlanError",
    "compute_serving_plan",
    "dataset_key_column",
    "request_log_table",
    "statistics_cardinality",
]

DEFAULT_WINDOW = timedelta(days=7)
DEFAULT_WINDOW_LABEL = "7d"
"""How ``DEFAULT_WINDOW`` is written on the command line (``--since``)."""
REQUEST_LOG_TABLE_ENV = "CASCADE_REQUEST_LOG_TABLE"
"""Names the request log table (project.dataset.table) instead of the default one."""


class NoServingPlanError(Exception):
    """No plan could be computed; the message says why, as ``cascade serving-plan``
    prints it (no request log, no keyed requests, an unreadable bucket…)."""


def request_log_table(settings: Settings) -> str:
    """The request log's default table: ``<project>.<prefix>serving_logs.<table>``."""
    logs = settings.warehouse_dataset("serving-logs")
    return f"{settings.project}.{logs}.{REQUEST_LOG_TABLE}"


def dataset_key_column(artifacts: ArtifactStore, dataset: str) -> str:
    """The dataset's key column (its pipeline config's ``transform.key_column``), which
    is the model's key input and so the instances' key field; ``key`` without one."""
    try:
        config = load_pipeline_config(artifacts, dataset)
    except Exception:  # noqa: BLE001 - no config or an invalid one: the default field
        return "key"
    return config.transform.key_column or "key"


def statistics_cardinality(artifacts: ArtifactStore, dataset: str, key_field: str) -> int | None:
    """The key column's distinct values in the dataset's baseline statistics (a lower
    bound when they were truncated), or None when the column has no string counts."""
    stored = BaselineStore(artifacts, dataset).load()
    if stored is None:
        return None
    feature = stored.summary.features.get(key_field)
    if feature is None or feature.strings is None:
        return None
    compact = feature.strings.compacted(2**62)
    return 0 if not compact.parts else len(compact.parts[0][0])


def compute_serving_plan(
    artifacts: ArtifactStore,
    dataset: str,
    *,
    bigquery_client: Callable[[], bigquery.Client],
    table: str,
    window: timedelta = DEFAULT_WINDOW,
    window_label: str = DEFAULT_WINDOW_LABEL,
    endpoint: str | None = None,
    key_field: str | None = None,
    assumptions: Assumptions | None = None,
    deadline_s: float | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> StoredServingPlan:
    """The plan for ``dataset`` over the last ``window`` of the request log ``table``.

    ``endpoint`` defaults to the dataset's endpoint in ``serving.json`` (else the dataset
    name, as the local model server logs it), ``key_field`` to the dataset's key column.
    ``bigquery_client`` is called only once the bucket has been read, so a caller without
    BigQuery credentials still gets the bucket's errors first. ``window_label`` is how the
    window is named in errors; ``deadline_s`` bounds the wait for BigQuery (see
    ``read_key_counts``). Raises ``NoServingPlanError`` saying why there is no plan;
    other errors (a deadline passed, no credentials) are the caller's to handle.
    """
    key = key_field if key_field is not None else dataset_key_column(artifacts, dataset)
    try:
        found = read_serving_state(artifacts, dataset)
        statistics_keys = statistics_cardinality(artifacts, dataset, key)
    except Exception as error:  # the bucket is down, or the dataset name is invalid
        raise NoServingPlanError(
            f"could not read {dataset}'s serving state and statistics: {error}"
        ) from error
    if endpoint is None:
        endpoint = found[0].endpoint if found is not None and found[0].endpoint else dataset
    end = clock()
    start = end - window
    try:
        logged = read_key_counts(
            bigquery_client(),
            table,
            endpoint=endpoint,
            start=start,
            end=end,
            key_field=key,
            deadline_s=deadline_s,
        )
    except ValueError as error:
        raise NoServingPlanError(str(error)) from error
    except gexc.NotFound as error:
        raise NoServingPlanError(
            f"no request log yet: table {table} does not exist (the model server "
            "creates it on its first logged request; in the cloud, enable the endpoint's "
            "request-response logging to that table)"
        ) from error
    except gexc.GoogleAPICallError as error:
        raise NoServingPlanError(f"could not read the request log {table}: {error}") from error
    try:
        plan = advise(
            logged.counts,
            statistics_keys=statistics_keys,
            window_s=logged.window_s,
            assumptions=assumptions,
        )
    except NoRequestsError as error:
        raise NoServingPlanError(
            f"no keyed requests for endpoint {endpoint!r} in {table} over the last "
            f"{window_label} ({logged.unkeyed} instances without {key!r}): send traffic "
            "first, or widen --since"
        ) from error
    return StoredServingPlan(
        dataset=dataset,
        endpoint=endpoint,
        table=table,
        key_field=key,
        start=start,
        end=end,
        computed_at=clock(),
        unkeyed=logged.unkeyed,
        plan=plan,
    )
