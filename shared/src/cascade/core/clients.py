"""Google Cloud clients built from Settings; pointed at the emulators when set."""

from __future__ import annotations

import google.cloud.pubsub_v1 as pubsub_v1
import google.cloud.storage as storage
import grpc
from google.auth.credentials import AnonymousCredentials
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from cascade.core.settings import Settings

__all__ = ["make_publisher", "make_storage_client", "make_subscriber"]


def make_storage_client(settings: Settings) -> storage.Client:
    if settings.storage_emulator_host:
        return storage.Client(
            project=settings.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": settings.storage_emulator_host},
        )
    return storage.Client(project=settings.project)


def make_publisher(settings: Settings) -> pubsub_v1.PublisherClient:
    """A publisher that sends each message at once (steps publish one or two)."""
    batch = pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.001)
    if settings.pubsub_emulator_host:
        channel = grpc.insecure_channel(settings.pubsub_emulator_host)
        return pubsub_v1.PublisherClient(
            batch_settings=batch, transport=PublisherGrpcTransport(channel=channel)
        )
    return pubsub_v1.PublisherClient(batch_settings=batch)


def make_subscriber(settings: Settings) -> pubsub_v1.SubscriberClient:
    if settings.pubsub_emulator_host:
        channel = grpc.insecure_channel(settings.pubsub_emulator_host)
        return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))
    return pubsub_v1.SubscriberClient()
