"""The trigger topology (``infra/topology.yaml``), typed.

Terraform reads the same file with ``yamldecode``; this module is how the local cloud
and the tests read it, so the functions, triggers and retry policies cannot differ
between Google Cloud and a laptop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cascade.core.errors import InvalidConfigError

__all__ = [
    "FUNCTION_DEPENDENCY_GROUPS",
    "FunctionDependencies",
    "FunctionSpec",
    "HttpTrigger",
    "RetryPolicy",
    "StorageTrigger",
    "TopicTrigger",
    "Topology",
    "load_topology",
]

STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"

# The optional-dependency groups of shared/pyproject.toml that a function may install
# (`dependencies:` of a topology entry): `function` for every step, `function-vertex`
# for the ones that call Vertex AI. A unit test keeps this list and pyproject in step.
FunctionDependencies = Literal["function", "function-vertex"]
FUNCTION_DEPENDENCY_GROUPS: tuple[str, ...] = get_args(FunctionDependencies)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    policy: Literal["retry", "do_not_retry"] = "retry"
    max_delivery_attempts: int = Field(5, ge=5, le=100)  # Pub/Sub's own bounds
    minimum_backoff_s: float = Field(10, ge=0, le=600)
    maximum_backoff_s: float = Field(600, ge=0, le=600)

    def backoff_s(self, failed_attempts: int) -> float:
        """Delay before the next delivery after ``failed_attempts`` failures."""
        exponent = max(failed_attempts - 1, 0)
        return float(min(self.minimum_backoff_s * 2.0**exponent, self.maximum_backoff_s))


class StorageTrigger(_Strict):
    type: Literal["storage"]
    bucket: str
    event_type: Literal["google.cloud.storage.object.v1.finalized"] = (
        "google.cloud.storage.object.v1.finalized"
    )


class TopicTrigger(_Strict):
    type: Literal["topic"]
    topic: str
    event_type: Literal["google.cloud.pubsub.topic.v1.messagePublished"] = (
        "google.cloud.pubsub.topic.v1.messagePublished"
    )


class HttpTrigger(_Strict):
    type: Literal["http"]


Trigger = Annotated[StorageTrigger | TopicTrigger | HttpTrigger, Field(discriminator="type")]


class FunctionDefaults(_Strict):
    retry: RetryPolicy = RetryPolicy()
    dead_letter_topic: str = "dead-letter"
    timeout_s: int = Field(540, gt=0, le=3600)
    memory: str = "512Mi"
    cpu: str = "1"
    max_instances: int = Field(10, gt=0)
    max_event_age_s: int = Field(86400, gt=0)


class FunctionSpec(_Strict):
    name: str
    source: str
    entry_point: str
    signature: Literal["cloudevent", "http"]
    trigger: Trigger
    retry: RetryPolicy
    dead_letter_topic: str
    timeout_s: int
    memory: str
    cpu: str
    max_instances: int
    max_event_age_s: int
    # What `cascade package-functions` installs with the function: the base dependencies
    # and this group. Every deployed function names one; None only in topologies that
    # are never packaged (tests and benchmarks run their functions from .venv).
    dependencies: FunctionDependencies | None = None

    @property
    def dead_letters_to(self) -> str | None:
        """Where undeliverable events go; None for the consumer of that very topic."""
        if isinstance(self.trigger, TopicTrigger) and self.trigger.topic == self.dead_letter_topic:
            return None
        return self.dead_letter_topic

    @model_validator(mode="after")
    def _signature_matches_trigger(self) -> FunctionSpec:
        is_http = isinstance(self.trigger, HttpTrigger)
        if is_http != (self.signature == "http"):
            raise ValueError(f"function {self.name}: signature {self.signature} vs trigger")
        return self


class _Described(_Strict):
    description: str = ""


class Topology(_Strict):
    runtime: str
    buckets: dict[str, _Described]
    topics: dict[str, _Described]
    defaults: FunctionDefaults
    functions: dict[str, FunctionSpec]

    @model_validator(mode="after")
    def _references_exist(self) -> Topology:
        for spec in self.functions.values():
            trigger = spec.trigger
            if isinstance(trigger, TopicTrigger) and trigger.topic not in self.topics:
                raise ValueError(f"function {spec.name}: unknown topic {trigger.topic!r}")
            if isinstance(trigger, StorageTrigger) and trigger.bucket not in self.buckets:
                raise ValueError(f"function {spec.name}: unknown bucket {trigger.bucket!r}")
            if spec.dead_letter_topic not in self.topics:
                raise ValueError(f"function {spec.name}: unknown dead-letter topic")
            if spec.dead_letters_to is None and spec.retry.policy == "retry":
                raise ValueError(
                    f"function {spec.name} consumes its own dead-letter topic: it must not "
                    "retry (policy do_not_retry), or its dead letters would loop"
                )
        return self

    def event_functions(self) -> list[FunctionSpec]:
        return [f for f in self.functions.values() if not isinstance(f.trigger, HttpTrigger)]


def parse_topology(document: dict[str, object]) -> Topology:
    """Build a Topology from the YAML document, applying ``defaults`` to each function."""
    defaults = dict(document.get("defaults") or {})  # type: ignore[call-overload]
    functions = {}
    for name, spec in dict(document.get("functions") or {}).items():  # type: ignore[call-overload]
        functions[name] = {**defaults, **spec, "name": name}
    try:
        return Topology.model_validate({**document, "functions": functions})
    except ValidationError as error:
        raise InvalidConfigError(f"invalid topology: {error}") from error


def load_topology(path: Path) -> Topology:
    """Read and validate the topology file at ``path``."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise InvalidConfigError(f"cannot read topology {path}: {error}") from error
    if not isinstance(document, dict):
        raise InvalidConfigError(f"topology {path} is not a mapping")
    return parse_topology(document)
