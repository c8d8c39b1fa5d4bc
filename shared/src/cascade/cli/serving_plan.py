"""``cascade serving-plan DATASET``: which serving mode fits the dataset's traffic.

Reads the model server's request log (``cascade.serving.request_log``: Vertex AI's
request-response logging table in the cloud, the same table in the local BigQuery) and
the key column's distinct count from the dataset's baseline statistics, and prints the
advisor's plan (``cascade.serving.plan``). ``--save`` stores it as
``models/<dataset>/serving-plan.json``, which the run report shows. The computing is
``cascade.report.serving_plan_compute``, shared with ``cascade report``.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade.cli.cloud_settings import command_settings, fail
from cascade.core.clients import make_storage_client
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore
from cascade.core.warehouse import make_bigquery_client
from cascade.report.serving_plan import (
    StoredServingPlan,
    format_bytes,
    save_serving_plan,
    serving_plan_path,
)
from cascade.report.serving_plan_chart import render_svg
from cascade.report.serving_plan_compute import (
    REQUEST_LOG_TABLE_ENV,
    NoServingPlanError,
    compute_serving_plan,
    request_log_table,
    statistics_cardinality,
)
from cascade.serving.plan import Assumptions, ServingPlan
from cascade.serving.request_log import REQUEST_LOG_TABLE

__all__ = ["TABLE_ENV", "print_plan", "serving_plan", "statistics_cardinality"]

console = Console()

TABLE_ENV = REQUEST_LOG_TABLE_ENV
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: str) -> timedelta:
    match = _DURATION.fullmatch(value.strip())
    if not match or int(match.group(1)) == 0:
        raise click.BadParameter(f"{value!r}: use a number and s, m, h or d (e.g. 7d)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _settings(from_env: bool) -> Settings:
    return command_settings(from_env, console)


def _fail(message: str) -> None:
    fail(console, message)


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
            format_bytes(cost.storage_bytes),
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
@click.option(
    "--save",
    is_flag=True,
    help="Also store the plan as models/DATASET/serving-plan.json (the run report shows it).",
)
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
    save: bool,
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
    table_id = table or request_log_table(settings)
    artifacts = ArtifactStore(make_storage_client(settings), settings.artifacts_bucket)
    try:
        stored = compute_serving_plan(
            artifacts,
            dataset,
            bigquery_client=lambda: make_bigquery_client(settings),
            table=table_id,
            window=window,
            window_label=since,
            endpoint=endpoint,
            key_field=key_field,
            assumptions=assumptions,
        )
    except NoServingPlanError as error:
        _fail(str(error))
        return
    plan = stored.plan
    if plot is not None:
        plot.write_text(render_svg(plan, dataset), encoding="utf-8")
    if as_json:
        body: dict[str, Any] = {
            "dataset": dataset,
            "endpoint": stored.endpoint,
            "table": table_id,
            "start": stored.start.isoformat(),
            "end": stored.end.isoformat(),
            "unkeyed": stored.unkeyed,
            "plan": plan.as_dict(),
        }
        click.echo(json.dumps(body, indent=2))
    else:
        print_plan(plan, dataset, console)
        if plan.statistics_keys is None:
            console.print(
                f"(no statistics for a string column {stored.key_field!r}: "
                "cardinality from the log)"
            )
        if plot is not None:
            console.print(f"plot: {escape(str(plot))}")
    if save:
        _save(artifacts, stored, err=as_json)


def _save(artifacts: ArtifactStore, stored: StoredServingPlan, *, err: bool) -> None:
    """Store the plan and say where: on stderr with ``--json``, so stdout stays one JSON
    document. Printed after the plan, so a failed write does not hide it."""
    try:
        uri = save_serving_plan(artifacts, stored)
    except Exception as error:  # noqa: BLE001 - the bucket refused or is down: say so
        where = artifacts.uri(serving_plan_path(stored.dataset))
        _fail(f"could not save the plan to {where}: {error}")
        return
    message = f"saved: {uri} (the run report shows it)"
    if err:
        click.echo(message, err=True)
    else:
        console.print(escape(message))
