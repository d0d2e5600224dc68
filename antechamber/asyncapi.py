"""The AsyncAPI document for integrators, generated from the services' FastStream brokers."""

from typing import Any

import yaml
from faststream.nats import NatsBroker
from faststream.nats.security import NatsCredentials
from faststream.specification import AsyncAPI

from antechamber.catalog import definitions
from runtime.consumer import attach
from runtime.service import document_events

DESCRIPTION = """\
Events of every Antechamber service, published to JetStream after they commit.

Subjects are `antechamber.<clinic_id>.<service>.<EventType>`, one stream per service
(`ANTECHAMBER_<SERVICE>`). Every message's body is an event envelope; the header `Nats-Msg-Id`
equals `event_id`, and `traceparent` carries the W3C trace context. Delivery is at least once:
de-duplicate by `event_id`. Fields marked `x-personal-data` identify a person. Those also
marked `x-sealed` carry the value sealed for that person (`pd1.<person id>.<...>`), which no
integrator can open and which becomes unreadable everywhere when the person is erased
(`ClientErased`): read the person through the clinic API (`GET /v1/clients/{id}`) when needed.
See docs/architecture.md, "Personal data on the bus".

Every connection authenticates. An integrator connects with a clinic's integrator credential
(see `integrator-credentials`) and reads that clinic's events only: the core subjects
`antechamber.<clinic_id>.>`, or the durable pull consumer made for the credential on each
stream, named after it, to which it binds (it creates no consumer). See docs/integrators.md.
"""


class IntegratorCredentials(NatsCredentials):
    """How integrators authenticate, as the document states it (this broker never connects)."""

    def get_requirement(self) -> list[dict[str, Any]]:
        return [{"integrator-credentials": []}]

    def get_schema(self) -> dict[str, dict[str, Any]]:
        return {
            "integrator-credentials": {
                "type": "asymmetricEncryption",
                "description": (
                    "A NATS user JWT, signed for one clinic, and the nkey whose seed signs the "
                    "server's challenge (a .creds file). A clinic issues it with "
                    "`POST /v1/integrator-credentials` on the scheduling API and revokes it "
                    "with `DELETE`. Connect with `inbox_prefix=_INBOX_<nats_user>`; it may "
                    "subscribe to `antechamber.<clinic_id>.>` and pull from the JetStream "
                    "consumers made for it (named `<nats_user>`, filtered to those subjects, "
                    "one per stream), and nothing else."
                ),
                "x-nats-auth": "jwt-nkey",
                "x-nats-credential-source": "credentials-file",
            }
        }


def document() -> str:
    broker = NatsBroker("nats://localhost:4222", security=IntegratorCredentials("integrator.creds"))
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
