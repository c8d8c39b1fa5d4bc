"""The console's actions: each calls the same code as the CLI, as a named caller, with a
reason that is recorded on the run.

The caller is passed in (``Caller``): locally the console acts as the local user, who
may do everything; on Cloud Run it is the signed-in caller (``cascade.console.iap``) with
the roles its IAP identity holds (``cascade.console.roles``), and each action checks its
role first, before anything is read, published or recorded.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from starlette.exceptions import HTTPException

from cascade.console.roles import ROLE_VARIABLES, Role
from cascade.core.bus import MessageBus
from cascade.core.errors import BadRequestError
from cascade.core.messages import MAX_REASON_CHARS, TrainRequest
from cascade.core.paths import check_dataset_name
from cascade.core.runs import RunLedger, check_system_run_id, run_id_for_request
from cascade.core.store import ArtifactStore
from cascade.deploy.deployer import Deployer
from cascade.evaluation.override import force_bless
from cascade.evaluation.record import EvaluationRecord

__all__ = [
    "ALL_ROLES",
    "MAX_WHY_CHARS",
    "Caller",
    "RetrainRequested",
    "Role",
    "RoleRequiredError",
    "RolledBack",
    "force_bless_run",
    "promote_version",
    "request_retrain",
    "roll_back_serving",
]

MAX_WHY_CHARS = 500
"""A person's reason; the recorded reason adds who asked, within ``MAX_REASON_CHARS``."""
MAX_CALLER_CHARS = 200
MIN_BLESS_WHY_CHARS = 3
"""``Override.reason``'s minimum: a force-bless needs a reason that says something."""


ALL_ROLES = frozenset(Role)


class RoleRequiredError(HTTPException):
    """403: the caller lacks the action's role. Raised before the action does anything,
    so a refused action is recorded nowhere (the page says which role it needs)."""

    def __init__(self, role: Role, caller: str, detail: str = "") -> None:
        message = detail or (
            f"this action needs the {role.value} role: {caller} is not listed in the "
            f"Terraform variable {ROLE_VARIABLES[role]}"
        )
        super().__init__(403, message)
        self.role = role


@dataclass(frozen=True)
class Caller:
    """Who acts: ``name`` is recorded on the run (``user@host`` locally, the IAP email on
    Cloud Run); ``roles`` is what it may do. A caller built without roles is the local
    user, who may do everything (``cascade console``); the Cloud Run console always
    passes the roles its identity holds."""

    name: str
    roles: frozenset[Role] = ALL_ROLES

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > MAX_CALLER_CHARS or not self.name.isprintable():
            raise BadRequestError("a caller is named by 1 to 200 printable characters")

    def require(self, role: Role) -> None:
        """RoleRequiredError (403) unless the caller holds ``role``."""
        if role not in self.roles:
            raise RoleRequiredError(role, self.name)


@dataclass(frozen=True)
class RetrainRequested:
    dataset: str
    request_id: str
    run_id: str
    """The run the request starts (``run_id_for_request``): the same form sent twice
    names the same run, and the train step starts it once."""
    message_id: str


def _why(reason: str, what: str = "the dataset should be retrained") -> str:
    text = " ".join(reason.split())
    if not text:
        raise BadRequestError(f"reason: say why {what}")
    if len(text) > MAX_WHY_CHARS:
        raise BadRequestError(f"reason: at most {MAX_WHY_CHARS} characters (got {len(text)})")
    return text


def request_retrain(
    bus: MessageBus, caller: Caller, dataset: str, reason: str, form_id: str
) -> RetrainRequested:
    """Publish a TrainRequest for ``dataset`` to train-requests, as ``cascade train``
    does; the run's trigger records who asked and why.

    ``form_id`` identifies the submitted form (a random value the page rendered): it is
    hashed into the request id, so a form submitted twice asks for one run.
    """
    caller.require(Role.RETRAIN)
    check_dataset_name(dataset)
    why = _why(reason)
    if not 16 <= len(form_id) <= 128:
        raise BadRequestError("form_id: reload the page and submit the form again")
    digest = hashlib.sha256(f"{caller.name}\n{form_id}".encode()).hexdigest()[:32]
    request_id = f"console-{digest}"
    recorded = f"retrain by {caller.name} from the console: {why}"[:MAX_REASON_CHARS]
    message_id = bus.publish(TrainRequest(dataset=dataset, request_id=request_id, reason=recorded))
    return RetrainRequested(
        dataset, request_id, run_id_for_request(dataset, request_id), message_id
    )


@dataclass(frozen=True)
class RolledBack:
    dataset: str
    rolled_back: str
    serving: str


def roll_back_serving(deployer: Deployer, caller: Caller, dataset: str, reason: str) -> RolledBack:
    """``cascade rollback``'s call (``Deployer.restore_previous``): the serving version is
    rolled back and the previous deployed one takes all traffic; serving.json's history
    records who and why. Refused (BadRequestError, the CLI's message) when nothing or
    only one version is deployed."""
    caller.require(Role.DEPLOY)
    check_dataset_name(dataset)
    why = _why(reason, "the serving version should be rolled back")
    rolled_back, serving = deployer.restore_previous(dataset, actor=caller.name, reason=why)
    return RolledBack(dataset, rolled_back, serving)


_VERSION = re.compile(r"[0-9]{1,9}")


def promote_version(
    deployer: Deployer, caller: Caller, dataset: str, version: str, reason: str
) -> str:
    """What the deploy step's rollout does once a canary passes (``Deployer.promote``):
    all traffic to ``version``, the other deployed versions stand by; serving.json's
    history records who and why. BadRequestError when ``version`` is not deployed."""
    caller.require(Role.DEPLOY)
    check_dataset_name(dataset)
    if not _VERSION.fullmatch(version):
        raise BadRequestError("version: a version number (1, 2, ...)")
    why = _why(reason, f"version {version} should take all traffic")
    deployer.promote(dataset, version, actor=caller.name, reason=why)
    return version


def force_bless_run(
    artifacts: ArtifactStore,
    bus: MessageBus,
    caller: Caller,
    run_id: str,
    reason: str,
    now: datetime,
) -> EvaluationRecord:
    """``cascade bless``'s call (``cascade.evaluation.override.force_bless``) with
    ``via="console"``: refused with its messages (``CannotBlessError``) when the run has no
    evaluation, is already blessed or its model cannot be served."""
    caller.require(Role.BLESS)
    check_system_run_id(run_id)
    why = _why(reason, "this model may ship")
    if len(why) < MIN_BLESS_WHY_CHARS:
        raise BadRequestError(f"reason: at least {MIN_BLESS_WHY_CHARS} characters")
    return force_bless(
        artifacts=artifacts,
        ledger=RunLedger(artifacts),
        bus=bus,
        run_id=run_id,
        actor=caller.name,
        reason=why,
        via="console",
        now=now,
    )
