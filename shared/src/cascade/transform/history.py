"""A dataset's transform history has a lifecycle: what no reader needs is pruned.

Every finished transform adds a pointer (``datasets/<d>/transforms/``) and every
transform step records a decision (``datasets/<d>/transform_decisions/``), create-only
(catalog, coalesce): nothing is rewritten per file, so nothing is ever removed either, and
a dataset fed by a stream gathers one of each per file. The readers need little of it:

- ``latest_transform`` reads the first pointer of the sorted listing (best first);
  pointers past the first ``POINTERS_KEPT`` are never read again (a newer pointer only
  ever sorts before them or among the kept).
- ``covering_run`` reads the decisions after a run's own, and ``hand_over_open`` the oldest
  before a dataset's first transform ends: a step older than ``DECISIONS_KEPT_FOR`` is
  long past its deliveries and the reconcile sweep's resumption. If one came back anyway,
  it writes its decision again (create-only) and either hands over to a later snapshot
  that holds its files or materialises: never a file left out.

The reconcile sweep lists each dataset's objects once and deletes what
``prunable_history`` names. Only direct children named as this code names them are
candidates: an object anyone else put there is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from cascade.transform.catalog import pointers_prefix
from cascade.transform.coalesce import decision_time, decisions_prefix

__all__ = ["DECISIONS_KEPT_FOR", "POINTERS_KEPT", "prunable_history"]

POINTERS_KEPT = 20
"""Pointers kept per dataset (the best first): the latest and a short history."""
DECISIONS_KEPT_FOR = timedelta(days=1)
"""How long a decision is kept after its snapshot was taken."""
_POINTER = re.compile(r"[0-9]{10}-[0-9]{14}-[^/]+\.json")
_DECISION = re.compile(r"[0-9]{14}-[^/]+\.json")


def _children(names: Iterable[str], prefix: str, pattern: re.Pattern[str]) -> list[str]:
    """The names directly under ``prefix`` whose last part ``pattern`` matches, sorted."""
    return sorted(
        name for name in names if name.startswith(prefix) and pattern.fullmatch(name[len(prefix) :])
    )


def prunable_history(names: Iterable[str], dataset: str, now: datetime) -> list[str]:
    """Of ``names`` (a listing of the dataset's objects), the pointers past the first
    ``POINTERS_KEPT`` and the decisions whose snapshot is older than
    ``DECISIONS_KEPT_FOR``; sorted."""
    listed = list(names)
    pointers = _children(listed, pointers_prefix(dataset), _POINTER)[POINTERS_KEPT:]
    cutoff = now - DECISIONS_KEPT_FOR
    decisions = [
        name
        for name in _children(listed, decisions_prefix(dataset), _DECISION)
        if (taken := decision_time(name)) is not None and taken < cutoff
    ]
    return sorted(pointers + decisions)
