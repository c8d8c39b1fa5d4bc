"""The run index: create-only objects per run, named so a listing is newest first.

Run ids are hashes, so ``runs/`` lists in no useful order, and listing it lists every
artifact of every run. The index keeps, for each run, two small objects::

    index/runs/all/<inverted created time>-<run id>
    index/runs/datasets/<dataset>/<inverted created time>-<run id>

and two more for each state the run has been recorded in (``running`` when it is
created, then the state its end wrote)::

    index/run-states/<state>/all/<inverted created time>-<run id>
    index/run-states/<state>/datasets/<dataset>/<inverted created time>-<run id>

The inverted time (``INVERTED_TIME_BASE`` minus microseconds since the epoch, 16 digits)
makes Cloud Storage's lexicographic listing newest first. Each entry is written once,
create-only, when the run is created (``record_run_created``), so no object is written
twice (Cloud Storage allows about one write a second per object name): a second call
for the same run costs one refused precondition and changes nothing. A page is one
listing request with ``max_results``; its page token is the name of the next entry,
handed back to Cloud Storage as ``startOffset``.

A state's entries are never moved or deleted: a run that ends gets a new, create-only
entry under its end state (``record_run_state``, by whoever writes the end into run.json)
and keeps its ``running`` one, so each name is still written once. A state entry is
therefore a hint that the run was once in that state: a page under a state filter lists
that state's entries and keeps the runs whose run.json (read for the row anyway) is in
the state now, so an entry left behind (``running`` after the end; ``rejected`` after a
force-bless sent the run on) costs one read and is never shown. Only ``running`` collects
many such entries (every run has one): there the runs with a ``succeeded`` or ``failed``
entry, states nothing leaves, are found by one listing of each over the span of the
entries examined and skipped unread; its pages stop after ``scan_limit`` entries and
hand back a token to go on, as every filtered page does. The trigger kind is part of the
run id (``<dataset>-r<hex>`` for a request), so a filter by kind reads no run record.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Literal, Protocol, get_args

import google.cloud.storage as storage

from cascade.core.errors import BadRequestError, transient_errors
from cascade.core.paths import RunPaths, check_dataset_name
from cascade.core.runs import RunRecord, RunState, check_system_run_id
from cascade.core.store import ArtifactStore

__all__ = [
    "INDEX_PREFIX",
    "INVERTED_TIME_BASE",
    "MAX_PAGE_SIZE",
    "READ_WORKERS",
    "STATE_CHUNK",
    "STATE_INDEX_PREFIX",
    "TERMINAL_STATES",
    "BucketLister",
    "IndexLister",
    "IndexPage",
    "IndexedRun",
    "RunIndex",
    "StoreLister",
    "TriggerKind",
    "backfill_run_index",
    "ensure_run_indexed",
    "entry_names",
    "inverted_time_key",
    "record_run_created",
    "record_run_state",
    "state_entry_names",
    "trigger_kind_of",
]

INDEX_PREFIX = "index/runs/"
STATE_INDEX_PREFIX = "index/run-states/"
"""Outside ``INDEX_PREFIX``: a listing of ``index/runs/all/`` never meets a state entry."""
INVERTED_TIME_BASE = 10**16 - 1
"""Microseconds since the epoch stay below this until the year 2286."""
MAX_PAGE_SIZE = 200
STATE_CHUNK = 50
"""Entries listed at a time under a filter that skips many (a trigger kind, ``running``,
whose entries outlive the state), and examined at a time under ``running`` (their
records read concurrently)."""
TERMINAL_STATES = ("succeeded", "failed")
"""End states a run never leaves: under ``running``, a run with one of their entries is
skipped without reading its record."""
READ_WORKERS = 10
"""Concurrent run.json reads: the storage client's connection pool holds 10."""

TriggerKind = Literal["object", "request"]


def trigger_kind_of(run_id: str) -> TriggerKind:
    """A request's run id has an ``r`` before its hex digits (``run_id_for_request``)."""
    return "request" if run_id.rsplit("-", 1)[-1].startswith("r") else "object"


def _scope_prefix(dataset: str | None, state: str | None = None) -> str:
    root = INDEX_PREFIX if state is None else f"{STATE_INDEX_PREFIX}{_check_state(state)}/"
    if dataset is None:
        return f"{root}all/"
    return f"{root}datasets/{check_dataset_name(dataset)}/"


def _check_state(state: str) -> str:
    """A run state (it names index objects: nothing else may)."""
    if state not in get_args(RunState):
        raise BadRequestError(f"state: one of {', '.join(get_args(RunState))}")
    return state


def inverted_time_key(moment: datetime) -> str:
    """16 digits that sort newest first: ``INVERTED_TIME_BASE`` minus microseconds since
    the epoch (a naive time is UTC). BadRequestError outside 1970 to 2286."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    micros = int(aware.timestamp() * 1_000_000)
    if not 0 <= micros <= INVERTED_TIME_BASE:
        raise BadRequestError(f"{moment.isoformat()} is outside the index")
    return f"{INVERTED_TIME_BASE - micros:016d}"


def _leaf(record: RunRecord) -> str:
    run_id = check_system_run_id(record.run_id, record.dataset)
    return f"{inverted_time_key(record.created_at)}-{run_id}"


def entry_names(record: RunRecord) -> tuple[str, str]:
    """The run's two index entries: under ``all/`` and under its dataset."""
    leaf = _leaf(record)
    return f"{_scope_prefix(None)}{leaf}", f"{_scope_prefix(record.dataset)}{leaf}"


def state_entry_names(record: RunRecord, state: str | None = None) -> tuple[str, str]:
    """The run's two entries for ``state`` (its recorded state by default): under the
    state's ``all/`` and under the state's dataset; sorted by creation time, as the run's
    other entries, so a state's pages are newest first as the unfiltered list is."""
    chosen = record.state if state is None else state
    leaf = _leaf(record)
    return (
        f"{_scope_prefix(None, chosen)}{leaf}",
        f"{_scope_prefix(record.dataset, chosen)}{leaf}",
    )


def _entry_body(record: RunRecord) -> bytes:
    return json.dumps(
        {
            "run_id": record.run_id,
            "dataset": record.dataset,
            "created_at": record.created_at.isoformat(),
            "trigger": record.trigger.kind,
        },
        sort_keys=True,
    ).encode()


def record_run_state(store: ArtifactStore, record: RunRecord) -> bool:
    """Write the entries of the state ``record`` (run.json as written) is in, create-only;
    whether any was new. For whoever writes a run's end into run.json, after that write:
    the end is written once, so is its entry, and a repeat (a redelivery, a second
    ending step) is one refused precondition per entry. The dataset entry is last."""
    written = [store.create(name, _entry_body(record)) for name in state_entry_names(record)]
    return any(info is not None for info in written)


def record_run_created(store: ArtifactStore, record: RunRecord) -> None:
    """Write ``record``'s index entries, create-only (idempotent: a run's entries are
    written once; calling again, e.g. on a redelivered event, changes nothing): its
    state's entries (``running`` for a new run), then ``all/``, then its dataset's entry,
    whose presence therefore means all of them exist."""
    record_run_state(store, record)
    for name in entry_names(record):
        store.create(name, _entry_body(record))


def ensure_run_indexed(store: ArtifactStore, record: RunRecord) -> bool:
    """Index ``record`` (run.json as stored) unless it is; whether entries had to be
    written. One metadata read for a running run that is indexed: for a caller that
    found the run already created (a redelivery after a crash between run.json and its
    entries heals the index here). For a run that has ended, one more, for its end
    state's dataset entry: a redelivery after a crash between the end's run.json write
    and its entries heals those too."""
    if store.stat(entry_names(record)[1]) is None:
        record_run_created(store, record)
        return True
    if record.state == "running" or store.stat(state_entry_names(record)[1]) is not None:
        return False
    return record_run_state(store, record)


def backfill_run_index(store: ArtifactStore) -> int:
    """Index every run that has a record (runs made before the index existed, or before
    it had state entries: each gets its recorded state's), and every dead letter (the
    alerts page's newest-first index, ``cascade.core.dead_letter_index``); the number of
    run records seen. A one-off full listing of ``runs/`` and of ``dead-letters/``,
    never on a page view; idempotent (create-only entries)."""
    from cascade.core.dead_letter_index import backfill_dead_letter_index  # imports this

    backfill_dead_letter_index(store)
    seen = 0
    for name in store.list_names("runs/"):
        parts = name.split("/")
        if len(parts) != 3 or parts[2] != "run.json":
            continue
        try:
            found = store.read_model(name, RunRecord)
        except ValueError:  # unreadable: nothing to index it by
            continue
        if found is None:
            continue
        record = found[0]
        try:
            record_run_created(store, record)
        except BadRequestError:
            continue  # not a run id the system derives: nothing a page could link to
        seen += 1
    return seen


class IndexLister(Protocol):
    """Lists object names under ``prefix`` from ``start_offset`` on (inclusive), in
    lexicographic order, fetching ``page_size`` names per request, lazily."""

    def list_from(self, prefix: str, start_offset: str | None, page_size: int) -> Iterator[str]:
        """Names ``>= start_offset`` under ``prefix``, in order."""
        ...


class BucketLister:
    """``IndexLister`` over Cloud Storage: ``objects.list`` with ``prefix``,
    ``startOffset`` and ``maxResults``; the client fetches the next page only when read."""

    def __init__(self, client: storage.Client, bucket_name: str) -> None:
        self._client = client
        self._bucket_name = bucket_name

    def list_from(self, prefix: str, start_offset: str | None, page_size: int) -> Iterator[str]:
        with transient_errors(f"listing gs://{self._bucket_name}/{prefix}"):
            for blob in self._client.list_blobs(
                self._bucket_name, prefix=prefix, start_offset=start_offset, page_size=page_size
            ):
                yield str(blob.name)


class StoreLister:
    """``IndexLister`` over any ``ArtifactStore`` (the in-memory fake): the store's own
    listing, skipped up to ``start_offset``."""

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store

    def list_from(self, prefix: str, start_offset: str | None, page_size: int) -> Iterator[str]:
        for name in self._store.list_names(prefix):
            if start_offset is None or name >= start_offset:
                yield name


@dataclass(frozen=True)
class IndexedRun:
    """One row of a page: the run id, its dataset, and its run-level record (run.json
    alone; None when it is gone or unreadable: the index outlives a deleted run)."""

    run_id: str
    dataset: str
    record: RunRecord | None


@dataclass(frozen=True)
class IndexPage:
    runs: list[IndexedRun]
    next_token: str | None
    """Opaque; hand it back to ``RunIndex.page`` for the next page (None: the last)."""
    scanned: int
    """Index entries examined for this page (filters skip some)."""


def _encode_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _decode_token(token: str, prefix: str) -> str:
    if len(token) > 400:
        raise BadRequestError("invalid page token")
    try:
        name = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise BadRequestError("invalid page token") from error
    if not name.startswith(prefix):
        raise BadRequestError("the page token belongs to another listing")
    return name


def _run_id_of(name: str, prefix: str) -> str | None:
    leaf = name[len(prefix) :]
    sort_key, _, run_id = leaf.partition("-")
    if len(sort_key) != 16 or not sort_key.isdigit():
        return None
    try:
        return check_system_run_id(run_id)
    except BadRequestError:
        return None


class RunIndex:
    """Pages of runs, newest first, from the index. Each listed run's ``run.json`` is read
    once (the run-level record: state, trigger, error; not its steps' objects), up to
    ``READ_WORKERS`` at a time."""

    def __init__(self, store: ArtifactStore, lister: IndexLister, *, scan_limit: int = 200) -> None:
        self._store = store
        self._lister = lister
        self.scan_limit = scan_limit
        self._readers = ThreadPoolExecutor(READ_WORKERS, thread_name_prefix="run-index")

    def page(
        self,
        *,
        size: int,
        dataset: str | None = None,
        trigger: TriggerKind | None = None,
        state: str | None = None,
        token: str | None = None,
    ) -> IndexPage:
        """Up to ``size`` runs newest first, filtered; BadRequestError for a bad dataset
        name, state or token. A state filter lists that state's entries (one listing,
        each listed run's record read to confirm the state); at most ``scan_limit``
        entries are examined, so a page may be short, with a token to go on."""
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise BadRequestError(f"page size must be 1 to {MAX_PAGE_SIZE}")
        prefix = _scope_prefix(dataset, state)
        start = None if token is None else _decode_token(token, prefix)
        sparse = trigger is not None or state == "running"  # many listed entries skipped
        names = self._lister.list_from(prefix, start, STATE_CHUNK if sparse else size + 1)
        unread: list[str] = []  # listed, not yet examined
        rows: list[IndexedRun] = []
        scanned = 0
        while len(rows) < size and scanned < self.scan_limit:
            wanted = min(
                STATE_CHUNK if state == "running" else size - len(rows),
                self.scan_limit - scanned,
            )
            chunk = unread[:wanted] + list(islice(names, max(0, wanted - len(unread))))
            unread = unread[len(chunk) :]
            if not chunk:
                return IndexPage(rows, None, scanned)
            ended = self._ended(chunk, prefix, dataset) if state == "running" else set()
            examined = self._rows(chunk, prefix, trigger, state, size - len(rows), ended)
            scanned += examined.count
            rows += examined.rows
            unread = chunk[examined.count :] + unread
        following = unread[0] if unread else next(names, None)
        return IndexPage(rows, None if following is None else _encode_token(following), scanned)

    def _rows(
        self,
        chunk: list[str],
        prefix: str,
        trigger: TriggerKind | None,
        state: str | None,
        wanted: int,
        ended: set[str],
    ) -> _Examined:
        """The rows among ``chunk`` (records read concurrently), stopping at ``wanted``;
        ``count``: how many names of the chunk that took. Runs in ``ended`` are skipped
        unread."""
        run_ids = [_run_id_of(name, prefix) for name in chunk]
        run_ids = [None if run_id in ended else run_id for run_id in run_ids]
        if trigger is not None:
            run_ids = [
                i if i is not None and trigger_kind_of(i) == trigger else None for i in run_ids
            ]
        records = list(self._readers.map(self._record, run_ids))
        rows: list[IndexedRun] = []
        for position, (run_id, record) in enumerate(zip(run_ids, records, strict=True)):
            if run_id is None or (state is not None and (record is None or record.state != state)):
                continue
            rows.append(IndexedRun(run_id, run_id.rsplit("-", 1)[0], record))
            if len(rows) == wanted:
                return _Examined(rows, position + 1)
        return _Examined(rows, len(chunk))

    def _ended(self, chunk: list[str], prefix: str, dataset: str | None) -> set[str]:
        """The runs among ``chunk`` (``running`` entries, in order) that have a
        ``succeeded`` or ``failed`` entry: states nothing leaves (a force-bless revives
        only a rejected run), so their ``running`` entry is one left behind. One listing
        per end state over the chunk's span of creation times (an entry's name is its
        run's creation time and id in every state), the two concurrently: cheaper than
        reading each run.json, which the runs left over still get."""
        first, last = chunk[0][len(prefix) :], chunk[-1][len(prefix) :]

        def listed(end_prefix: str) -> set[str]:
            found: set[str] = set()
            for name in self._lister.list_from(end_prefix, end_prefix + first, len(chunk) + 1):
                if name[len(end_prefix) :] > last:
                    break
                run_id = _run_id_of(name, end_prefix)
                if run_id is not None:
                    found.add(run_id)
            return found

        ends = [_scope_prefix(dataset, end) for end in TERMINAL_STATES]
        return set().union(*self._readers.map(listed, ends))

    def _record(self, run_id: str | None) -> RunRecord | None:
        if run_id is None:
            return None
        try:
            found = self._store.read_model(RunPaths(run_id).record, RunRecord)
        except ValueError:  # a record this version cannot parse: listed, without details
            return None
        return None if found is None else found[0]


@dataclass(frozen=True)
class _Examined:
    rows: list[IndexedRun]
    count: int
