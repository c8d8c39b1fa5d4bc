"""The accepted-files manifest: ``datasets/<d>/accepted/<file-id>.json``, one per file.

Written once, when a file is accepted and its statistics are in the baseline; the
transform step lists these to know which data to train on.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

__all__ = ["AcceptedFile"]


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
