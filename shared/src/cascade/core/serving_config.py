"""The ``serving`` section of a dataset's pipeline config: how its model server answers.

- ``dynamic`` (default): the model answers every request;
- ``static``: answers are looked up in the precomputed store only (a batch prediction job
  scored every key); a key without an answer is a 404 naming it;
- ``hybrid``: the precomputed answer when there is one (the most requested keys, the
  "head"), else the model (the long tail).

The deploy step records the mode in ``models/<dataset>/serving.json``; the model server
reads it there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SERVING_MODES", "ServingConfig", "ServingMode"]

ServingMode = Literal["dynamic", "static", "hybrid"]
SERVING_MODES: tuple[str, ...] = ("dynamic", "static", "hybrid")


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: ServingMode = Field(
        "dynamic", description="dynamic (the model), static (lookup only) or hybrid."
    )
    head_keys: int | None = Field(
        None,
        ge=1,
        le=100_000_000,
        description="hybrid only: how many of the most requested keys to precompute "
        "(unset: every key the batch prediction scores).",
    )

    @model_validator(mode="after")
    def _head_only_for_hybrid(self) -> ServingConfig:
        if self.head_keys is not None and self.mode != "hybrid":
            raise ValueError(
                f"head_keys applies to mode hybrid only (mode is {self.mode}); "
                "static precomputes every key, dynamic none"
            )
        return self
