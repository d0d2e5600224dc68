"""Contracts: upcasting, personal-data marking, subjects, and the AsyncAPI document."""

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from antechamber.asyncapi import document
from contracts import (
    Event,
    EventEnvelope,
    EventRegistry,
    UnknownEventError,
    event_subject,
    personal_data,
    personal_fields,
)
from contracts.ids import ClinicId
from tests.support import envelope_for

ROOT = Path(__file__).resolve().parent.parent

registry = EventRegistry("example")


@registry.register
class ClientRegistered(Event):
    """v3: the name is split in two and an email was added in v2."""

    schema_version = 3
    client_id: str
    given_name: str = personal_data(description="What the client is called.")
    family_name: str = personal_data(description="Family name.")
    email: str | None = personal_data(default=None, description="Where invitations go.")


@registry.upcaster("ClientRegistered", from_version=1)
def _add_email(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "email": None}


@registry.upcaster("ClientRegistered", from_version=2)
def _split_name(data: dict[str, Any]) -> dict[str, Any]:
    given, _, family = data.pop("name").partition(" ")
    return {**data, "given_name": given, "family_name": family}


def test_an_old_version_is_upcast_step_by_step() -> None:
    event = registry.decode("ClientRegistered", 1, {"client_id": "k1", "name": "Ada Lovelace"})
    assert event == ClientRegistered(
        client_id="k1", given_name="Ada", family_name="Lovelace", email=None
    )


def test_a_version_newer_than_this_build_is_refused_with_a_reason() -> None:
    with pytest.raises(UnknownEventError, match="newer than this build"):
        registry.decode("ClientRegistered", 4, {})


def test_an_unknown_type_is_refused() -> None:
    with pytest.raises(UnknownEventError, match="no event type 'Nope'"):
        registry.decode("Nope", 1, {})


def test_a_missing_upcaster_is_named() -> None:
    sparse = EventRegistry("sparse")

    @sparse.register
    class Moved(Event):
        schema_version = 2
        to: str

    with pytest.raises(UnknownEventError, match="no upcaster for Moved v1 -> v2"):
        sparse.decode("Moved", 1, {})


def test_personal_data_is_marked_in_the_schema_and_the_envelope() -> None:
    assert personal_fields(ClientRegistered) == {"given_name", "family_name", "email"}
    schema = EventEnvelope[ClientRegistered].model_json_schema()
    fields = schema["$defs"]["ClientRegistered"]["properties"]
    assert fields["email"]["x-personal-data"] is True
    assert "x-personal-data" not in fields["client_id"]


def test_events_are_frozen_and_reject_unknown_fields() -> None:
    event = ClientRegistered(client_id="k", given_name="A", family_name="B")
    with pytest.raises(ValidationError):
        event.client_id = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        ClientRegistered(client_id="k", given_name="A", family_name="B", extra=1)  # type: ignore[call-arg]


@pytest.mark.parametrize("bad", ["a.b", "a*", ">", "", "x" * 65, "with space"])
def test_a_clinic_id_must_be_one_subject_token(bad: str) -> None:
    from pydantic import TypeAdapter

    with pytest.raises(ValidationError):
        TypeAdapter(ClinicId).validate_python(bad)


def test_subjects_follow_the_documented_shape() -> None:
    assert event_subject("c1", "links", "LinkIssued") == "antechamber.c1.links.LinkIssued"


def test_envelope_round_trips_through_json() -> None:
    from tests.support import NoteTaken

    envelope = envelope_for(NoteTaken(n=3), service="notes")
    assert EventEnvelope[dict[str, Any]].model_validate_json(envelope.model_dump_json()) == envelope


def test_the_committed_asyncapi_document_is_current() -> None:
    committed = (ROOT / "docs" / "asyncapi.yaml").read_text()
    assert committed == document(), "docs/asyncapi.yaml is stale: run `antechamber asyncapi`"
