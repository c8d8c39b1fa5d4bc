"""The ids the router and the streams' writer record, and the supervisor's floor.

``SeenIds`` must have an id on disk before its caller acts on the message, write once
per block of ids, and never lower what it recorded; ``recorded_floor`` is the highest
record of any process and ignores files that are not records, whatever they hold.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from cascade.localcloud.message_ids import SeenIds, ids_file, recorded_floor


def _on_disk(path: Path) -> int:
    return int(json.loads(path.read_text(encoding="utf-8"))["reserved_through"])


def test_an_id_is_on_disk_when_saw_returns_with_a_block_reserved_above_it(
    tmp_path: Path,
) -> None:
    path = ids_file(tmp_path, "router")
    seen = SeenIds(path, block=100)

    seen.saw("42")

    assert _on_disk(path) == 142
    assert recorded_floor(tmp_path) == 142


def test_ids_inside_the_reserved_block_write_nothing(tmp_path: Path) -> None:
    path = ids_file(tmp_path, "router")
    seen = SeenIds(path, block=100)
    seen.saw("1")
    path.unlink()

    seen.saw(["2", "50", "101"])

    assert not path.exists()
    seen.saw("102")
    assert _on_disk(path) == 202


def test_a_batch_reserves_above_its_highest_id_whatever_its_order(tmp_path: Path) -> None:
    path = ids_file(tmp_path, "gcs-subscriber")
    SeenIds(path, block=10).saw(["7", "1500", "3"])
    assert _on_disk(path) == 1510


def test_a_lower_id_never_lowers_the_record(tmp_path: Path) -> None:
    path = ids_file(tmp_path, "router")
    seen = SeenIds(path, block=10)
    seen.saw("500")
    seen.saw("3")
    assert _on_disk(path) == 510


def test_a_restarted_process_starts_from_its_record(tmp_path: Path) -> None:
    path = ids_file(tmp_path, "router")
    SeenIds(path, block=10).saw("500")
    again = SeenIds(path, block=10)
    assert again.reserved_through == 510
    again.saw("505")
    assert _on_disk(path) == 510


def test_the_floor_is_the_highest_record_of_any_process(tmp_path: Path) -> None:
    SeenIds(ids_file(tmp_path, "router"), block=10).saw("90")
    SeenIds(ids_file(tmp_path, "gcs-subscriber"), block=10).saw("4000")
    assert recorded_floor(tmp_path) == 4010


def test_no_record_is_a_floor_of_zero(tmp_path: Path) -> None:
    assert recorded_floor(tmp_path) == 0


@pytest.mark.parametrize(
    "message_id",
    ["", "abc", "-5", "1e9", " 12", "١٢٣", "9" * 19, "12.0", "0x10"],
    ids=repr,
)
def test_an_id_that_is_not_the_emulators_number_is_not_recorded(
    tmp_path: Path, message_id: str
) -> None:
    path = ids_file(tmp_path, "router")
    SeenIds(path).saw(message_id)
    assert not path.exists()


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json",
        "[]",
        "{}",
        '{"reserved_through": "900"}',
        '{"reserved_through": -4}',
        '{"reserved_through": true}',
        '{"reserved_through": 1.5e9}',
        '{"reserved_through": null}',
    ],
    ids=repr,
)
def test_a_file_that_is_not_a_record_counts_as_none(tmp_path: Path, content: str) -> None:
    ids_file(tmp_path, "router").write_text(content, encoding="utf-8")
    SeenIds(ids_file(tmp_path, "gcs-subscriber"), block=10).saw("70")
    assert recorded_floor(tmp_path) == 80
    assert SeenIds(ids_file(tmp_path, "router")).reserved_through == 0


def test_a_directory_where_a_record_should_be_counts_as_none(tmp_path: Path) -> None:
    ids_file(tmp_path, "router").mkdir()
    assert recorded_floor(tmp_path) == 0


def _see_every_eighth(seen: SeenIds, start: int) -> None:
    for n in range(start, 2000, 8):
        seen.saw(str(n))


def test_threads_seeing_ids_at_once_leave_the_highest_covered_on_disk(tmp_path: Path) -> None:
    """Whatever the interleaving, what is on disk covers 1999, the highest id seen, and
    reserves no more than one block (1) above an id seen."""
    path = ids_file(tmp_path, "router")
    seen = SeenIds(path, block=1)
    threads = [threading.Thread(target=_see_every_eighth, args=(seen, s)) for s in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _on_disk(path) in (1999, 2000)
