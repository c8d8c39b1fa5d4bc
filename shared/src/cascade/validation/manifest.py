"""The accepted-files manifest: ``datasets/<d>/accepted/<file-id>.json``, one per file.

Written once, when a file is accepted and its statistics are in the baseline; the
transform step lists these to know which data to train on, and reads its own run's to
know whether the file brought value skews (``value_skews``: they ask for retraining).

Each manifest records the file's content digest (SHA-256 of its bytes), and
``datasets/<d>/accepted-content/<digest>.json`` (``ContentEntry``, created only once per
digest) names the file whose statistics are in the baseline for that content. An
identical re-upload (same bytes, any name or generation) finds the entry and is
accepted as a duplicate: its statistics are not merged again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict

from cascade.core.paths import DatasetPaths

__all__ = [
    "DIGEST_PREFIX",
    "AcceptedFile",
    "ContentEntry",
    "ValueSkew",
    "content_digest",
    "content_entry_name",
]

DIGEST_PREFIX = "sha256:"
_DIGEST_CHUNK_BYTES = 8 * 1024 * 1024


class ValueSkew(BaseModel):
    """A value skew an accepted file brought (a finding of severity ``retrain``).

    ``measure``, ``value`` and ``threshold`` are the drift measurement behind it, when
    there is one (empty for a finding without a measurement).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    check: str
    feature: str
    description: str
    measure: str = ""
    value: float | None = None
    threshold: float | None = None

    def brief(self) -> str:
        """E.g. ``drift in 'amount' (ks 0.21 > 0.1)``."""
        kind = self.check.replace("_", " ")
        subject = f"{kind} in {self.feature!r}" if self.feature else kind
        if self.measure and self.value is not None and self.threshold is not None:
            return f"{subject} ({self.measure} {self.value:.3g} > {self.threshold:.3g})"
        return subject


class AcceptedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file_id: str
    run_id: str
    uri: str
    generation: int
    num_examples: int
    stats_uri: str
    schema_uri: str
    accepted_at: datetime
    warnings: list[str] = []
    value_skews: list[ValueSkew] = []
    """What the file's validation found that retrains (docs/validation.md, "Policy")."""
    content_digest: str = ""
    """``sha256:<hex>`` of the file's bytes; empty in manifests written before digests."""
    duplicate_of: str | None = None
    """The file id whose statistics the baseline holds for this content, when this file is
    an identical re-upload that stands in for it (the earlier generation is gone)."""
    record_fields: list[str] | None = None
    """A stream file: the field names its stream's schema allowed when it was validated
    (records naming another were split out); transform leaves out the same records.
    None: any field (not a stream file, or no stream schema deployed)."""


class ContentEntry(BaseModel):
    """Which accepted file brought a content digest into the baseline (or stands for it)."""

    model_config = ConfigDict(extra="forbid")

    digest: str
    file_id: str
    run_id: str
    uri: str
    generation: int


def content_entry_name(dataset: str, digest: str) -> str:
    """``datasets/<d>/accepted-content/<hex>.json``: outside the manifests' prefix."""
    hex_digest = digest.removeprefix(DIGEST_PREFIX)
    if len(hex_digest) != 64 or any(c not in "0123456789abcdef" for c in hex_digest):
        raise ValueError(f"not a SHA-256 digest: {digest!r}")
    return f"{DatasetPaths(dataset).root}/accepted-content/{hex_digest}.json"


def content_digest(open_bytes: Callable[[], AbstractContextManager[BinaryIO]]) -> str:
    """``sha256:<hex>`` of the bytes ``open_bytes`` streams (read in chunks)."""
    digest = hashlib.sha256()
    with open_bytes() as stream:
        while chunk := stream.read(_DIGEST_CHUNK_BYTES):
            digest.update(chunk)
    return f"{DIGEST_PREFIX}{digest.hexdigest()}"
