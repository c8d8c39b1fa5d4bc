"""Publishing step messages to Pub/Sub, waiting for the server's acknowledgement."""

from __future__ import annotations

import google.cloud.pubsub_v1 as pubsub_v1
from google.api_core import exceptions as gexc

from cascade.core.errors import transient_errors
from cascade.core.messages import StepMessage
from cascade.core.settings import Settings

__all__ = ["MessageBus"]


class MessageBus:
    """Publishes StepMessages to ``<topic_prefix><message.TOPIC>`` of the project."""

    def __init__(self, publisher: pubsub_v1.PublisherClient, settings: Settings) -> None:
        self._publisher = publisher
        self._settings = settings

    def publish(self, message: StepMessage) -> str:
        """Publish and wait until Pub/Sub has stored it; returns the message id.

        A step returns success only after its next event is durable, so an
        acknowledged event never leaves the chain broken.
        """
        topic = self._settings.topic_path(message.TOPIC)
        data = message.model_dump_json().encode()
        # Any API error is worth a redelivery here: the message must get out.
        with transient_errors(f"publishing to {topic}", also=(gexc.GoogleAPICallError,)):
            future = self._publisher.publish(topic, data, **message.attributes())
            return str(future.result(timeout=self._settings.publish_timeout_s))
