"""Google Cloud clients built from Settings; pointed at the emulators when set.

Under the local cloud a process has an identity (``Settings.local_identity``): its
clients then refuse, at the transport below every Cascade call, what the identity's
topology grants do not allow, with the errors Google returns (``cascade.core.grants``).
"""

from __future__ import annotations

import google.cloud.pubsub_v1 as pubsub_v1
import google.cloud.storage as storage
import grpc
import requests
from google.auth.credentials import AnonymousCredentials
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from cascade.core.grants import guard_channel, guard_session
from cascade.core.settings import Settings
from cascade.core.store import new_storage_client

__all__ = ["make_publisher", "make_storage_client", "make_subscriber"]


def make_storage_client(settings: Settings) -> storage.Client:
    if settings.storage_emulator_host:
        identity = settings.local_identity
        return new_storage_client(
            project=settings.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": settings.storage_emulator_host},
            _http=None if identity is None else guard_session(requests.Session(), identity),
        )
    return new_storage_client(project=settings.project)


def _emulator_channel(settings: Settings, host: str) -> grpc.Channel:
    channel = grpc.insecure_channel(host)
    identity = settings.local_identity
    return channel if identity is None else guard_channel(channel, identity)


def make_publisher(settings: Settings) -> pubsub_v1.PublisherClient:
    """A publisher that sends each message at once (steps publish one or two)."""
    batch = pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.001)
    if settings.pubsub_emulator_host:
        channel = _emulator_channel(settings, settings.pubsub_emulator_host)
        return pubsub_v1.PublisherClient(
            batch_settings=batch, transport=PublisherGrpcTransport(channel=channel)
        )
    return pubsub_v1.PublisherClient(batch_settings=batch)


def make_subscriber(settings: Settings) -> pubsub_v1.SubscriberClient:
    if settings.pubsub_emulator_host:
        channel = _emulator_channel(settings, settings.pubsub_emulator_host)
        return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))
    return pubsub_v1.SubscriberClient()
