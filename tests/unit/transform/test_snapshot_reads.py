"""A transform's snapshot reads its dataset's accepted files concurrently.

Each accepted file costs the snapshot two round trips to Cloud Storage: its manifest and
a lookup of its landed generation. One at a time, a dataset of 1,000 files spends about
a minute there on Cloud Storage before the first row is read; a few at a time, a tenth
of it. The order of the snapshot, its skipped files and the first error are as before.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from cascade.core.errors import TransientError
from cascade.core.fakes import MemoryArtifactStore
from cascade.core.store import READ_CONCURRENCY, ObjectInfo, StoredObject
from cascade.transform.snapshot import accepted_files, build_snapshot
from tests.unit.transform.landing import MemoryLanding, accept

DATASET = "credit"
FILES = 12
MEETING_DEADLINE_S = 10.0
NOW = datetime(2026, 12, 3, tzinfo=UTC)
ROWS = b"amount,city\n1.5,a\n2.5,b\n"


class _Meeting:
    """The first ``size`` callers must be inside at once before any goes on (later ones
    pass): reads made one at a time break it, after the deadline, and ``met`` stays 0."""

    def __init__(self, size: int) -> None:
        self._barrier = threading.Barrier(size, action=self._meet, timeout=MEETING_DEADLINE_S)
        self.met = 0

    def _meet(self) -> None:
        self.met = self._barrier.parties

    def wait(self) -> None:
        if self.met or self._barrier.broken:
            return
        try:
            self._barrier.wait()
        except threading.BrokenBarrierError:
            return


class _MeetingStore(MemoryArtifactStore):
    """Manifest reads meet ``meeting`` before they read."""

    def __init__(self) -> None:
        super().__init__("cascade-artifacts")
        self.meeting: _Meeting | None = None

    def read(
        self, name: str, *, generation: int | None = None, metadata: bool = False
    ) -> StoredObject | None:
        if self.meeting is not None and "/accepted/" in name:
            self.meeting.wait()
        return super().read(name, generation=generation, metadata=metadata)


class _MeetingLanding(MemoryLanding):
    def __init__(self) -> None:
        super().__init__()
        self.meeting: _Meeting | None = None
        self.gone: set[str] = set()
        self.failing: str | None = None

    def stat(self, uri: str, generation: int) -> ObjectInfo | None:
        if self.meeting is not None:
            self.meeting.wait()
        if uri == self.failing:
            raise TransientError(f"reading {uri}: 503")
        if uri in self.gone:
            return None
        return super().stat(uri, generation)


@pytest.fixture(name="accepted")
def accepted_fixture() -> tuple[_MeetingStore, _MeetingLanding, list[str]]:
    store, landing = _MeetingStore(), _MeetingLanding()
    uris = [
        accept(store, landing, DATASET, f"day-{i:02d}.csv", ROWS, generation=100 + i, order=i).uri
        for i in range(FILES)
    ]
    return store, landing, uris


def test_manifests_are_read_several_at_a_time_and_kept_in_acceptance_order(
    accepted: tuple[_MeetingStore, _MeetingLanding, list[str]],
) -> None:
    store, _, uris = accepted
    store.meeting = _Meeting(READ_CONCURRENCY)

    manifests = accepted_files(store, DATASET)

    assert store.meeting.met == READ_CONCURRENCY
    assert [manifest.uri for manifest in manifests] == uris


def test_landed_generations_are_looked_up_several_at_a_time(
    accepted: tuple[_MeetingStore, _MeetingLanding, list[str]],
) -> None:
    store, landing, uris = accepted
    landing.meeting = _Meeting(READ_CONCURRENCY)
    landing.gone = {uris[3], uris[7]}

    snapshot = build_snapshot(store, landing, dataset=DATASET, run_id="r1", now=NOW)

    assert landing.meeting.met == READ_CONCURRENCY
    kept = [uri for uri in uris if uri not in landing.gone]
    assert [file.uri for file in snapshot.files] == kept
    assert [file.uri for file in snapshot.skipped] == [uris[3], uris[7]]


def test_a_failed_lookup_fails_the_snapshot(
    accepted: tuple[_MeetingStore, _MeetingLanding, list[str]],
) -> None:
    """A transient error is the step's to retry, never a file quietly left out."""
    store, landing, uris = accepted
    landing.failing = uris[5]

    with pytest.raises(TransientError, match="503"):
        build_snapshot(store, landing, dataset=DATASET, run_id="r1", now=NOW)
