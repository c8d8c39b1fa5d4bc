"""Errors of the job runners."""

from __future__ import annotations

from cascade.errors import BadRequestError

__all__ = ["UnknownJobError"]


class UnknownJobError(BadRequestError):
    """The runner has no job of that name (never submitted there, or since deleted)."""
