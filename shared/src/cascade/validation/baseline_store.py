"""The dataset's baseline statistics in the artifacts bucket: no object written per file.

Cloud Storage sustains about one write a second to one object name (beyond it: HTTP
429), so the baseline is never one object rewritten by every accepted file. Under
``datasets/<d>/baseline/``:

- ``files/<file_id>.pb``: one accepted file's statistics (only the columns of the schema
  it was judged by), written once, create-only, under the file's own name;
- ``compactions/<sequence>-<token>.pb``: the merge of a compaction, a new name each time,
  never overwritten;
- ``HEAD.json``: which compaction is current, how many files it holds, and which
  ``files/`` objects it covers (merged, not yet deleted). One writer at a time wins it
  (``if_generation_match``); a compaction writes it at most once per
  ``COMPACTION_INTERVAL_S`` (above Cloud Storage's one second).

The baseline is the current compaction plus every ``files/`` object HEAD does not cover
(``load``): validation, the transform and the serving plan all read it so. Accepting a
file writes its object (``merge_file``); if the object exists the file was merged
already (a resumed step), and a file whose object a compaction deleted has its accepted
manifest, so its step never merges again: a compaction deletes a covered object only
once the file's manifest exists. ``compact`` (the validate step, after the manifest)
merges the uncovered objects into a new compaction, points HEAD at it, and then deletes
the compactions older than the previous one (a reader that read an older HEAD and finds
its compaction gone reads again; a compactor that lost HEAD leaves its object to this
sweep) and the objects the previous compaction covered: an object is deleted more than
a second after it was written, never two mutations of one name within Cloud Storage's
second.

A ``baseline_stats.pb`` written before this layout (one object, merged file by file) is
the initial compaction: its file count and recent file ids (the resume guard of that
code) are carried into HEAD by the first compaction, which leaves the object to be
deleted like any older compaction.

The baseline is the schema's, not the last file's: a file's object holds only the
columns its schema lists, and a compaction or a ``load`` given a schema keeps only that
schema's columns (a column the schema stopped listing leaves the baseline). A column a
file brings that the schema does not take stays a finding of that file until the schema
takes it (an edit, or ``cascade schema accept-feature``).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError  # type: ignore[import-untyped,unused-ignore]
from pydantic import BaseModel, Field, ValidationError

from cascade.core.errors import ConcurrentUpdateError, TransientError
from cascade.core.paths import DatasetPaths
from cascade.core.store import ArtifactStore, read_concurrently
from cascade.core.validation_config import ValidationConfig
from cascade.validation.anomalies import Baseline
from cascade.validation.schema import restricted_to_schema
from cascade.validation.statistics import statistics_proto, summary_of_statistics
from cascade.validation.summaries import DatasetSummary
from cascade.validation.tfmd import statistics_pb2

__all__ = [
    "COMPACTION_INTERVAL_S",
    "MAX_FILES_PER_COMPACTION",
    "BaselineHead",
    "BaselineStore",
    "Compaction",
    "StoredBaseline",
    "load_baseline_summary",
]

COMPACTION_INTERVAL_S = 1.2
"""The least time between two HEAD writes: Cloud Storage's one write a second, a margin."""
MAX_FILES_PER_COMPACTION = 500
"""Files one compaction merges at most (HEAD lists them until they are deleted)."""
CACHED_SUMMARIES = 512
"""Decoded statistics objects a store keeps (``_SummaryCache``)."""
LOAD_ATTEMPTS = 20
"""How many times ``load`` reads again when HEAD moved while it read."""
LEGACY_FILES_KEY = "cascade-files"
LEGACY_RECENT_KEY = "cascade-recent-files"

_log = logging.getLogger("cascade.validation.baseline_store")


class BaselineHead(BaseModel):
    """``datasets/<d>/baseline/HEAD.json``: the current compaction."""

    sequence: int = Field(ge=0)
    compaction: str | None
    """Object name of the current compaction (None: no file merged yet)."""
    previous: str | None = None
    """The compaction before it, deleted by the next compaction."""
    files: int = Field(ge=0)
    """Accepted files the compaction holds."""
    covered: list[str] = Field(default_factory=list)
    """File ids merged into ``compaction`` whose ``files/`` objects may still exist."""
    legacy_recent: list[str] = Field(default_factory=list)
    """File ids a ``baseline_stats.pb`` of the old layout had merged last."""
    compacted_at: float = 0.0
    """Seconds since the epoch when this HEAD was written (the compactor's clock)."""


@dataclass(frozen=True)
class StoredBaseline:
    summary: DatasetSummary
    files: int
    recent_files: tuple[str, ...]
    """Ids of the files merged on top of the compaction (not compacted yet)."""
    generation: int
    """HEAD's generation the baseline was read at (0: no HEAD yet)."""

    @property
    def baseline(self) -> Baseline:
        return Baseline(summary=self.summary, files=self.files)


@dataclass(frozen=True)
class Compaction:
    """What one ``compact`` call did."""

    merged: tuple[str, ...]
    """File ids it merged (empty: nothing was due, or another compactor won)."""
    deleted: tuple[str, ...]
    """File ids whose covered objects it deleted."""
    head: BaselineHead | None


@dataclass(frozen=True)
class _Head:
    value: BaselineHead
    generation: int


class BaselineStore:
    """The baseline of one dataset, in the artifacts store."""

    def __init__(
        self,
        artifacts: ArtifactStore,
        dataset: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._artifacts = artifacts
        self._paths = DatasetPaths(dataset)
        self._root = f"{self._paths.root}/baseline"
        self._clock = clock
        self.head_name = f"{self._root}/HEAD.json"
        self._loaded_head: _Head | None = None
        self.files_prefix = f"{self._root}/files/"
        self.uri = artifacts.uri(f"{self._root}/")

    def file_name(self, file_id: str) -> str:
        return f"{self.files_prefix}{file_id}.pb"

    # -- reading ----------------------------------------------------------------------------

    def load(
        self, schema: Any | None = None, config: ValidationConfig | None = None
    ) -> StoredBaseline | None:
        """The baseline: the current compaction and every file merged after it, or None
        before the first file is accepted. With ``schema``, only its columns; ``config``
        bounds the values tracked per column (the dataset's validation config)."""
        for _ in range(LOAD_ATTEMPTS):
            head = self._loaded_head = self._head()
            base = self._compaction_summary(head.value.compaction)
            if isinstance(base, _Moved):
                continue
            listed = self._listed_ids()
            covered = set(head.value.covered)
            pending = sorted(file_id for file_id in listed if file_id not in covered)
            summaries = self._read_files(pending, listed)
            if summaries is None or self._head_generation() != head.generation:
                continue  # a compaction moved HEAD (and deleted what it covered): again
            merged = _merged_summaries(base, summaries, schema, config)
            if merged is None:
                return None
            files = head.value.files + len(pending)
            return StoredBaseline(merged, files, tuple(pending), head.generation)
        raise ConcurrentUpdateError(f"{self.uri}: HEAD kept moving while the baseline was read")

    def _head(self) -> _Head:
        stored = self._artifacts.read(self.head_name)
        if stored is None:
            return _Head(self._legacy_head(), 0)
        try:
            value = BaselineHead.model_validate_json(stored.data)
        except ValidationError as error:
            raise TransientError(f"{self._artifacts.uri(self.head_name)}: {error}") from error
        return _Head(value, stored.generation)

    def _legacy_recent(self) -> list[str]:
        """The files the old layout's code merged last. Fixed once the old code stopped
        (every HEAD carries its predecessor's list), so the one ``load`` read serves."""
        head = self._loaded_head if self._loaded_head is not None else self._head()
        return list(head.value.legacy_recent)

    def _head_generation(self) -> int:
        info = self._artifacts.stat(self.head_name)
        return 0 if info is None else info.generation

    def _legacy_head(self) -> BaselineHead:
        """HEAD before the first compaction: the old layout's object, if any."""
        info = self._artifacts.stat(self._paths.baseline_stats)
        if info is None:
            return BaselineHead(sequence=0, compaction=None, files=0)
        recent = str(info.metadata.get(LEGACY_RECENT_KEY, "")).split()
        files = int(info.metadata.get(LEGACY_FILES_KEY) or max(len(recent), 1))
        return BaselineHead(
            sequence=0, compaction=self._paths.baseline_stats, files=files, legacy_recent=recent
        )

    def _compaction_summary(self, name: str | None) -> DatasetSummary | _Moved | None:
        if name is None:
            return None
        immutable = name != self._paths.baseline_stats  # a compaction's name is its own
        cache = _cache_of(self._artifacts)
        found = cache.get((name, 0)) if immutable else None
        if found is not None:
            return found
        stored = self._artifacts.read(name)
        if stored is None:
            return _MOVED  # deleted by a later compaction: HEAD has moved
        summary = _decode(stored.data, self._artifacts.uri(name))
        if immutable:
            cache.put((name, 0), summary)
        return summary

    def _listed_ids(self) -> dict[str, int]:
        """The ``files/`` objects: file id -> generation."""
        ids = {}
        for info in self._artifacts.list_objects(self.files_prefix):
            file_id = info.name.removeprefix(self.files_prefix)
            if file_id.endswith(".pb") and "/" not in file_id:
                ids[file_id.removesuffix(".pb")] = info.generation
        return ids

    def _read_files(
        self, file_ids: list[str], generations: dict[str, int]
    ) -> list[DatasetSummary] | None:
        """The files' summaries in order (the generations listed: written once, so kept
        in this store's cache), or None if one was deleted meanwhile."""
        cache = _cache_of(self._artifacts)

        def read(file_id: str) -> DatasetSummary | None:
            name = self.file_name(file_id)
            key = (name, generations[file_id])
            found = cache.get(key)
            if found is not None:
                return found
            stored = self._artifacts.read(name, generation=generations[file_id])
            if stored is None:
                return None
            summary = _decode(stored.data, self._artifacts.uri(name))
            cache.put(key, summary)
            return summary

        found = read_concurrently(read, file_ids, name="baseline-read")
        if any(summary is None for summary in found):
            return None
        return [summary for summary in found if summary is not None]

    # -- writing ----------------------------------------------------------------------------

    def merge_file(
        self, file_id: str, summary: DatasetSummary, config: ValidationConfig, *, schema: Any
    ) -> bool:
        """Record one accepted file's statistics, exactly once per ``file_id``.

        Only the features ``schema`` (the schema the file was judged by) lists enter the
        baseline. Returns whether this call recorded them (False: a resumed step whose
        file was recorded already).
        """
        if file_id in self._legacy_recent():
            return False  # merged by the old layout's code before this step resumed
        proto = statistics_proto(restricted_to_schema(summary, schema), config, name=file_id)
        created = self._artifacts.create(
            self.file_name(file_id), proto.SerializeToString(), content_type=_PROTO
        )
        return created is not None

    def compact(
        self,
        config: ValidationConfig,
        *,
        schema: Any,
        is_accepted: Callable[[str], bool],
    ) -> Compaction:
        """Merge the files HEAD does not cover into a new compaction and point HEAD at it,
        unless HEAD was written less than ``COMPACTION_INTERVAL_S`` ago. Then delete the
        compactions older than the previous one, and the objects the previous compaction
        covered of files ``is_accepted`` says have their manifest (an object is deleted
        by the compaction after the one that merged it: more than a second after it was
        written, so the delete is not a second mutation of that name within a second).

        Losing the race for HEAD to another compactor (412, or 429: it wrote HEAD within
        the second) is no error: that compactor merged the files, or the next one will.
        """
        head = self._head()
        if self._clock() - head.value.compacted_at < COMPACTION_INTERVAL_S:
            return Compaction((), (), None)
        listed = self._listed_ids()
        covered = set(head.value.covered)
        leftover = sorted(file_id for file_id in listed if file_id in covered)
        pending = sorted(file_id for file_id in listed if file_id not in covered)
        pending = pending[:MAX_FILES_PER_COMPACTION]
        if not pending:
            deleted = self._delete_covered(leftover, is_accepted)
            return Compaction((), deleted, None)
        base = self._compaction_summary(head.value.compaction)
        summaries = self._read_files(pending, listed)
        if isinstance(base, _Moved) or summaries is None:
            return Compaction((), (), None)  # another compactor is ahead
        merged = _merged_summaries(base, summaries, schema, config)
        assert merged is not None
        sequence = head.value.sequence + 1
        name = f"{self._root}/compactions/{sequence:012d}-{secrets.token_hex(4)}.pb"
        proto = statistics_proto(merged, config, name="baseline")
        self._artifacts.create(name, proto.SerializeToString(), content_type=_PROTO)
        new_head = BaselineHead(
            sequence=sequence,
            compaction=name,
            previous=head.value.compaction,
            files=head.value.files + len(pending),
            covered=sorted({*pending, *leftover}),
            legacy_recent=head.value.legacy_recent,
            compacted_at=self._clock(),
        )
        try:
            written = self._artifacts.write(
                self.head_name,
                new_head.model_dump_json().encode(),
                content_type="application/json",
                if_generation_match=head.generation,
                retry=False,
            )
        except TransientError as error:
            _log.info("%s: HEAD not written (%s); the next compaction merges", self.uri, error)
            written = None
        if written is None:  # another compactor won: ours is nobody's (a later one sweeps it)
            return Compaction((), (), None)
        if head.value.previous == self._paths.baseline_stats:
            self._artifacts.delete(head.value.previous)  # the old layout's, now covered
        self._sweep_compactions(sequence)
        deleted = self._delete_covered(leftover, is_accepted)
        return Compaction(tuple(pending), deleted, new_head)

    def _sweep_compactions(self, sequence: int) -> None:
        """Delete every compaction older than the previous one (HEAD's ``sequence`` - 1):
        the ones HEAD left behind and those of compactors that lost HEAD, which no HEAD
        can point at any more. Each was written more than a second ago."""
        prefix = f"{self._root}/compactions/"
        for name in list(self._artifacts.list_names(prefix)):
            number = name.removeprefix(prefix).split("-", 1)[0]
            if number.isdigit() and int(number) < sequence - 1:
                self._artifacts.delete(name)

    def _delete_covered(
        self, file_ids: Iterable[str], is_accepted: Callable[[str], bool]
    ) -> tuple[str, ...]:
        """Delete the covered objects of files whose manifest exists (their steps are
        done: none merges again); the others stay covered until it does."""
        deleted = []
        for file_id in file_ids:
            if is_accepted(file_id) and self._artifacts.delete(self.file_name(file_id)):
                deleted.append(file_id)
        return tuple(deleted)


class _SummaryCache:
    """Decoded statistics of objects written once (compactions, a file's statistics at
    the generation listed), per store: a step reads the same ones file after file."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[str, int], DatasetSummary] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> DatasetSummary | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple[str, int], summary: DatasetSummary) -> None:
        with self._lock:
            self._entries[key] = summary
            while len(self._entries) > CACHED_SUMMARIES:
                self._entries.popitem(last=False)


_CACHES: weakref.WeakKeyDictionary[ArtifactStore, _SummaryCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _cache_of(artifacts: ArtifactStore) -> _SummaryCache:
    with _CACHES_LOCK:
        cache = _CACHES.get(artifacts)
        if cache is None:
            cache = _CACHES[artifacts] = _SummaryCache()
        return cache


def load_baseline_summary(artifacts: ArtifactStore, dataset: str) -> DatasetSummary | None:
    """The dataset's baseline statistics (None before the first accepted file)."""
    stored = BaselineStore(artifacts, dataset).load()
    return None if stored is None else stored.summary


class _Moved:
    """A compaction object deleted while being read: HEAD has moved."""


_MOVED = _Moved()
_PROTO = "application/x-protobuf"


def _merged_summaries(
    base: DatasetSummary | None,
    files: list[DatasetSummary],
    schema: Any | None,
    config: ValidationConfig | None = None,
) -> DatasetSummary | None:
    max_values = (config or ValidationConfig()).max_tracked_values
    merged = base
    for summary in files:
        merged = summary if merged is None else merged.merged(summary, max_values)
    if merged is None:
        return None
    if schema is not None:
        merged = restricted_to_schema(merged, schema)
    return merged.compacted(max_values) if files else merged


def _decode(data: bytes, uri: str) -> DatasetSummary:
    statistics = statistics_pb2.DatasetFeatureStatisticsList()
    try:
        statistics.ParseFromString(data)
    except DecodeError as error:
        raise TransientError(f"{uri} is not a statistics proto: {error}") from error
    return summary_of_statistics(statistics)
