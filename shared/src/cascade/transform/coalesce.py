"""Bursts of files: a transform whose snapshot a later transform covers is not redone.

Each accepted file's run transforms the dataset's whole snapshot (every accepted file).
When files arrive faster than a transform takes, as from a stream or many producers,
each run would re-read every file of the dataset: work that grows with the square of
the burst. Instead each run, once its snapshot is stored, records a **decision**,
create-only, named by its snapshot's time so that names sort by when snapshots were
taken::

    datasets/<d>/transform_decisions/<snapshot ms>-<run_id>.json

and looks at the decisions recorded after its own. When one of them (run S) has a
snapshot holding every file of this run's snapshot at the same generation, this run
hands its file to S and does not materialise: S's transform trains on it.

A run also asks again while it materialises (at most once a second, between files): a
covering decision recorded meanwhile stops it, its partial shards are deleted, and it
hands over. So in a steady stream each transform does at most about one inter-arrival
time of work before the next covers it, instead of re-reading every file each time.

So that a stream that never pauses still gets transforms, a run hands over only while the
dataset's latest transform (or, before the first, its oldest decision) is younger than
``transform.handover_within_s`` (default 600 s): past it, every run materialises until
one ends and becomes the latest.

Why nothing is lost:

- A run defers only to a later decision whose snapshot is a superset of its own, so
  deferral is transitive and acyclic (names strictly increase along it); the run whose
  decision has no covering successor materialises, and its snapshot holds every file of
  the runs that deferred to it, directly or not.
- The check compares the stored snapshots' files, not times: clock skew between
  instances can only cost a transform that was not needed (both materialise), never a
  file left out.
- A decision is written after its snapshot is stored and is keyed by the snapshot's own
  time, so a redelivered step finds the same decision and decides the same way or
  materialises; the run it deferred to is named on its record (``coalesced into``).
- A run's outcome says which run it deferred to; that run's own record carries the
  transform, the train request and any failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from cascade.core.paths import DatasetPaths
from cascade.core.store import ArtifactStore
from cascade.transform.catalog import latest_transform, snapshot_name
from cascade.transform.snapshot import DataSnapshot

__all__ = [
    "CANDIDATES_READ",
    "CHECK_EVERY_S",
    "DECISIONS_READ",
    "HandOverWatch",
    "TransformDecision",
    "covering_run",
    "decision_name",
    "decision_time",
    "decisions_prefix",
    "hand_over_open",
    "record_decision",
]

CANDIDATES_READ = 3
"""Later snapshots read (newest first): the newest usually holds the most files."""
DECISIONS_READ = 12
"""Later decisions read (newest first), so that a transform's reads stay bounded however
long the burst."""
CHECK_EVERY_S = 1.0
"""How often a materialising run asks whether a later decision covers it."""
_LISTED = 1000
"""Later decisions listed (one page): past it, the newest of the listed are read."""
_MILLIS_DIGITS = 14
"""A decision name's leading digits: its snapshot's time in milliseconds, zero-padded."""


class TransformDecision(BaseModel):
    """What a transform decided to cover: its run and the size of its snapshot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    files: int = Field(ge=0)


def decisions_prefix(dataset: str) -> str:
    return f"{DatasetPaths(dataset).root}/transform_decisions/"


def decision_name(dataset: str, snapshot: DataSnapshot) -> str:
    millis = int(snapshot.created_at.timestamp() * 1000)
    return f"{decisions_prefix(dataset)}{millis:0{_MILLIS_DIGITS}d}-{snapshot.run_id}.json"


def record_decision(store: ArtifactStore, snapshot: DataSnapshot) -> str:
    """Record (create-only; a repeat writes nothing) that ``snapshot``'s run transforms
    its files; the decision's name."""
    name = decision_name(snapshot.dataset, snapshot)
    decision = TransformDecision(run_id=snapshot.run_id, files=len(snapshot.files))
    store.create(name, decision.model_dump_json().encode())
    return name


def _pinned(snapshot: DataSnapshot) -> set[tuple[str, int]]:
    return {(file.uri, file.generation) for file in snapshot.files}


def covering_run(store: ArtifactStore, snapshot: DataSnapshot) -> str | None:
    """A run whose decision came after ``snapshot``'s and whose snapshot holds all of its
    files (the newest such among the last few decisions); None: this run materialises."""
    own = decision_name(snapshot.dataset, snapshot)
    later = [
        name
        for name in store.list_names(
            decisions_prefix(snapshot.dataset), start_offset=own, max_results=_LISTED
        )
        if name > own
    ]
    needed = _pinned(snapshot)
    read = 0
    for name in reversed(later[-DECISIONS_READ:]):
        if (candidate := _candidate(store, name, len(needed))) is None:
            continue
        try:
            stored = store.read_model(snapshot_name(candidate), DataSnapshot)
        except ValueError:
            stored = None
        if stored is not None and needed <= _pinned(stored[0]):
            return candidate
        read += 1
        if read == CANDIDATES_READ:
            break
    return None


def _candidate(store: ArtifactStore, name: str, files: int) -> str | None:
    """The run of decision ``name`` when its snapshot can hold ``files`` files."""
    try:
        found = store.read_model(name, TransformDecision)
    except ValueError:  # not a decision this code wrote: never a reason to skip work
        return None
    if found is None or found[0].files < files:
        return None
    return found[0].run_id


def decision_time(name: str) -> datetime | None:
    """The snapshot time a decision's name carries; None for a name this code did not
    write (no ``<14 ASCII digits>-`` at the start of its last segment)."""
    stem = name.rsplit("/", 1)[-1]
    millis, dash, _ = stem.partition("-")
    if not dash or len(millis) != _MILLIS_DIGITS or not (millis.isascii() and millis.isdigit()):
        return None
    return datetime.fromtimestamp(int(millis) / 1000, tz=UTC)


def hand_over_open(store: ArtifactStore, dataset: str, now: datetime, within_s: int) -> bool:
    """Whether runs of ``dataset`` may hand over now: the latest transform (before the
    first, the oldest decision) is younger than ``within_s`` seconds."""
    if within_s <= 0:
        return False
    latest = latest_transform(store, dataset)
    since = latest.created_at if latest is not None else None
    if since is None:
        oldest = next(iter(store.list_names(decisions_prefix(dataset), max_results=1)), None)
        since = decision_time(oldest) if oldest is not None else None
    return since is None or now - since < timedelta(seconds=within_s)


class HandOverWatch:
    """``stop`` for a materialising split: True once a later decision covers
    ``snapshot`` (``covering`` then names its run); asks at most every ``every_s``."""

    def __init__(
        self,
        store: ArtifactStore,
        snapshot: DataSnapshot,
        *,
        every_s: float = CHECK_EVERY_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._snapshot = snapshot
        self._every_s = every_s
        self._monotonic = monotonic
        self._asked = monotonic()
        self.covering: str | None = None

    def __call__(self) -> bool:
        now = self._monotonic()
        if now - self._asked < self._every_s:
            return False
        self._asked = now
        self.covering = covering_run(self._store, self._snapshot)
        return self.covering is not None
