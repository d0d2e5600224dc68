"""What a consumer publishes when it gives up on a message."""

from datetime import datetime

from pydantic import BaseModel, Field


def deadletter_subject(service: str) -> str:
    return f"antechamber.deadletter.{service}"


class DeadLetter(BaseModel):
    """A message a consumer could not handle, published to ``antechamber.deadletter.<service>``.

    The original bytes are kept (base64) so the message can be inspected and replayed once the
    cause is fixed; they may hold personal data, so the dead-letter stream is as private as the
    service's own stream.
    """

    service: str = Field(description="Service whose consumer gave up.")
    consumer: str = Field(description="Durable consumer name.", examples=["links-scheduling"])
    reason: str = Field(
        description="Why, in words an operator understands.",
        examples=["handler failed 5 times: ConnectionError: ..."],
    )
    kind: str = Field(description="unparseable | handler_failed | unknown_event")
    subject: str = Field(description="Subject the message was published to.")
    stream_sequence: int | None = Field(default=None, description="Sequence in the source stream.")
    deliveries: int = Field(description="How many times it was delivered.")
    event_id: str | None = Field(default=None, description="Nats-Msg-Id of the message, if any.")
    payload_b64: str = Field(description="The original message body, base64.")
    dead_lettered_at: datetime
