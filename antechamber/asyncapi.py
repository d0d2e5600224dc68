"""The AsyncAPI document for integrators, generated from the services' FastStream brokers."""

import yaml
from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI

from antechamber.catalog import definitions
from runtime.consumer import attach
from runtime.service import document_events

DESCRIPTION = """\
Events of every Antechamber service, published to JetStream after they commit.

Subjects are `antechamber.<clinic_id>.<service>.<EventType>`, one stream per service
(`ANTECHAMBER_<SERVICE>`). Every message's body is an event envelope; the header `Nats-Msg-Id`
equals `event_id`, and `traceparent` carries the W3C trace context. Delivery is at least once:
de-duplicate by `event_id`. Fields marked `x-personal-data` identify a person.
"""


def document() -> str:
    broker = NatsBroker("nats://localhost:4222")
    for service in definitions():
        document_events(broker, service)
        for consumer in service.consumers:
            attach(broker, consumer, service=service.name)
    spec = AsyncAPI(
        broker,
        title="Antechamber events",
        version="0.1.0",
        description=DESCRIPTION,
        schema_version="3.0.0",
    )
    # Sorted, because FastStream's channel order varies between runs and the committed file
    # must be byte-for-byte reproducible.
    return str(yaml.safe_dump(spec.to_specification().to_jsonable(), sort_keys=True, width=100))
