"""Event functions have one invoker: the account Eventarc and Pub/Sub push deliver as.

On Google Cloud an event function's Cloud Run service grants ``roles/run.invoker`` to
the invoker account only (infra/functions.tf), and its triggers send that account's ID
token for the function's URL. The local event router sends the same, and the local
invoker check refuses the rest before the function runs: a forged event from anyone
else starts nothing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import requests

from cascade.cli.sample_data import sample_csv
from cascade.core.grants import service_account_email
from cascade.localcloud.eventarc import object_finalized_event
from cascade.localcloud.id_tokens import bearer_header
from tests.conftest import LocalCloud

pytestmark = pytest.mark.integration


def test_the_router_delivers_as_the_invoker_and_only_the_invoker_gets_in(
    local_cloud: LocalCloud,
) -> None:
    name = f"ds{uuid.uuid4().hex[:8]}/part-1.csv"
    generation = local_cloud.upload(name, sample_csv(20))
    run_id = local_cloud.run_id_for(name, generation)
    delivered = local_cloud.wait_for_run(run_id, lambda run: "validate" in run.steps)
    assert delivered.steps["validate"].attempts == 1  # the router's token got in at once

    blob = local_cloud.storage_client.bucket(local_cloud.settings.landing_bucket).get_blob(name)
    assert blob is not None
    forged_name = f"ds{uuid.uuid4().hex[:8]}/forged.csv"
    resource = {**blob._properties, "name": forged_name, "id": f"x/{forged_name}/1"}
    event = object_finalized_event(
        message_id=f"forged-{uuid.uuid4().hex}",
        object_resource=resource,
        fallback_time=datetime.now(UTC),
    )
    url, key = local_cloud.function_url("validate"), local_cloud.local.id_token_key_file
    validate_account = service_account_email("validate", local_cloud.local.runtime_settings())
    attempts = {
        "no token": ({}, 403),
        "the validate function's own account": (
            bearer_header(key, url, validate_account),
            403,
        ),
        "the invoker's token for another function": (
            local_cloud.event_source_auth("transform"),
            401,
        ),
    }

    for case, (auth, status) in attempts.items():
        headers = {**event.headers, **auth}
        response = requests.post(url, headers=headers, data=event.body, timeout=30)
        assert response.status_code == status, (case, response.text)
    forged_run = local_cloud.run_id_for(forged_name, int(resource["generation"]))
    assert local_cloud.ledger.get(forged_run) is None
