"""``cascade quarantine list | show | release | discard`` (added to ``cascade.cli.main``).

The review of files validation quarantined (docs/validation.md, "Quarantine review"):
``release`` re-validates the file with its blocking findings acknowledged and continues
the chain when it is accepted; ``discard`` deletes the quarantine copy. Both are audited
(who, why, when) and allowed once per run. They call the same step code as the cloud's
``review-http`` function, on the local cloud by default; ``--from-env`` uses the
``CASCADE_*`` settings of a real project.
"""

from __future__ import annotations

import getpass
import socket
import sys

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade.core.context import StepContext
from cascade.core.errors import CascadeError
from cascade.core.settings import Settings, load_settings
from cascade.localcloud.local_settings import LocalCloudSettings
from cascade.steps.quarantine_review import (
    QuarantinedRun,
    discard,
    quarantined_run,
    quarantined_runs,
    read_review,
    release,
)

__all__ = ["quarantine"]

console = Console()


def _context(from_env: bool) -> StepContext:
    settings: Settings = (
        load_settings() if from_env else LocalCloudSettings().absolute().runtime_settings()
    )
    return StepContext.from_settings(settings)


def _fail(error: Exception) -> None:
    console.print(f"[red]error:[/red] {escape(str(error))}")
    sys.exit(1)


def _actor(actor: str | None) -> str:
    return actor or f"{getpass.getuser()}@{socket.gethostname()}"


def _findings(found: QuarantinedRun) -> str:
    return ", ".join(f"{f.check} in {f.feature or 'dataset'}" for f in found.blocking)


def _state(ctx: StepContext, found: QuarantinedRun) -> str:
    review = read_review(ctx, found.run.dataset, found.run.run_id)
    if review is None:
        return "awaiting review"
    then = f" (run {review.release_run_id})" if review.release_run_id else ""
    return f"{review.done} by {review.actor}{then}"


_FROM_ENV = click.option("--from-env", is_flag=True, help="Use CASCADE_* settings (a project).")
_REASON = click.option("--reason", required=True, help="Why (recorded for audit).")
_ACTOR = click.option("--actor", default=None, help="Who reviews it [default: user@host].")


@click.group()
def quarantine() -> None:
    """Review files validation quarantined: list, show, release or discard them."""


@quarantine.command("list")
@click.argument("dataset", required=False)
@_FROM_ENV
def list_quarantined(dataset: str | None, from_env: bool) -> None:
    """Quarantined runs (of DATASET, or of every dataset) and their review state."""
    ctx = _context(from_env)
    table = Table(title="quarantined files")
    for column in ("run", "file", "quarantined", "blocking findings", "review"):
        table.add_column(column)
    try:
        for found in sorted(quarantined_runs(ctx, dataset), key=lambda q: q.quarantined_at):
            table.add_row(
                found.run.run_id,
                escape(found.source.uri),
                found.quarantined_at.isoformat(timespec="seconds"),
                escape(_findings(found)),
                escape(_state(ctx, found)),
            )
    except CascadeError as error:
        _fail(error)
        return
    console.print(table)


@quarantine.command("show")
@click.argument("run_id")
@_FROM_ENV
def show(run_id: str, from_env: bool) -> None:
    """RUN_ID's findings, quarantine and review."""
    ctx = _context(from_env)
    try:
        found = quarantined_run(ctx, run_id)
    except CascadeError as error:
        _fail(error)
        return
    console.print(f"run {run_id} ({found.run.dataset}): {escape(found.source.uri)}")
    console.print(f"quarantine: {escape(found.quarantine)}")
    console.print(f"quarantined at {found.quarantined_at.isoformat(timespec='seconds')}")
    console.print("blocking findings:")
    for finding in found.errors:
        console.print(f"  - {escape(finding)}")
    review = read_review(ctx, found.run.dataset, run_id)
    if review is None:
        console.print("review: none yet (cascade quarantine release|discard RUN --reason ...)")
        return
    console.print(
        f"review: {review.done} by {escape(review.actor)} at "
        f"{review.at.isoformat(timespec='seconds')} via {review.via}: {escape(review.reason)}"
    )
    if review.release_run_id:
        console.print(
            f"release run: {review.release_run_id} (read {escape(review.read_from or '')})"
        )
    for deleted in review.deleted:
        console.print(f"deleted: {escape(deleted)}")


@quarantine.command("release")
@click.argument("run_id")
@_REASON
@_ACTOR
@_FROM_ENV
def release_command(run_id: str, reason: str, actor: str | None, from_env: bool) -> None:
    """Release RUN_ID: re-validate its file with its findings acknowledged (audited)."""
    ctx = _context(from_env)
    try:
        released = release(ctx, run_id, actor=_actor(actor), reason=reason, via="cli")
    except CascadeError as error:
        _fail(error)
        return
    console.print(
        f"{run_id}: released; run {released.run.run_id} is {released.run.state}: "
        f"{escape(released.summary)}"
    )
    if released.run.state == "rejected":
        sys.exit(2)


@quarantine.command("discard")
@click.argument("run_id")
@_REASON
@_ACTOR
@_FROM_ENV
def discard_command(run_id: str, reason: str, actor: str | None, from_env: bool) -> None:
    """Discard RUN_ID: record why and delete its quarantine copy (audited)."""
    ctx = _context(from_env)
    try:
        review = discard(ctx, run_id, actor=_actor(actor), reason=reason, via="cli")
    except CascadeError as error:
        _fail(error)
        return
    console.print(f"{run_id}: discarded; deleted {escape(', '.join(review.deleted))}")
