"""The console's actions: each calls the same code as the CLI, as a named caller, with a
reason that is recorded on the run.

The caller is passed in (``Caller``): locally the console acts as the local user; on
Cloud Run a later slice derives it from the signed-in identity and checks its role here,
before anything is published.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cascade.core.bus import MessageBus
from cascade.core.errors import BadRequestError
from cascade.core.messages import MAX_REASON_CHARS, TrainRequest
from cascade.core.paths import check_dataset_name
from cascade.core.runs import run_id_for_request

__all__ = ["MAX_WHY_CHARS", "Caller", "RetrainRequested", "request_retrain"]

MAX_WHY_CHARS = 500
"""A person's reason; the recorded reason adds who asked, within ``MAX_REASON_CHARS``."""
MAX_CALLER_CHARS = 200


@dataclass(frozen=True)
class Caller:
    """Who acts: ``name`` is recorded on the run (``user@host`` locally)."""

    name: str

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > MAX_CALLER_CHARS or not self.name.isprintable():
            raise BadRequestError("a caller is named by 1 to 200 printable characters")


@dataclass(frozen=True)
class RetrainRequested:
    dataset: str
    request_id: str
    run_id: str
    """The run the request starts (``run_id_for_request``): the same form sent twice
    names the same run, and the train step starts it once."""
    message_id: str


def _why(reason: str) -> str:
    text = " ".join(reason.split())
    if not text:
        raise BadRequestError("reason: say why the dataset should be retrained")
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
