"""``cascade demo``: start the local cloud and show what the pipeline does, in three acts.

1. A sample file lands and runs through every step: validated, transformed, trained,
   evaluated, deployed.
2. A file from a world that moved lands, with categories nobody has seen (regions
   `overseas` and `unknown`): validation quarantines it for that schema skew and lists
   its value skews beside it (which features drifted, by how much, against which
   threshold); a value skew alone would be accepted and retrain (docs/validation.md).
3. A retrain request: a model trained on all data accepted so far is evaluated against
   the production model, and deployed or not.

Then a prediction from the endpoint and where to look next, ending with the web
console's address and the command that serves it. Every file name and request
id is new (a timestamp), so the demo runs again on a running local cloud with earlier
runs; the baseline holds accepted data only, so the drifted file is quarantined again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.rule import Rule
from rich.table import Table

from cascade.cli.console import DEFAULT_PORT, LOOPBACK
from cascade.cli.demo_acts import ActOutcome, DemoSession, drift_act, retrain_act, upload_act
from cascade.cli.demo_explain import show_prediction
from cascade.cli.demo_follow import RunFollower
from cascade.cli.sample_data import SAMPLE_PIPELINE_CONFIG
from cascade.core.paths import DatasetPaths
from cascade.core.pipeline_config import push_pipeline_config
from cascade.localcloud import control
from cascade.localcloud.client import LocalCloudClient
from cascade.localcloud.local_settings import LocalCloudSettings

__all__ = ["CONSOLE_ADDRESS", "DEMO_DATASET", "run_demo"]

DEMO_DATASET = "credit"
RUN_TIMEOUT_S = 900.0
CONSOLE_ADDRESS = f"http://{LOOPBACK}:{DEFAULT_PORT}/"
"""Where ``cascade console`` serves by default (127.0.0.1 only), and so the local cloud."""


@dataclass(frozen=True)
class _Act:
    title: str
    play: Callable[[DemoSession], ActOutcome]


_ACTS = (
    _Act("act 1: a sample file lands and runs through every step", upload_act),
    _Act("act 2: a drifted file lands", drift_act),
    _Act("act 3: a retrain request", retrain_act),
)


def _start_local_cloud(local: LocalCloudSettings, console: Console) -> bool:
    started = time.perf_counter()
    with console.status("starting the local cloud (emulators, functions, router)…"):
        try:
            control.up(local)
        except (control.LocalCloudError, RuntimeError) as error:
            console.print(f"[red]could not start the local cloud:[/red] {escape(str(error))}")
            return False
    console.print(f"local cloud ready in {time.perf_counter() - started:.1f}s")
    return True


def _ensure_sample_config(client: LocalCloudClient, console: Console) -> None:
    if client.artifacts.read(DatasetPaths(DEMO_DATASET).pipeline_config) is None:
        uri = push_pipeline_config(
            client.artifacts, DEMO_DATASET, SAMPLE_PIPELINE_CONFIG.encode(), where="sample config"
        )
        console.print(f"stored the sample pipeline config at {uri}")


def _play(session: DemoSession) -> list[ActOutcome]:
    """The acts in order; an act that did not end as expected stops the demo."""
    outcomes: list[ActOutcome] = []
    for act in _ACTS:
        session.console.print(Rule(act.title))
        started = time.perf_counter()
        outcome = act.play(session)
        outcomes.append(outcome)
        colour = "green" if outcome.ok else "red"
        session.console.print(
            f"[{colour}]{escape(outcome.summary)}[/{colour}] ({time.perf_counter() - started:.1f}s)"
        )
        if not outcome.ok:
            break
    return outcomes


def _prediction(local: LocalCloudSettings, session: DemoSession) -> None:
    state = control.status(local)
    url = None if state is None else state.environment.get("CASCADE_DEPLOY_MODEL_SERVER_URL")
    if not url:
        return
    session.console.print(Rule("the deployed model answers"))
    settings = session.client.settings
    show_prediction(
        session.console,
        url,
        project=settings.project,
        region=settings.region,
        endpoint=DEMO_DATASET,
    )


def _where_next(console: Console, outcomes: list[ActOutcome]) -> None:
    run_ids = {outcome.act: outcome.run_id for outcome in outcomes if outcome.run_id}
    first = run_ids.get("upload", "<run-id>")
    drifted = run_ids.get("drift", first)
    retrained = run_ids.get("retrain", first)
    table = Table(title="where to look next (.venv/bin/cascade …)", show_header=False, box=None)
    for command, what in (
        ("cascade status", "every run: steps, timings, verdicts, model versions"),
        (f"cascade run {first}", "one run's steps, attempts, outputs and errors"),
        (f"cascade logs {drifted}", "every process's log lines for one run"),
        (f"cascade report {drifted}", "a run's report: validation, evaluation, deploy"),
        (f"cascade tensorboard {retrained}", "the training curves, in TensorBoard"),
        ("cascade down", "stop the local cloud (data stays in .cascade/)"),
    ):
        table.add_row(f"  {command}", what)
    console.print(table)


def _summary(console: Console, outcomes: list[ActOutcome]) -> bool:
    ok = len(outcomes) == len(_ACTS) and all(outcome.ok for outcome in outcomes)
    console.print(Rule("demo " + ("[green]done[/green]" if ok else "[red]stopped[/red]")))
    for outcome in outcomes:
        mark = "[green]✓[/green]" if outcome.ok else "[red]✗[/red]"
        console.print(
            f"  {mark} {outcome.act:<8} {escape(outcome.run_id):<26} {escape(outcome.summary)}"
        )
    return ok


def _console_address(console: Console, local: LocalCloudSettings) -> None:
    """The demo's last line: the web console's address (the local cloud serves it unless
    its ``console_port`` is 0: then the command that serves it). The demo's runs stay in
    the local cloud after it exits."""
    if local.console_url:
        console.print(
            f"web console: {local.console_url}  (served by the local cloud until "
            "[bold]make down[/bold]; runs, alerts and models, on 127.0.0.1 only)",
            soft_wrap=True,
        )
        return
    console.print(
        f"web console: {CONSOLE_ADDRESS}  (serve it with [bold].venv/bin/cascade console"
        "[/bold]; runs, alerts and models, on 127.0.0.1 only)",
        soft_wrap=True,
    )


def run_demo(local: LocalCloudSettings, *, rows: int, console: Console) -> int:
    """The process exit code: 0 when every act ended as expected; the console's address
    is the last thing printed either way (it shows what stopped a failed act)."""
    if not _start_local_cloud(local, console):
        return 1
    client = LocalCloudClient(local.runtime_settings())
    _ensure_sample_config(client, console)
    session = DemoSession(
        client=client,
        console=console,
        follower=RunFollower(client, console, timeout_s=RUN_TIMEOUT_S),
        dataset=DEMO_DATASET,
        rows=rows,
        stamp=f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
        gcs_root=local.state_dir / "gcs",
    )
    outcomes = _play(session)
    if outcomes and outcomes[0].ok:
        _prediction(local, session)
    _where_next(console, outcomes)
    ok = _summary(console, outcomes)
    _console_address(console, local)
    return 0 if ok else 1
