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
from cascade.core.settings import DATASET_NAME_PATTERN
from cascade.core.streams import StreamSpec

__all__ = [
    "FUNCTION_DEPENDENCY_GROUPS",
    "INVOKER_GROUPS",
    "Access",
    "ApiSpec",
    "Delivery",
    "FunctionDependencies",
    "FunctionSpec",
    "HttpTrigger",
    "InvokerGroup",
    "RetryPolicy",
    "ScheduleSpec",
    "ServiceAccountSpec",
    "StorageTrigger",
    "TopicTrigger",
    "Topology",
    "load_topology",
]

STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"

# The optional-dependency groups of shared/pyproject.toml that a function may install
# (`dependencies:` of a topology entry): `function` for every step (the adapter, the
# Google clients of cascade.core); `function-data` adds what reads data files,
# statistics and reports (pyarrow, numpy, fastavro, TensorFlow Metadata, Jinja2);
# `function-vertex` adds Vertex AI's client, `function-vertex-data` both;
# `function-batch` also loads the precomputed store (Bigtable); `function-warehouse`
# runs BigQuery jobs without Vertex AI (extract); `function-beam` /
# `function-vertex-beam` launch or follow Beam jobs on Dataflow (and read data). A unit
# test keeps this list and pyproject in step.
FunctionDependencies = Literal[
    "function",
    "function-data",
    "function-vertex",
    "function-vertex-data",
    "function-batch",
    "function-warehouse",
    "function-beam",
    "function-vertex-beam",
]
FUNCTION_DEPENDENCY_GROUPS: tuple[str, ...] = get_args(FunctionDependencies)


# How Google Cloud delivers a function's events (infra/locals.tf computes the same
# `delivery` for Terraform; tests/unit/test_push_delivery.py keeps the two in step):
#   http     - no events; called over HTTPS.
#   push     - a topic trigger that retries: a Terraform-owned Pub/Sub push subscription
#              posts the raw push body, which functions-framework turns into a CloudEvent.
#   eventarc - a storage trigger, or a topic trigger that must not retry: an Eventarc
#              trigger posts a binary-mode CloudEvent.
Delivery = Literal["http", "push", "eventarc"]


# Who may call an HTTP function: a group whose members Terraform takes from a variable
# (retrain: train_http_invokers; bless: bless_http_invokers, the force-bless approvers;
# review: review_http_invokers, who may release or discard quarantined files).
InvokerGroup = Literal["retrain", "bless", "review"]
INVOKER_GROUPS: tuple[str, ...] = get_args(InvokerGroup)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Access(_Strict):
    """What an identity's code does: Terraform grants exactly this, the local cloud
    refuses everything else. Names are the topology's logical names."""

    publish: tuple[str, ...] = ()  # topics: roles/pubsub.publisher
    read: tuple[str, ...] = ()  # buckets: roles/storage.objectViewer
    write: tuple[str, ...] = ()  # buckets: roles/storage.objectUser (implies read)
    # buckets: roles/storage.objectCreator (create new objects only: no get, list,
    # overwrite or delete)
    create: tuple[str, ...] = ()
    tables_read: tuple[str, ...] = ()  # warehouse datasets: roles/bigquery.dataViewer
    tables_write: tuple[str, ...] = ()  # warehouse datasets: roles/bigquery.dataEditor
    apis: tuple[str, ...] = ()  # keys of Topology.apis: their project roles
    act_as: tuple[str, ...] = ()  # keys of Topology.service_accounts: serviceAccountUser

    @property
    def readable(self) -> tuple[str, ...]:
        """Buckets whose objects it may get and list (``write`` includes reading)."""
        return tuple(dict.fromkeys((*self.read, *self.write)))

    @property
    def tables_readable(self) -> tuple[str, ...]:
        """Warehouse datasets whose tables it may read (``tables_write`` includes it)."""
        return tuple(dict.fromkeys((*self.tables_read, *self.tables_write)))


class ApiSpec(_Strict):
    description: str = ""
    roles: tuple[str, ...] = Field(min_length=1)


class ServiceAccountSpec(_Strict):
    """An identity that is not a function: the Vertex AI jobs' account (created by
    Terraform, with its own access), or one created elsewhere (``external``)."""

    description: str = ""
    access: Access = Access()
    external: bool = False

    @model_validator(mode="after")
    def _external_has_no_access(self) -> ServiceAccountSpec:
        if self.external and self.access != Access():
            raise ValueError("an external service account's grants are not managed here")
        if self.access.create:
            raise ValueError("create (objectCreator) is derived for functions only")
        return self


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


MEMORY_QUANTITY = r"^([1-9][0-9]*)(k|M|G|Mi|Gi)?$"
"""A function's memory: Terraform's ``available_memory`` ("Supported units are k, M, G, Mi,
Gi. If no unit is supplied the value is interpreted as bytes")."""


class FunctionDefaults(_Strict):
    retry: RetryPolicy = RetryPolicy()
    dead_letter_topic: str = "dead-letter"
    timeout_s: int = Field(540, gt=0, le=3600)
    memory: str = Field("512Mi", pattern=MEMORY_QUANTITY)
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
    memory: str = Field(pattern=MEMORY_QUANTITY)
    cpu: str
    max_instances: int
    max_event_age_s: int
    # What `cascade package-functions` installs with the function: the base dependencies
    # and this group. Every deployed function names one; None only in topologies that
    # are never packaged (tests and benchmarks run their functions from .venv).
    dependencies: FunctionDependencies | None = None
    # What the function's code does (its service account's grants); nothing by default.
    access: Access = Access()
    # HTTP functions: who may call them (None: nobody is granted roles/run.invoker).
    # Event functions are called by the invoker account only.
    invokers: InvokerGroup | None = None

    @property
    def dead_letters_to(self) -> str | None:
        """Where undeliverable events go; None for the consumer of that very topic."""
        if isinstance(self.trigger, TopicTrigger) and self.trigger.topic == self.dead_letter_topic:
            return None
        return self.dead_letter_topic

    @property
    def delivery(self) -> Delivery:
        """How events reach this function on Google Cloud (see ``Delivery``)."""
        if isinstance(self.trigger, HttpTrigger):
            return "http"
        if isinstance(self.trigger, TopicTrigger) and self.retry.policy == "retry":
            return "push"
        return "eventarc"

    @model_validator(mode="after")
    def _signature_matches_trigger(self) -> FunctionSpec:
        is_http = isinstance(self.trigger, HttpTrigger)
        if is_http != (self.signature == "http"):
            raise ValueError(f"function {self.name}: signature {self.signature} vs trigger")
        if not is_http and self.invokers is not None:
            raise ValueError(
                f"function {self.name}: only HTTP functions name invokers; events reach "
                "event functions through the invoker account"
            )
        return self


class _Described(_Strict):
    description: str = ""


_CRON_FIELD = r"[0-9A-Za-z*/,\-]+"


class ScheduleSpec(_Strict):
    """A message published on a timer: ``data`` as the JSON body, to ``topic``, at each
    tick of the unix-cron ``schedule`` (five fields, as Cloud Scheduler takes them)."""

    description: str = ""
    topic: str
    schedule: str = Field(pattern=rf"^{_CRON_FIELD}( {_CRON_FIELD}){{4}}$")
    time_zone: str = "Etc/UTC"
    data: dict[str, object] = Field(default_factory=dict)


class Topology(_Strict):
    runtime: str
    buckets: dict[str, _Described]
    topics: dict[str, _Described]
    warehouse: dict[str, _Described] = Field(default_factory=dict)  # BigQuery datasets
    apis: dict[str, ApiSpec] = Field(default_factory=dict)
    service_accounts: dict[str, ServiceAccountSpec] = Field(default_factory=dict)
    defaults: FunctionDefaults
    functions: dict[str, FunctionSpec]
    schedules: dict[str, ScheduleSpec] = Field(default_factory=dict)
    # Datasets fed by a stream (cascade.core.streams), keyed by dataset name.
    streams: dict[str, StreamSpec] = Field(default_factory=dict)

    def identities(self) -> dict[str, Access]:
        """Every identity with grants here: each function, and each service account."""
        accounts = {
            name: spec.access for name, spec in self.service_accounts.items() if not spec.external
        }
        return {**{name: spec.access for name, spec in self.functions.items()}, **accounts}

    def console_access(self) -> Access:
        """What the web console's account holds (infra/console.tf, ``console_access``),
        derived from the code its actions share: a retrain publishes the TrainRequest
        train-http does (and submits nothing), a force-bless is evaluate-http's, a release
        or discard review-http's, a rollback or promote calls the endpoints API."""
        evaluate, review = (
            spec.access if (spec := self.functions.get(name)) is not None else Access()
            for name in ("evaluate-http", "review-http")
        )
        return Access(
            publish=tuple(sorted({"train-requests", *evaluate.publish, *review.publish})),
            read=tuple(sorted(set(review.read))),
            write=tuple(sorted({*evaluate.write, *review.write})),
            apis=("vertex-ai-endpoints",) if "vertex-ai-endpoints" in self.apis else (),
        )

    def _check_access(self, who: str, access: Access) -> None:
        references = (
            ("topic", access.publish, self.topics),
            ("bucket", (*access.read, *access.write, *access.create), self.buckets),
            ("warehouse dataset", (*access.tables_read, *access.tables_write), self.warehouse),
            ("api", access.apis, self.apis),
            ("service account", access.act_as, self.service_accounts),
        )
        for kind, names, known in references:
            for name in names:
                if name not in known:
                    raise ValueError(
                        f"{who}: access names unknown {kind} {name!r} (known: "
                        f"{', '.join(sorted(known)) or 'none'})"
                    )
        if access.act_as and who.startswith("service account"):
            raise ValueError(f"{who}: only functions act as other service accounts")

    @model_validator(mode="after")
    def _references_exist(self) -> Topology:
        clashes = set(self.functions) & set(self.service_accounts)
        if clashes:
            raise ValueError(f"service accounts named like functions: {sorted(clashes)}")
        for name, account in self.service_accounts.items():
            self._check_access(f"service account {name}", account.access)
        for spec in self.functions.values():
            self._check_access(f"function {spec.name}", spec.access)
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
        for name, schedule in self.schedules.items():
            if schedule.topic not in self.topics:
                raise ValueError(f"schedule {name}: unknown topic {schedule.topic!r}")
        for dataset in self.streams:
            if not DATASET_NAME_PATTERN.fullmatch(dataset):
                raise ValueError(f"streams: {dataset!r} is not a dataset name")
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
