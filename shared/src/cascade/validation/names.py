"""Which landed object names are acceptable, and which file format a name declares.

Object names are data: they are checked here so that names with ``..``, control
characters or other oddities are refused with a clear error instead of being carried
into quarantine names, reports and logs.

Every landed object gets a run. One whose name is refused (at the bucket's root, under
a folder that is no dataset name, or with odd segments) is recorded under the reserved
pseudo-dataset ``INVALID_NAMES_DATASET``, never under a dataset derived from a cleaned-up
(normalised) form of its name.
"""

from __future__ import annotations

import posixpath
import re
from enum import StrEnum

from cascade.core.errors import BadInputError
from cascade.core.settings import DATASET_NAME_PATTERN

__all__ = [
    "INVALID_NAMES_DATASET",
    "FileFormat",
    "check_landed_name",
    "file_format_of",
    "landed_dataset",
    "normalised_alias",
]

INVALID_NAMES_DATASET = "invalid-uploads"
"""The reserved dataset under which runs of objects with a refused name are recorded.

A valid dataset name (messages and alerts require one), reserved: a folder of that name
in the landing bucket is refused as a dataset."""

MAX_NAME_LENGTH = 1024
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+@-]{0,254}$")


class FileFormat(StrEnum):
    CSV = "csv"
    CSV_GZIP = "csv.gz"
    PARQUET = "parquet"
    NDJSON = "ndjson"
    NDJSON_GZIP = "ndjson.gz"
    AVRO = "avro"  # a stream file: Pub/Sub messages (cascade.validation.avro_reader)

    @property
    def gzipped(self) -> bool:
        return self.value.endswith(".gz")


_SUFFIXES: tuple[tuple[str, FileFormat], ...] = (
    (".csv.gz", FileFormat.CSV_GZIP),
    (".csv.gzip", FileFormat.CSV_GZIP),
    (".csv", FileFormat.CSV),
    (".parquet", FileFormat.PARQUET),
    (".pq", FileFormat.PARQUET),
    (".ndjson.gz", FileFormat.NDJSON_GZIP),
    (".jsonl.gz", FileFormat.NDJSON_GZIP),
    (".ndjson", FileFormat.NDJSON),
    (".jsonl", FileFormat.NDJSON),
    (".avro", FileFormat.AVRO),
)


def check_landed_name(object_name: str, *, uri: str = "") -> str:
    """Return ``object_name`` if every path segment is a plain file or folder name.

    Refused: ``..`` or ``.`` segments, empty segments (``a//b``), a leading or trailing
    ``/``, backslashes, whitespace or control characters, and names over 1024 bytes.
    """
    where = uri or repr(object_name)
    if len(object_name.encode("utf-8", "surrogatepass")) > MAX_NAME_LENGTH:
        raise BadInputError(f"object name longer than {MAX_NAME_LENGTH} bytes", uri=where)
    for position, segment in enumerate(object_name.split("/"), start=1):
        if segment in ("", ".", ".."):
            raise BadInputError(
                f"object name has an empty, '.' or '..' path segment (segment {position})",
                uri=where,
            )
        if not _SAFE_SEGMENT.fullmatch(segment):
            raise BadInputError(
                f"object name segment {position} ({segment!r}) has characters other than "
                "letters, digits and . _ = + @ - (or starts with one of those symbols)",
                uri=where,
            )
    return object_name


def landed_dataset(object_name: str, *, uri: str = "") -> str:
    """The dataset of ``<dataset>/<file>``, if the whole name is acceptable.

    BadInputError (with the reason) for a refused segment, an object at the bucket's
    root, a first folder that is no valid dataset name, or the reserved pseudo-dataset.
    """
    where = uri or repr(object_name)
    check_landed_name(object_name, uri=where)
    dataset, separator, _ = object_name.partition("/")
    if not separator:
        raise BadInputError(
            "the object is at the bucket's root: upload to <dataset>/<file>", uri=where
        )
    if not DATASET_NAME_PATTERN.fullmatch(dataset):
        raise BadInputError(
            f"{dataset!r} is not a dataset name: use lowercase letters, digits, '-' or '_', "
            "starting with a letter, at most 63 characters",
            uri=where,
        )
    if dataset == INVALID_NAMES_DATASET:
        raise BadInputError(
            f"{dataset!r} is reserved for the runs of refused names: upload to another dataset",
            uri=where,
        )
    return dataset


def normalised_alias(object_name: str) -> str | None:
    """The name a path-cleaning store (the local emulator) keeps a refused name under.

    ``credit/../credit/a.csv`` and ``credit//a.csv`` become ``credit/a.csv``; None when
    cleaning changes nothing or leaves the bucket (``../x``).
    """
    cleaned = posixpath.normpath(object_name).lstrip("/")
    if cleaned in ("", ".", object_name) or cleaned == ".." or cleaned.startswith("../"):
        return None
    return cleaned


def file_format_of(object_name: str, *, uri: str = "") -> FileFormat:
    """The format the name's extension declares (case-insensitive)."""
    lowered = object_name.lower()
    for suffix, file_format in _SUFFIXES:
        if lowered.endswith(suffix):
            return file_format
    accepted = ", ".join(suffix for suffix, _ in _SUFFIXES)
    raise BadInputError(
        f"unsupported file extension: name the file with one of {accepted}",
        uri=uri or repr(object_name),
    )
