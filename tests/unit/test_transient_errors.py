"""The one classifier of transient infrastructure errors, and its mapping to TransientError."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc

from cascade.core.errors import (
    TRANSIENT_GOOGLE_ERRORS,
    BadInputError,
    ConcurrentUpdateError,
    TransientError,
    is_transient,
    transient_errors,
)


@pytest.mark.parametrize(
    "error",
    [
        gexc.TooManyRequests("quota"),
        gexc.ResourceExhausted("quota"),
        gexc.InternalServerError("oops"),
        gexc.BadGateway("proxy"),
        gexc.ServiceUnavailable("later"),
        gexc.GatewayTimeout("slow"),
        gexc.DeadlineExceeded("slow"),
        ConnectionError("reset"),
        TimeoutError("timed out"),
        TransientError("retry me"),
        ConcurrentUpdateError("lost races"),
    ],
)
def test_transient_errors_are_recognised(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        gexc.NotFound("gone"),
        gexc.PreconditionFailed("changed"),
        gexc.InvalidArgument("bad"),
        gexc.PermissionDenied("no"),
        gexc.Unauthenticated("who"),
        gexc.MethodNotImplemented("never"),
        ValueError("bug"),
        BadInputError("bad row"),
    ],
)
def test_other_errors_are_not_transient(error: BaseException) -> None:
    assert not is_transient(error)


def test_the_google_list_is_what_the_classifier_uses() -> None:
    for error_type in TRANSIENT_GOOGLE_ERRORS:
        assert is_transient(error_type("x"))


def test_transient_errors_become_transient_error_naming_the_action() -> None:
    cause = gexc.ServiceUnavailable("try later")

    with (
        pytest.raises(TransientError, match="reading gs://b/o: 503 try later") as raised,
        transient_errors("reading gs://b/o"),
    ):
        raise cause

    assert raised.value.__cause__ is cause


def test_other_errors_pass_through_unchanged() -> None:
    with pytest.raises(gexc.NotFound), transient_errors("reading gs://b/o"):
        raise gexc.NotFound("gone")
    with pytest.raises(BadInputError), transient_errors("reading gs://b/o"):
        raise BadInputError("bad row")


def test_also_widens_what_is_transient_there() -> None:
    with (
        pytest.raises(TransientError, match="publishing to t: 404 no topic"),
        transient_errors("publishing to t", also=(gexc.GoogleAPICallError,)),
    ):
        raise gexc.NotFound("no topic")


def test_nothing_happens_without_an_error() -> None:
    with transient_errors("reading gs://b/o"):
        value = 1
    assert value == 1
