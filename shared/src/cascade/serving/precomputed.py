"""Precomputed answers: a low-latency lookup store (Cloud Bigtable) for static and hybrid serving.

A batch prediction job scores a dataset's keys with one model version and ``write``s the
answers; the model server ``read``s the answers of the version the traffic split chose
for the request, and never any other version's.

Layout (one table for every dataset, ``precomputed`` by default; one column family ``p``)::

    row key   = <dataset> "#" <version> "#" <salt> "#" <entity key, UTF-8>
    column    = p:a    value = the prediction, JSON (an object: output name -> value)

Why versioned row keys rather than one column per version in the entity's row:

- an answer can only be read for the version in its row key: a read for version 3 builds
  version-3 row keys, so another version's answer cannot leak into it, not even when a
  version's load is half done or a filter is wrong;
- dropping a version is a prefix (``<dataset>#<version>#``): a range scan plus deletes,
  or ``DropRowRange`` by an administrator; no row of another version is touched;
- a canary split reads one row per key either way (each request uses one version).

The row key is unambiguous without escaping the entity key: the dataset matches
``DATASET_NAME_PATTERN`` (no ``#``), the version is digits and the salt is two hex
digits, so everything after the third ``#`` is the key, byte for byte (``#``, NUL, any
Unicode). Keys are data, never paths or patterns: they are only ever compared exactly.
An empty key, a key over ``MAX_KEY_BYTES`` (Bigtable's row-key limit is 4 KiB) or one
that is not valid Unicode (a lone surrogate) is refused on write (``ValueError``) and is
simply never found on read.

Hot-spotting: entity keys are often sequential (user ids, dates); a batch load of them
would land on one tablet. The salt — the first byte of the key's SHA-256 — spreads one
version's rows over 256 sub-ranges that Bigtable can split, and a point read computes it
from the key at no cost. (A single very hot key is one row whatever the layout; Bigtable
serves a hot row from its block cache.)

The family keeps one cell per column (GC ``max_num_versions``, ``infra/bigtable.tf``);
GC is lazy, so reads also ask for the newest cell only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cascade.core.settings import DATASET_NAME_PATTERN

__all__ = [
    "ANSWER_COLUMN",
    "COLUMN_FAMILY",
    "MAX_KEY_BYTES",
    "BigtableStore",
    "CachedStore",
    "MemoryPrecomputedStore",
    "PrecomputedSettings",
    "PrecomputedStore",
    "StoreUnavailableError",
    "encode_key",
    "ensure_table",
    "key_problem",
    "row_key",
    "store_factory",
    "version_prefix",
]

_log = logging.getLogger("cascade.serving.precomputed")

COLUMN_FAMILY = "p"
ANSWER_COLUMN = b"a"
MAX_KEY_BYTES = 1024
"""Longest entity key stored (UTF-8 bytes); the row key's prefix fits in the rest of 4 KiB."""
MUTATION_BATCH = 1000
"""Rows per ``MutateRows`` call (Bigtable allows 100,000 mutations per call)."""
READ_TIMEOUT_S = 2.0
"""A lookup on the request path gives up after this long (hybrid then asks the model)."""
_EMULATOR_WARNING = r"Connecting to Bigtable emulator at"

Prediction = dict[str, Any]


class StoreUnavailableError(RuntimeError):
    """The store could not be read or written (network, permissions, missing table)."""


@runtime_checkable
class PrecomputedStore(Protocol):
    """Answers per (dataset, model version, entity key)."""

    def write(self, dataset: str, version: str, rows: Iterable[tuple[str, Prediction]]) -> int:
        """Store ``(key, prediction)`` pairs for ``version`` (replacing earlier answers for
        the same key); returns how many rows were written. ``ValueError`` for a bad key,
        before anything of that batch is written."""
        ...

    def read(self, dataset: str, version: str, keys: Sequence[str]) -> dict[str, Prediction]:
        """The answers ``version`` has for ``keys`` (keys without one are absent)."""
        ...

    def drop_version(self, dataset: str, version: str) -> int:
        """Delete every answer of ``version``; returns how many rows went."""
        ...

    def close(self) -> None: ...


# -- keys ------------------------------------------------------------------------------


def _check_scope(dataset: str, version: str) -> None:
    if not DATASET_NAME_PATTERN.fullmatch(dataset):
        raise ValueError(f"invalid dataset name {dataset!r}")
    if not version.isascii() or not version.isdigit():
        raise ValueError(f"invalid model version {version!r}: digits only")


def key_problem(key: object) -> str | None:
    """Why ``key`` cannot be an entity key here, or None when it can."""
    if not isinstance(key, str):
        return f"an entity key is a string, not {type(key).__name__}"
    if not key:
        return "an entity key must not be empty"
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        return "an entity key must be valid Unicode (no lone surrogates)"
    if len(encoded) > MAX_KEY_BYTES:
        return f"an entity key is at most {MAX_KEY_BYTES} bytes of UTF-8, not {len(encoded)}"
    return None


def encode_key(key: str) -> bytes:
    """The key's bytes; ``ValueError`` (with the reason) when it cannot be stored."""
    problem = key_problem(key)
    if problem:
        shown = repr(key[:40]) + ("..." if isinstance(key, str) and len(key) > 40 else "")
        raise ValueError(f"{problem}: {shown}")
    return key.encode("utf-8")


def version_prefix(dataset: str, version: str) -> bytes:
    """Every row key of ``version``'s answers starts with this (and no other version's)."""
    _check_scope(dataset, version)
    return f"{dataset}#{version}#".encode()


def row_key(dataset: str, version: str, key: str) -> bytes:
    encoded = encode_key(key)
    salt = hashlib.sha256(encoded).digest()[0]
    return version_prefix(dataset, version) + f"{salt:02x}#".encode() + encoded


def _encode_prediction(key: str, prediction: Mapping[str, Any]) -> bytes:
    if not isinstance(prediction, Mapping):
        raise ValueError(f"the prediction for key {key[:40]!r} must be an object")
    return json.dumps(dict(prediction), separators=(",", ":"), allow_nan=True).encode()


def _chunks(rows: Iterable[tuple[str, Prediction]], size: int) -> Iterator[list[tuple[str, Any]]]:
    chunk: list[tuple[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- in memory (unit tests) ------------------------------------------------------------


class MemoryPrecomputedStore:
    """The same contract in a dict keyed by the real row keys (tests; one process)."""

    def __init__(self) -> None:
        self.rows: dict[bytes, bytes] = {}
        self.reads: list[tuple[str, str, tuple[str, ...]]] = []
        self.fail_reads: Exception | None = None
        self.closed = False

    def write(self, dataset: str, version: str, rows: Iterable[tuple[str, Prediction]]) -> int:
        written = 0
        for chunk in _chunks(rows, MUTATION_BATCH):
            encoded = {row_key(dataset, version, k): _encode_prediction(k, p) for k, p in chunk}
            self.rows.update(encoded)
            written += len(chunk)
        return written

    def read(self, dataset: str, version: str, keys: Sequence[str]) -> dict[str, Prediction]:
        self.reads.append((dataset, version, tuple(keys)))
        if self.fail_reads is not None:
            raise StoreUnavailableError(str(self.fail_reads))
        found = {}
        for key in dict.fromkeys(keys):
            if key_problem(key) is None and (row := row_key(dataset, version, key)) in self.rows:
                found[key] = json.loads(self.rows[row])
        return found

    def drop_version(self, dataset: str, version: str) -> int:
        prefix = version_prefix(dataset, version)
        doomed = [row for row in self.rows if row.startswith(prefix)]
        for row in doomed:
            del self.rows[row]
        return len(doomed)

    def close(self) -> None:
        self.closed = True


# -- Cloud Bigtable ----------------------------------------------------------------------


@contextlib.contextmanager
def _emulator_notice_ignored() -> Iterator[None]:
    """The client warns (RuntimeWarning) whenever ``BIGTABLE_EMULATOR_HOST`` is set; that
    notice is expected locally, every other warning still surfaces."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_EMULATOR_WARNING, category=RuntimeWarning)
        yield


class BigtableStore:
    """``PrecomputedStore`` on Cloud Bigtable with the real ``google-cloud-bigtable`` data
    client (``BIGTABLE_EMULATOR_HOST`` points it at the emulator)."""

    def __init__(
        self,
        project: str,
        instance: str,
        table: str = "precomputed",
        *,
        read_timeout_s: float = READ_TIMEOUT_S,
        app_profile_id: str | None = None,
    ) -> None:
        from google.cloud.bigtable.data import BigtableDataClient

        with _emulator_notice_ignored():
            self._client = BigtableDataClient(project=project)
            self._table = self._client.get_table(instance, table, app_profile_id=app_profile_id)
        self.project, self.instance, self.table_id = project, instance, table
        self.read_timeout_s = read_timeout_s

    def write(self, dataset: str, version: str, rows: Iterable[tuple[str, Prediction]]) -> int:
        from google.cloud.bigtable.data import RowMutationEntry, SetCell
        from google.cloud.bigtable.data.exceptions import MutationsExceptionGroup

        written = 0
        for chunk in _chunks(rows, MUTATION_BATCH):
            entries = [
                RowMutationEntry(
                    row_key(dataset, version, key),
                    [SetCell(COLUMN_FAMILY, ANSWER_COLUMN, _encode_prediction(key, prediction))],
                )
                for key, prediction in chunk
            ]
            try:
                self._table.bulk_mutate_rows(entries)
            except MutationsExceptionGroup as error:
                raise StoreUnavailableError(
                    f"{len(error.exceptions)} of {len(entries)} rows of {dataset} v{version} "
                    f"were not written: {error.exceptions[0]}"
                ) from error
            written += len(entries)
        return written

    def read(self, dataset: str, version: str, keys: Sequence[str]) -> dict[str, Prediction]:
        from google.api_core import exceptions as api_exceptions
        from google.cloud.bigtable.data import ReadRowsQuery, row_filters

        wanted: dict[bytes, str] = {}
        for key in dict.fromkeys(keys):
            if key_problem(key) is None:  # a key that cannot be stored is never found
                wanted[row_key(dataset, version, key)] = key
        if not wanted:
            return {}
        newest_answer = row_filters.RowFilterChain(
            [
                row_filters.FamilyNameRegexFilter(COLUMN_FAMILY),
                row_filters.ColumnQualifierRegexFilter(ANSWER_COLUMN),
                row_filters.CellsColumnLimitFilter(1),
            ]
        )
        query = ReadRowsQuery(row_keys=list(wanted), row_filter=newest_answer)
        try:
            rows = self._table.read_rows(query, operation_timeout=self.read_timeout_s)
        except api_exceptions.GoogleAPIError as error:
            raise StoreUnavailableError(f"reading precomputed answers failed: {error}") from error
        found: dict[str, Prediction] = {}
        for row in rows:
            found_key = wanted.get(row.row_key)
            cells = row.get_cells(COLUMN_FAMILY, ANSWER_COLUMN)
            if found_key is None or not cells:
                continue
            newest = max(cells, key=lambda cell: cell.timestamp_micros)
            found[found_key] = json.loads(newest.value)
        return found

    def drop_version(self, dataset: str, version: str) -> int:
        """Scan the version's prefix (keys only) and delete those rows, in batches: the data
        API only, so the loader needs no table-admin permission."""
        from google.cloud.bigtable.data import (
            DeleteAllFromRow,
            ReadRowsQuery,
            RowMutationEntry,
            RowRange,
            row_filters,
        )

        prefix = version_prefix(dataset, version)
        end = prefix[:-1] + bytes([prefix[-1] + 1])  # '#' + 1: just past the prefix
        query = ReadRowsQuery(
            row_ranges=RowRange(start_key=prefix, end_key=end),
            row_filter=row_filters.RowFilterChain(
                [row_filters.CellsRowLimitFilter(1), row_filters.StripValueTransformerFilter(True)]
            ),
        )
        dropped = 0
        batch: list[Any] = []
        for row in self._table.read_rows_stream(query):
            batch.append(RowMutationEntry(row.row_key, [DeleteAllFromRow()]))
            if len(batch) == MUTATION_BATCH:
                self._table.bulk_mutate_rows(batch)
                dropped, batch = dropped + len(batch), []
        if batch:
            self._table.bulk_mutate_rows(batch)
            dropped += len(batch)
        return dropped

    def close(self) -> None:
        self._table.close()  # type: ignore[no-untyped-call]
        self._client.close()


def ensure_table(
    project: str, instance: str, table: str = "precomputed", *, emulator_host: str | None = None
) -> bool:
    """Create the table with its column family when missing, or add a missing family
    (idempotent; the table-admin API). Returns True when something was created.

    ``emulator_host`` (default: ``BIGTABLE_EMULATOR_HOST``) talks to the emulator, which
    has every instance; in the cloud the instance and table are Terraform's
    (``infra/bigtable.tf``) and this only checks them.
    """
    import grpc
    from google.api_core import exceptions as api_exceptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.bigtable_admin_v2 import BigtableTableAdminClient
    from google.cloud.bigtable_admin_v2.services.bigtable_table_admin.transports import (
        BigtableTableAdminGrpcTransport,
    )
    from google.cloud.bigtable_admin_v2.types import (
        ColumnFamily,
        GcRule,
        ModifyColumnFamiliesRequest,
        Table,
    )

    host = emulator_host or os.environ.get("BIGTABLE_EMULATOR_HOST")
    if host:
        transport = BigtableTableAdminGrpcTransport(
            channel=grpc.insecure_channel(host),
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
        admin = BigtableTableAdminClient(transport=transport)
    else:
        admin = BigtableTableAdminClient()
    family = ColumnFamily(gc_rule=GcRule(max_num_versions=1))  # type: ignore[no-untyped-call]
    parent = f"projects/{project}/instances/{instance}"
    name = f"{parent}/tables/{table}"
    try:
        try:
            admin.create_table(
                parent=parent, table_id=table, table=Table(column_families={COLUMN_FAMILY: family})
            )
            _log.info("created Bigtable table %s", name)
            return True
        except api_exceptions.AlreadyExists:
            pass
        existing = admin.get_table(name=name)
        if COLUMN_FAMILY in existing.column_families:
            return False
        modification = ModifyColumnFamiliesRequest.Modification(id=COLUMN_FAMILY, create=family)
        admin.modify_column_families(name=name, modifications=[modification])
        _log.info("added column family %s to %s", COLUMN_FAMILY, name)
        return True
    finally:
        admin.transport.close()  # type: ignore[no-untyped-call]


# -- a cache in front of the store ------------------------------------------------------


class CachedStore:
    """A bounded, expiring cache of ``inner``'s answers (and of its misses) in this
    process: the head of a hybrid dataset's traffic is answered from memory instead of a
    Bigtable read per request (one read costs ~0.8 ms of client CPU, more than a small
    model's prediction: ``bench/serving_modes.py``).

    Entries are keyed by (dataset, version, key), so a version's answers are never
    served for another version. An answer a new batch rewrote for the same version is
    seen within ``ttl_s``; one loaded after its miss was cached within ``miss_ttl_s``
    (short: each worker has its own cache, and a static dataset's key a batch just
    loaded must not stay a 404 in some of them). Writes and drops through this store
    forget the version's entries at once.
    """

    def __init__(
        self,
        inner: PrecomputedStore,
        *,
        max_entries: int,
        ttl_s: float,
        miss_ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or ttl_s <= 0 or (miss_ttl_s is not None and miss_ttl_s <= 0):
            raise ValueError("a cache holds at least one entry for a positive time")
        self._inner = inner
        self._max = max_entries
        self._ttl = ttl_s
        self._miss_ttl = min(ttl_s, miss_ttl_s if miss_ttl_s is not None else ttl_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str, str], tuple[float, Prediction | None]] = (
            OrderedDict()
        )

    def read(self, dataset: str, version: str, keys: Sequence[str]) -> dict[str, Prediction]:
        now = self._clock()
        found: dict[str, Prediction] = {}
        wanted: list[str] = []
        with self._lock:
            for key in keys:
                entry = self._entries.get((dataset, version, key))
                if entry is None or entry[0] <= now:
                    wanted.append(key)
                    continue
                self._entries.move_to_end((dataset, version, key))
                if entry[1] is not None:
                    found[key] = entry[1]
        if wanted:
            fetched = self._inner.read(dataset, version, wanted)
            found.update(fetched)
            with self._lock:
                for key in wanted:
                    answer = fetched.get(key)
                    expires = now + (self._ttl if answer is not None else self._miss_ttl)
                    self._entries[(dataset, version, key)] = (expires, answer)
                    self._entries.move_to_end((dataset, version, key))
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
        return found

    def write(self, dataset: str, version: str, rows: Iterable[tuple[str, Prediction]]) -> int:
        written = self._inner.write(dataset, version, rows)
        self._forget(dataset, version)
        return written

    def drop_version(self, dataset: str, version: str) -> int:
        dropped = self._inner.drop_version(dataset, version)
        self._forget(dataset, version)
        return dropped

    def close(self) -> None:
        self._inner.close()

    def _forget(self, dataset: str, version: str) -> None:
        with self._lock:
            for scope in [scope for scope in self._entries if scope[:2] == (dataset, version)]:
                del self._entries[scope]


# -- settings --------------------------------------------------------------------------


class PrecomputedSettings(BaseSettings):
    """Where precomputed answers live; every field is ``CASCADE_PRECOMPUTED_<FIELD>``.
    Without ``instance`` the model server has no store and serves dynamically only."""

    model_config = SettingsConfigDict(
        env_prefix="CASCADE_PRECOMPUTED_", frozen=True, extra="ignore"
    )

    instance: str | None = Field(None, description="The Bigtable instance; unset: no store.")
    table: str = Field("precomputed", min_length=1)
    project: str | None = Field(None, description="Default: the project Cascade runs in.")
    app_profile_id: str | None = None
    read_timeout_s: float = Field(READ_TIMEOUT_S, gt=0, le=30)
    cache_entries: int = Field(
        100_000, ge=0, description="Answers (and misses) kept in each worker; 0: no cache."
    )
    cache_ttl_s: float = Field(
        30.0, gt=0, le=3600, description="How long a cached answer is trusted."
    )
    cache_miss_ttl_s: float = Field(
        2.0, gt=0, le=3600, description="How long a cached miss (no answer) is trusted."
    )


def store_factory(
    settings: PrecomputedSettings, default_project: str
) -> Callable[[], PrecomputedStore] | None:
    """A factory of the configured store (call it after forking: gRPC channels do not
    survive a fork), or None when no store is configured."""
    if not settings.instance:
        return None
    instance = settings.instance

    def make() -> PrecomputedStore:
        store = BigtableStore(
            settings.project or default_project,
            instance,
            settings.table,
            read_timeout_s=settings.read_timeout_s,
            app_profile_id=settings.app_profile_id,
        )
        if not settings.cache_entries:
            return store
        return CachedStore(
            store,
            max_entries=settings.cache_entries,
            ttl_s=settings.cache_ttl_s,
            miss_ttl_s=settings.cache_miss_ttl_s,
        )

    return make
