"""The console's alerts page: dead letters, and the runs whose steps raised alerts.

Dead letters are what the dead-letter recorder keeps (``dead-letters/<message id>.json``,
``cascade.steps.dead_letter``) and indexes newest first (``index/dead-letters/``,
``cascade.core.dead_letter_index``): a page is one listing of the index (``startOffset``
is the page token, as the run index's pages are) and one read of each listed letter, so
every page, the first and the hundredth, is newest first across all letters. A bucket
whose letters were all recorded before the index (``cascade console --reindex`` indexes
them) has an empty index: its pages are listings of ``dead-letters/`` itself, each page
sorted by time, as before the index.
Alerts themselves are only published to the ``alerts`` topic (for people's and on-call
tooling's subscriptions; nothing in the system stores them), so the page shows what
raised them: the newest failed and rejected runs, with their errors, from the run
index's state entries (one listing and a few reads each).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cascade.console.views import run_row, when
from cascade.core.dead_letter_index import (
    DEAD_LETTER_INDEX_PREFIX,
    DEAD_LETTER_PREFIX,
    record_of_entry,
)
from cascade.core.errors import BadRequestError
from cascade.core.run_index import READ_WORKERS, RunIndex
from cascade.core.runs import check_system_run_id
from cascade.core.store import StoredObject
from cascade.steps.dead_letter import DeadLetter

if TYPE_CHECKING:
    from cascade.console.app import ConsoleConfig

__all__ = [
    "DEAD_LETTER_PREFIX",
    "MAX_DATA_CHARS",
    "DeadLetterPage",
    "DeadLetterView",
    "alert_routes",
    "dead_letter_page",
]

MAX_DATA_CHARS = 2_000
ALERTING_STATES = ("failed", "rejected")
RUNS_PER_STATE = 10
RUNS_EXAMINED = 50
"""At most this many of a state's index entries are examined for its newest runs (each
listed run.json read once): the page stays fast however many runs there are; the
filtered runs list goes further."""

PageRenderer = Callable[..., Response]


class ConsoleParts(Protocol):
    config: ConsoleConfig


@dataclass
class DeadLetterView:
    name: str
    message_id: str = ""
    recorded_at: str = ""
    subscription: str = ""
    attempts: str = ""
    message_type: str = ""
    reason: str = ""
    dataset: str = ""
    run_id: str = ""
    run_link: bool = False
    data: str = ""
    unreadable: str = ""
    sort_key: str = ""


@dataclass
class DeadLetterPage:
    letters: list[DeadLetterView]
    next_token: str | None


def _encode_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _decode_token(token: str) -> str:
    """The name a page starts at: an index entry, or a record (a page of a bucket whose
    letters predate the index); a 400 for anything else."""
    if len(token) > 400:
        raise BadRequestError("page: invalid page token")
    try:
        name = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise BadRequestError("page: invalid page token") from error
    if not name.startswith((DEAD_LETTER_INDEX_PREFIX, DEAD_LETTER_PREFIX)):
        raise BadRequestError("page: the page token belongs to another listing")
    if not name.isprintable():
        raise BadRequestError("page: the page token belongs to another listing")
    return name


def _view(name: str, stored: StoredObject | None) -> DeadLetterView:
    view = DeadLetterView(name=name)
    if stored is None:
        view.unreadable = "deleted since it was listed"
        return view
    try:
        letter = DeadLetter.model_validate_json(stored.data)
    except ValidationError as error:
        view.unreadable = f"not a dead-letter record: {error.error_count()} invalid field(s)"
        return view
    attempts = "?" if letter.delivery_attempts is None else str(letter.delivery_attempts)
    last_error = f": {letter.last_error}" if letter.last_error else ""
    view.message_id = letter.message_id
    view.recorded_at = when(letter.recorded_at)
    view.sort_key = letter.recorded_at.astimezone(UTC).isoformat()
    view.subscription = letter.source_subscription
    view.attempts = attempts
    view.message_type = letter.message_type
    view.reason = f"dead-lettered after {attempts} delivery attempts{last_error}"
    view.dataset = letter.dataset or ""
    view.run_id = letter.run_id or ""
    view.run_link = _is_system_run_id(view.run_id)
    data = letter.data
    view.data = data if len(data) <= MAX_DATA_CHARS else data[: MAX_DATA_CHARS - 1] + "…"
    return view


def _is_system_run_id(run_id: str) -> bool:
    try:
        check_system_run_id(run_id)
    except BadRequestError:
        return False
    return True


def dead_letter_page(config: ConsoleConfig, size: int, token: str | None) -> DeadLetterPage:
    """``size`` letters newest first: one listing of the index (``size`` + 1 entries, from
    the token on) and one read of each letter shown, in parallel. With an empty index
    (letters recorded before it, not reindexed yet) the first page and its followers are
    listings of ``dead-letters/`` itself, each page sorted by the letters' times."""
    start = _decode_token(token) if token else None
    if start is None or start.startswith(DEAD_LETTER_INDEX_PREFIX):
        page = _page_of(config, DEAD_LETTER_INDEX_PREFIX, size, start)
        if page.letters or page.next_token or start is not None:
            return page
    page = _page_of(config, DEAD_LETTER_PREFIX, size, start)
    page.letters.sort(key=lambda letter: letter.sort_key, reverse=True)
    return page


def _page_of(config: ConsoleConfig, prefix: str, size: int, start: str | None) -> DeadLetterPage:
    """A page of the listing under ``prefix``: index entries (each naming its record)
    or the records themselves."""
    names = list(islice(config.lister.list_from(prefix, start, size + 1), size + 1))
    shown, following = names[:size], names[size:]
    if prefix == DEAD_LETTER_INDEX_PREFIX:
        records = [record for record in map(record_of_entry, shown) if record is not None]
    else:
        records = shown
    with ThreadPoolExecutor(READ_WORKERS) as pool:  # the reads overlap, as the index's do
        letters = list(pool.map(lambda name: _view(name, config.artifacts.read(name)), records))
    next_token = _encode_token(following[0]) if following else None
    return DeadLetterPage(letters, next_token)


def alert_routes(console: ConsoleParts, page: PageRenderer) -> list[Route]:
    """``/alerts`` (registered by ``create_app``)."""
    config = console.config
    index = RunIndex(config.artifacts, config.lister, scan_limit=RUNS_EXAMINED)

    def alerts(request: Request) -> Response:
        token = request.query_params.get("page") or None
        letters = dead_letter_page(config, config.page_size, token)
        alerting: dict[str, list[dict[str, Any]]] = {}
        if token is None:  # on the first page only; the filtered runs list goes further
            for state in ALERTING_STATES:
                runs = index.page(size=RUNS_PER_STATE, state=state).runs
                alerting[state] = [run_row(run) for run in runs]
        return page(
            request,
            "alerts.html.j2",
            title="Alerts and dead letters",
            letters=letters.letters,
            next_url=f"/alerts?page={letters.next_token}" if letters.next_token else None,
            first_url="/alerts" if token else None,
            alerting=alerting,
            examined=RUNS_EXAMINED,
        )

    return [Route("/alerts", alerts)]
