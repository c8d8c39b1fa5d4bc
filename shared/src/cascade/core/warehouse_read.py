"""The BigQuery Storage Read API's client, kept apart from ``cascade.core.warehouse`` so
that only what reads whole tables (batch scoring) imports and installs
``google-cloud-bigquery-storage``: every function imports ``warehouse``, none this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import google.cloud.bigquery as bigquery
import grpc

from cascade.core.bigquery_grants import guard_read_channel
from cascade.core.errors import InvalidConfigError
from cascade.core.settings import Settings
from cascade.core.warehouse import settings_of

if TYPE_CHECKING:
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient

__all__ = ["make_bigquery_read_client", "read_client_for"]

_UNLIMITED_MESSAGES = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]
"""As the Storage client's own channel: a ReadRows message can pass gRPC's 4 MB default."""


def make_bigquery_read_client(settings: Settings) -> BigQueryReadClient:
    """The Storage Read API's client: Google's endpoint, or the local BigQuery's gRPC
    port when ``BIGQUERY_EMULATOR_HOST`` is set (then ``BIGQUERY_STORAGE_EMULATOR_HOST``
    must be too: nothing falls back to the cloud). Close it with ``transport.close()``."""
    # Imported here: only what reads tables (batch scoring) installs the Storage client.
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
        BigQueryReadGrpcTransport,
    )

    if not settings.bigquery_emulator_host:
        return BigQueryReadClient()  # type: ignore[no-untyped-call]
    host = settings.bigquery_storage_emulator_host
    if not host:
        raise InvalidConfigError(
            "BIGQUERY_EMULATOR_HOST is set but BIGQUERY_STORAGE_EMULATOR_HOST (the local "
            "BigQuery's gRPC host:port, its Storage Read API) is not"
        )
    channel = grpc.insecure_channel(host.removeprefix("http://"), options=_UNLIMITED_MESSAGES)
    identity = settings.local_identity
    if identity is not None:
        channel = guard_read_channel(channel, identity)
    transport = BigQueryReadGrpcTransport(channel=channel)
    return BigQueryReadClient(transport=transport)  # type: ignore[no-untyped-call]


def read_client_for(client: bigquery.Client) -> BigQueryReadClient:
    """The Storage Read API's client for ``client`` (made by ``make_bigquery_client``):
    the same settings, so the same endpoint and identity."""
    settings = settings_of(client)
    if settings is None:
        raise ValueError(
            "this BigQuery client was not made by make_bigquery_client: pass a read client "
            "(make_bigquery_read_client)"
        )
    return make_bigquery_read_client(settings)
