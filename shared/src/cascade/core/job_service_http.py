"""One call to the local job service (Vertex AI's stand-in), its answers mapped to
Cascade's errors: used by the training jobs' runner and the batch jobs' runner alike."""

from __future__ import annotations

from typing import Any

import requests

from cascade.core.errors import BadRequestError, InvalidConfigError, TransientError, UnknownJobError

__all__ = ["call_job_service"]


def call_job_service(
    session: requests.Session,
    base_url: str,
    method: str,
    path: str,
    *,
    timeout_s: float,
    refused: str = "the job",
    **kwargs: Any,
) -> dict[str, Any]:
    """The JSON object the service answers; 404 is ``UnknownJobError``, 400 (what it
    refused: ``refused``) ``InvalidConfigError``, 429 and 5xx transient."""
    url = f"{base_url}{path}"
    try:
        response = session.request(method, url, timeout=timeout_s, **kwargs)
    except requests.RequestException as error:
        raise TransientError(f"local job service {method} {path}: {error}") from error
    if response.status_code == 404:
        raise UnknownJobError(f"local job service has no {path.rsplit('/', 1)[-1]}")
    if response.status_code == 400:
        raise InvalidConfigError(f"local job service refused {refused}: {response.text}")
    if response.status_code >= 500 or response.status_code == 429:
        raise TransientError(f"local job service {method} {path}: {response.status_code}")
    if response.status_code >= 300:
        raise BadRequestError(f"local job service {method} {path}: {response.text}")
    payload = response.json()
    if not isinstance(payload, dict):
        raise TransientError(f"local job service {method} {path}: not a JSON object")
    return payload
