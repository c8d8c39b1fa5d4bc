"""``cascade serving-plan DATASET``: which serving mode fits the dataset's traffic.

Reads the model server's request log (``cascade.serving.request_log``: Vertex AI's
request-response logging table in the cloud, the same table in the local BigQuery) and
the key column's distinct count from the dataset's baseline statistics, and prints the
advisor's plan (``cascade.serving.plan``).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from google.api_core import exceptions as gexc
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade.cli.cloud_settings import command_settings, fail
from cascade.core.clients import make_storage_client
from cascade.core.pipeline_config import load_pipeline_config
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore
from cascade.core.warehouse import make_bigquery_client
from cascade.report.serving_plan_chart import render_svg
from cascade.serving.plan import Assumptions, NoRequestsError, ServingPlan, advise
from cascade.serving.request_log import REQUEST_LOG_TABLE, read_key_counts
from cascade.serving.state import read_serving_state
from cascade.validation.baseline_store import BaselineStore

__all__ = ["serving_plan"]

console = Console()

TABLE_ENV = "CASCADE_REQUEST_LOG_TABLE"
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: str) -> timedelta:
    match = _DURATION.fullmatch(value.strip())
    if not match or int(match.group(1)) == 0:
        raise click.BadParameter(f"{value!r}: use a number and s, m, h or d (e.g. 7d)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _key_column(artifacts: ArtifactStore, dataset: str) -> str:
    """The dataset's key column (its pipeline config's ``transform.key_column``), which
    is the model's key input and so the instances' key field; ``key`` without one."""
    try:
        config = load_pipeline_config(artifacts, dataset)
    except Exception:  # noqa: BLE001 - no config or an invalid one: the default field
        return "key"
    return config.transform.key_column or "key"


def _settings(from_env: bool) -> Settings:
    return command_settings(from_env, console)


def _fail(message: str) -> None:
    fail(console, message)


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


def _assumptions(pairs: tuple[str, ...]) -> Assumptions:
    overrides: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r}: use name=value", param_hint="--assume")
        overrides[name.strip()] = value.strip()
    try:
        return Assumptions().with_overrides(overrides)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--assume") from None


def _bytes(value: int) -> str:
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if amount < 1000 or unit == "TB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{value} B"


def _optional(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def print_plan(plan: ServingPlan, dataset: str, out: Console) -> None:
    out.print(f"[bold]{escape(dataset)}[/bold]: recommended [bold]{plan.mode}[/bold]")
    out.print(escape(plan.reason))
    traffic = Table(title="Traffic")
    traffic.add_column("requests", justify="right")
    traffic.add_column("keys seen", justify="right")
    traffic.add_column("cardinality", justify="right")
    traffic.add_column("from")
    traffic.add_column("requests/s", justify="right")
    traffic.add_row(
        f"{plan.requests:,}",
        f"{plan.distinct_keys:,}",
        f"{plan.cardinality:,}",
        plan.cardinality_source,
        _optional(plan.requests_per_s, ".3g"),
    )
    out.print(traffic)
    peaks = Table(title="Peakedness: share of requests covered by the top k keys")
    for coverage in plan.peakedness:
        peaks.add_column(f"{coverage.label}\n({coverage.keys:,})", justify="right")
    peaks.add_row(*(f"{coverage.share:.1%}" for coverage in plan.peakedness))
    out.print(peaks)
    costs = Table(title="Expected cost per mode (estimates: see the assumptions)")
    for name in ("mode", "precomputed keys", "storage", "to the model", "model calls/s"):
        costs.add_column(name, justify="left" if name == "mode" else "right")
    for name in ("CPU cores", "mean latency", "p50 latency"):
        costs.add_column(name, justify="right")
    for cost in plan.costs:
        mark = " ←" if cost.mode == plan.mode else ""
        costs.add_row(
            f"{cost.mode}{mark}",
            f"{cost.precomputed_keys:,}",
            _bytes(cost.storage_bytes),
            f"{cost.model_share:.0%}",
            _optional(cost.model_calls_per_s, ".3g"),
            _optional(cost.cpu_cores, ".3g"),
            f"{cost.mean_latency_ms:.1f} ms",
            f"{cost.p50_latency_ms:.1f} ms",
        )
    out.print(costs)
    shown = ", ".join(f"{name}={value}" for name, value in vars(plan.assumptions).items())
    out.print(f"assumptions: {escape(shown)}")


@click.command("serving-plan")
@click.argument("dataset")
@click.option("--since", default="7d", show_default=True, help="Window of the log: 30m, 24h, 7d…")
@click.option(
    "--table",
    envvar=TABLE_ENV,
    default=None,
    help=f"The request log table, project.dataset.table [{TABLE_ENV}; default: "
    f"<project>.<prefix>serving_logs.{REQUEST_LOG_TABLE}].",
)
@click.option(
    "--endpoint",
    default=None,
    help="The endpoint column's value (default: the dataset's endpoint in serving.json, "
    "else the dataset name, as the local model server logs it).",
)
@click.option(
    "--key-field",
    default=None,
    help="The instances' key field (default: the dataset's key column, transform.key_column).",
)
@click.option(
    "--assume",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override an assumption (bytes_per_answer, lookup_ms, model_ms, model_cpu_ms, "
    "static_max_keys, peaked_share, head_share_target).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write the SVG plot.")
@click.option("--from-env", is_flag=True, help="Use CASCADE_* settings (the cloud), not .cascade/.")
def serving_plan(
    dataset: str,
    since: str,
    table: str | None,
    endpoint: str | None,
    key_field: str | None,
    assume: tuple[str, ...],
    as_json: bool,
    plot: Path | None,
    from_env: bool,
) -> None:
    """Recommend static, dynamic or hybrid serving for DATASET from its request log.

    Peakedness (the share of requests the top k keys cover) and cardinality (distinct
    keys: the log, a Chao1 estimate, and the dataset's statistics) decide: few keys →
    static; many keys, flat traffic → dynamic; many keys with a peaked head → hybrid.
    """
    window = _duration(since)
    assumptions = _assumptions(assume)
    settings = _settings(from_env)
    logs = settings.warehouse_dataset("serving-logs")
    table_id = table or f"{settings.project}.{logs}.{REQUEST_LOG_TABLE}"
    artifacts = ArtifactStore(make_storage_client(settings), settings.artifacts_bucket)
    if key_field is None:
        key_field = _key_column(artifacts, dataset)
    try:
        found = read_serving_state(artifacts, dataset)
        statistics_keys = statistics_cardinality(artifacts, dataset, key_field)
    except Exception as error:  # noqa: BLE001 - the bucket is down or the name is invalid
        _fail(f"could not read {dataset}'s serving state and statistics: {error}")
        return
    if endpoint is None:
        endpoint = found[0].endpoint if found is not None and found[0].endpoint else dataset
    end = datetime.now(UTC)
    start = end - window
    try:
        logged = read_key_counts(
            make_bigquery_client(settings),
            table_id,
            endpoint=endpoint,
            start=start,
            end=end,
            key_field=key_field,
        )
    except ValueError as error:
        _fail(str(error))
        return
    except gexc.NotFound:
        _fail(
            f"no request log yet: table {table_id} does not exist (the model server "
            "creates it on its first logged request; in the cloud, enable the endpoint's "
            "request-response logging to that table)"
        )
        return
    except gexc.GoogleAPICallError as error:
        _fail(f"could not read the request log {table_id}: {error}")
        return
    try:
        plan = advise(
            logged.counts,
            statistics_keys=statistics_keys,
            window_s=logged.window_s,
            assumptions=assumptions,
        )
    except NoRequestsError:
        _fail(
            f"no keyed requests for endpoint {endpoint!r} in {table_id} over the last "
            f"{since} ({logged.unkeyed} instances without {key_field!r}): send traffic "
            "first, or widen --since"
        )
        return
    if plot is not None:
        plot.write_text(render_svg(plan, dataset), encoding="utf-8")
    if as_json:
        body: dict[str, Any] = {
            "dataset": dataset,
            "endpoint": endpoint,
            "table": table_id,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "unkeyed": logged.unkeyed,
            "plan": plan.as_dict(),
        }
        click.echo(json.dumps(body, indent=2))
        return
    print_plan(plan, dataset, console)
    if statistics_keys is None:
        console.print(
            f"(no statistics for a string column {key_field!r}: cardinality from the log)"
        )
    if plot is not None:
        console.print(f"plot: {escape(str(plot))}")
