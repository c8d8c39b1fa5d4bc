"""validate's part for a stream file: the records split out of a landed batch.

A stream file (``.avro``, written by a Pub/Sub Cloud Storage subscription) mixes many
producers' messages. A message that is no usable row (``avro_reader.record_problem``)
is left out of the statistics and of training, and kept here instead: one
``StreamDeadLetter`` line each (record number, message id, reason, first bytes) in
``datasets/<d>/stream_dead_letters/validate-<run_id>.jsonl``. The step's outputs count
the file's records and the rejected ones (``records_landed``, ``records_rejected``),
and a WARNING alert names the first reasons, so neither the run record nor the alerts
claim more rows than were used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cascade.core.context import StepContext
from cascade.core.messages import Alert
from cascade.core.runs import RunRecord
from cascade.core.streams import StreamDeadLetter, dead_letter_data, stream_dead_letters_name
from cascade.core.validation_config import ValidationConfig
from cascade.steps.runner import StepOutcome
from cascade.validation.avro_reader import record_problem, stream_records
from cascade.validation.names import FileFormat
from cascade.validation.source import DataSource

__all__ = ["StreamSplit", "split_out_records", "with_split"]

_ALERT_REASONS = 20


@dataclass(frozen=True)
class StreamSplit:
    records: int
    rejected: int
    first_letters: list[StreamDeadLetter]  # the first few, for the alert
    dead_letters_uri: str  # the first part; later parts are named <first>-part-<n>
    parts: int = 0

    def outputs(self) -> dict[str, object]:
        found: dict[str, object] = {
            "records_landed": self.records,
            "records_rejected": self.rejected,
        }
        if self.rejected:
            found["dead_letters"] = self.dead_letters_uri
            if self.parts > 1:
                found["dead_letter_parts"] = self.parts
        return found


def split_out_records(
    ctx: StepContext, run: RunRecord, source: DataSource, config: ValidationConfig
) -> StreamSplit | None:
    """None for a file that is no stream file; else its records counted and the
    unusable ones kept as dead letters (written once per run: a resumed step writes
    the same objects again).

    Memory stays bounded whatever the file holds: letters are written in parts of at
    most ``PART_BYTES`` (the first part under the run's name, the next ones
    ``...-part-<n>.jsonl``), and only the first few stay in memory for the alert.
    """
    if source.file_format is not FileFormat.AVRO:
        return None
    writer = _LetterWriter(ctx, stream_dead_letters_name(run.dataset, "validate", run.run_id))
    records = 0
    for record in stream_records(source, config):
        records += 1
        row, reason = record_problem(record.data, source.record_fields)
        if row is None:
            writer.add(
                StreamDeadLetter(
                    stage="validate",
                    source=source.uri,
                    location=f"record {record.position}",
                    message_id=record.message_id,
                    reason=reason,
                    data=dead_letter_data(record.data),
                )
            )
    writer.flush()
    return StreamSplit(
        records=records,
        rejected=writer.count,
        first_letters=writer.first,
        dead_letters_uri=ctx.artifacts.uri(writer.name) if writer.count else "",
        parts=writer.parts,
    )


PART_BYTES = 8 << 20


class _LetterWriter:
    """Dead letters as JSONL objects of at most ``PART_BYTES`` each."""

    def __init__(self, ctx: StepContext, name: str) -> None:
        self._ctx = ctx
        self.name = name
        self.count = 0
        self.parts = 0
        self.first: list[StreamDeadLetter] = []
        self._lines: list[bytes] = []
        self._size = 0

    def add(self, letter: StreamDeadLetter) -> None:
        self.count += 1
        if len(self.first) < _ALERT_REASONS:
            self.first.append(letter)
        line = (letter.model_dump_json() + "\n").encode()
        if self._lines and self._size + len(line) > PART_BYTES:
            self.flush()
        self._lines.append(line)
        self._size += len(line)

    def flush(self) -> None:
        if not self._lines:
            return
        name = (
            self.name
            if self.parts == 0
            else self.name.replace(".jsonl", f"-part-{self.parts:04d}.jsonl")
        )
        self._ctx.artifacts.write(name, b"".join(self._lines), content_type="application/x-ndjson")
        self.parts += 1
        self._lines, self._size = [], 0


def with_split(
    ctx: StepContext, run: RunRecord, outcome: StepOutcome, split: StreamSplit | None
) -> StepOutcome:
    """``outcome`` with the split's counts, and a WARNING alert when records were left out."""
    if split is None:
        return outcome
    outputs = {**outcome.outputs, **split.outputs()}
    if not split.rejected:
        return replace(outcome, outputs=outputs)
    first = split.first_letters[0]
    note = (
        f"; {split.rejected} of {split.records} records split out as dead letters "
        f"(first: {first.location}: {first.reason})"
    )
    alert = Alert(
        dataset=run.dataset,
        run_id=run.run_id,
        step="validate",
        severity="WARNING",
        summary=f"{split.rejected} of {split.records} records of {first.source} are no usable "
        f"row and were split out (first: {first.location}: {first.reason})",
        details={
            "dead_letters": split.dead_letters_uri,
            "rejected": [
                f"{letter.location} ({letter.message_id}): {letter.reason}"
                for letter in split.first_letters
            ],
        },
        at=ctx.clock(),
    )
    return replace(
        outcome,
        outputs=outputs,
        summary=outcome.summary + note,
        messages=[*outcome.messages, alert],
    )
