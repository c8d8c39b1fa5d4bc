"""Load precomputed answers again from BigQuery after the store lost them.

The batch predictions in BigQuery are the record; the precomputed store (Cloud Bigtable,
``cascade.serving.precomputed``) is a copy for fast lookups. Locally the Bigtable
emulator keeps its data in memory only, so a restart of it (or ``cascade down`` and
``up``) loses every answer, and a static dataset would answer 404 for every key. The
supervisor calls ``reload_precomputed`` after it (re)provisions the emulator's table.

What is loaded:

- every dataset with ``models/<dataset>/serving.json`` whose ``mode`` is ``static`` or
  ``hybrid`` (a dynamic dataset never reads the store: nothing is loaded for it);
- every *deployed* version of it (state ``canary``, ``serving`` or ``standby``), with
  traffic or without: the model server loads all of them, answers any of them on the
  version route, and a rollback moves traffic to a standby version without a new batch.
  Retired and rolled-back versions are not loaded (the server no longer serves them);
- from that version's predictions table ``<project>.<predictions dataset>.<dataset>_v<version>``
  (``Settings.warehouse_dataset("predictions")``, the table ``cascade.batch.scoring``
  writes). A version without a table (never batch-scored) is skipped, not an error;
- one answer per key: the newest row by ``predicted_at`` (then the greatest ``batch_id``,
  so a tie is decided the same way every time), as batches repeat keys across runs and
  the store keeps only the last answer written for a key.

Each answer is written as the batch's sink writes it: ``(key, prediction)``, the
prediction being the model's outputs without the key (the ``prediction`` JSON column).
A row whose key the store cannot hold or whose prediction is not a JSON object is
skipped and counted in the log (the batch never writes such rows; they mean a table
edited by hand). A version that fails to load (BigQuery or the store unreachable) does not
stop the others: ``ReloadError`` names the failures after every version was tried.

Not covered: a batch that writes answers for a version *while* the reload runs may have
an answer overwritten by the older one the reload read before the batch's row existed
(the supervisor reloads before the job service starts, and after a restart of the store,
when a running batch's writes to it were failing anyway).

This module does not import TensorFlow (the supervisor runs it); the table names come
from ``cascade.batch.tables``, which the scoring task uses too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import google.cloud.bigquery as bigquery
from google.api_core import exceptions as gexc

from cascade.batch.tables import output_tables
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore
from cascade.serving.precomputed import PrecomputedStore, key_problem
from cascade.serving.state import ServingState, serving_states

__all__ = [
    "PREDICTIONS_WAREHOUSE",
    "RELOAD_BATCH",
    "ReloadError",
    "newest_answers_query",
    "predictions_table",
    "reload_precomputed",
    "reload_version",
]

_log = logging.getLogger("cascade.batch.reload")

PREDICTIONS_WAREHOUSE = "predictions"
"""The topology's warehouse dataset of batch predictions (``cascade.batch.task``'s)."""
RELOAD_BATCH = 1000
"""Answers per ``store.write`` call (and rows per page read from BigQuery)."""
RELOADED_MODES = frozenset({"static", "hybrid"})

Loaded = dict[tuple[str, str], int]


class ReloadError(RuntimeError):
    """Some versions could not be loaded; ``loaded`` holds what was."""

    def __init__(self, failures: dict[tuple[str, str], str], loaded: Loaded) -> None:
        self.failures = failures
        self.loaded = loaded
        shown = "; ".join(f"{d} v{v}: {why}" for (d, v), why in list(failures.items())[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(
            f"{len(failures)} version(s) of precomputed answers were not reloaded: {shown}{more}"
        )


def predictions_table(settings: Settings, dataset: str, version: str) -> str:
    """The predictions table of one model version (``tables.output_tables``)."""
    return output_tables(
        settings.project,
        dataset,
        version,
        bq_dataset=settings.warehouse_dataset(PREDICTIONS_WAREHOUSE),
    )[0]


def newest_answers_query(table: str) -> str:
    """One row per key, the newest (``table`` is a checked ``table_id``, never input)."""
    return (
        f"SELECT key, prediction FROM `{table}` "  # noqa: S608 - a checked table_id
        "QUALIFY ROW_NUMBER() OVER (PARTITION BY key ORDER BY predicted_at DESC, "
        "batch_id DESC) = 1"
    )


def _served_datasets(artifacts: ArtifactStore) -> Iterator[tuple[str, ServingState]]:
    """(dataset, serving state) of every dataset served static or hybrid."""
    for dataset, state in serving_states(artifacts):
        if state.mode in RELOADED_MODES:
            yield dataset, state


def _prediction(value: Any) -> dict[str, Any] | None:
    """The ``prediction`` column as an object (the client returns JSON parsed or as text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def _answers(
    client: bigquery.Client, table: str, skipped: dict[str, int]
) -> Iterator[tuple[str, dict[str, Any]]]:
    rows = client.query(newest_answers_query(table)).result(page_size=RELOAD_BATCH)
    for row in rows:
        key = row["key"]
        if key_problem(key) is not None:
            skipped["bad_key"] += 1
            continue
        prediction = _prediction(row["prediction"])
        if prediction is None:
            skipped["bad_prediction"] += 1
            continue
        yield key, prediction


def reload_version(
    settings: Settings,
    store: PrecomputedStore,
    client: bigquery.Client,
    dataset: str,
    version: str,
) -> int | None:
    """Answers written for one version; None when it has no predictions table."""
    table = predictions_table(settings, dataset, version)
    try:
        client.get_table(table)
    except gexc.NotFound:
        _log.info("%s v%s: no predictions table %s; nothing to reload", dataset, version, table)
        return None
    skipped = {"bad_key": 0, "bad_prediction": 0}
    written = 0
    batch: list[tuple[str, dict[str, Any]]] = []
    for answer in _answers(client, table, skipped):
        batch.append(answer)
        if len(batch) == RELOAD_BATCH:
            written += store.write(dataset, version, batch)
            batch = []
    if batch:
        written += store.write(dataset, version, batch)
    if skipped["bad_key"] or skipped["bad_prediction"]:
        _log.warning(
            "%s v%s: skipped %d row(s) with a key the store cannot hold and %d with a "
            "prediction that is not a JSON object, in %s",
            dataset,
            version,
            skipped["bad_key"],
            skipped["bad_prediction"],
            table,
        )
    return written


def reload_precomputed(
    settings: Settings,
    store: PrecomputedStore,
    artifacts: ArtifactStore,
    bigquery_client: bigquery.Client,
) -> Loaded:
    """Write every static or hybrid dataset's deployed versions' batch answers from
    BigQuery into ``store``. Returns the answers written per ``(dataset, version)``; a
    version without a predictions table is absent. ``ReloadError`` when some version
    failed (after all were tried)."""
    loaded: Loaded = {}
    failures: dict[tuple[str, str], str] = {}
    for dataset, state in _served_datasets(artifacts):
        for deployed in state.deployed:
            scope = (dataset, deployed.version)
            try:
                written = reload_version(
                    settings, store, bigquery_client, dataset, deployed.version
                )
            except Exception as error:  # noqa: BLE001 - one version's failure is not all's
                _log.error("%s v%s: reloading precomputed answers failed: %s", *scope, error)
                failures[scope] = f"{type(error).__name__}: {error}"
                continue
            if written is not None:
                loaded[scope] = written
                _log.info("%s v%s: reloaded %d precomputed answer(s)", *scope, written)
    if failures:
        raise ReloadError(failures, loaded)
    return loaded
