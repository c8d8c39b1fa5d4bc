"""The dead-letter index: one create-only object per dead letter, listed newest first.

The dead-letter recorder keeps each letter at ``dead-letters/<message id>.json``: Pub/Sub
message ids are numbers with no order a listing could use, so newest first over those
names means reading every letter. The index keeps, for each letter, one small object::

    index/dead-letters/<inverted recorded time>-<the record's name stem>

(the inverted time as the run index's, ``inverted_time_key``), so one listing page from
a ``startOffset`` is one page of letters, newest first, and each entry names the record
to read. An entry is written once, create-only, after its record (``index_dead_letter``);
a second call, from a redelivery, is one refused precondition. A crash between the
record and its entry is healed by the redelivery, which finds the record and indexes it
by the time stored in it.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

from cascade.core.errors import BadRequestError
from cascade.core.paths import dead_letter_record
from cascade.core.run_index import inverted_time_key
from cascade.core.store import ArtifactStore

__all__ = [
    "DEAD_LETTER_INDEX_PREFIX",
    "DEAD_LETTER_PREFIX",
    "backfill_dead_letter_index",
    "dead_letter_entry_name",
    "index_dead_letter",
    "record_of_entry",
]

DEAD_LETTER_PREFIX = "dead-letters/"
DEAD_LETTER_INDEX_PREFIX = "index/dead-letters/"
_STEM = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""What ``dead_letter_record`` puts between ``dead-letters/`` and ``.json``."""
_ENTRY = re.compile(r"(?P<key>[0-9]{16})-(?P<stem>[A-Za-z0-9_-]{1,128})")


def dead_letter_entry_name(message_id: str, recorded_at: datetime) -> str:
    """The index entry of the letter of ``message_id`` recorded at ``recorded_at``."""
    stem = dead_letter_record(message_id).removeprefix(DEAD_LETTER_PREFIX).removesuffix(".json")
    return f"{DEAD_LETTER_INDEX_PREFIX}{inverted_time_key(recorded_at)}-{stem}"


def record_of_entry(name: str) -> str | None:
    """The record an index entry names; None for anything else under the prefix (the
    page skips it: a name is never trusted to point outside ``dead-letters/``)."""
    found = _ENTRY.fullmatch(name.removeprefix(DEAD_LETTER_INDEX_PREFIX))
    if not name.startswith(DEAD_LETTER_INDEX_PREFIX) or found is None:
        return None
    return f"{DEAD_LETTER_PREFIX}{found['stem']}.json"


def index_dead_letter(store: ArtifactStore, message_id: str, recorded_at: datetime) -> bool:
    """Write the letter's entry, create-only; whether it was new. For the recorder, after
    the letter's record (the entry points at it): on every delivery, with the record's
    stored time, so a redelivery heals an entry its first delivery did not write."""
    body = json.dumps(
        {"message_id": message_id, "recorded_at": recorded_at.isoformat()}, sort_keys=True
    ).encode()
    return store.create(dead_letter_entry_name(message_id, recorded_at), body) is not None


def backfill_dead_letter_index(store: ArtifactStore) -> int:
    """Index every dead letter kept (letters recorded before the index existed); the
    number of letters seen. A one-off full listing of ``dead-letters/`` and a read of
    each letter, never on a page view; idempotent."""
    seen = 0
    for name in store.list_names(DEAD_LETTER_PREFIX):
        stem = name.removeprefix(DEAD_LETTER_PREFIX).removesuffix(".json")
        if not name.endswith(".json") or _STEM.fullmatch(stem) is None:
            continue
        stored = store.read(name)
        if stored is None:
            continue
        recorded = _recorded(stored.data)
        if recorded is None or dead_letter_record(recorded[0]) != name:
            continue  # unreadable, or not where the recorder would keep its message id
        try:
            index_dead_letter(store, *recorded)
        except BadRequestError:
            continue  # a time outside the index: nothing a page could sort it by
        seen += 1
    return seen


def _recorded(data: bytes) -> tuple[str, datetime] | None:
    """A record's message id and recorded time (the recorder's ``DeadLetter`` lives in
    the steps, above this layer: only these two fields are read, and checked)."""
    try:
        fields = json.loads(data)
        message_id, recorded_at = fields["message_id"], fields["recorded_at"]
        if not isinstance(message_id, str) or not isinstance(recorded_at, str):
            return None
        return message_id, datetime.fromisoformat(recorded_at)
    except (ValueError, TypeError, KeyError):
        return None
