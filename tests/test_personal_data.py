"""Personal values sealed per clinic and person (runtime/personal_data.py): no server needed."""

from uuid import uuid4

import pytest

from contracts.scheduling import ClientAdded, Contact
from runtime.personal_data import (
    is_sealed,
    new_person_key,
    open_data,
    people_in,
    person_of,
    seal,
    seal_model,
    unseal,
)
from runtime.sealing import SealingError

CLINIC = "c_a"
OTHER_CLINIC = "c_b"
EMAIL = "grace.hopper@example.org"


def test_a_sealed_value_opens_with_its_key_for_its_clinic() -> None:
    person, key = uuid4(), new_person_key()
    sealed = seal(EMAIL, key, CLINIC, person)
    assert sealed.startswith(f"pd1.{person}.")
    assert EMAIL not in sealed
    assert "grace" not in sealed
    assert person_of(sealed) == person
    assert is_sealed(sealed)
    assert unseal(sealed, key, CLINIC) == EMAIL
    assert seal(EMAIL, key, CLINIC, person) != sealed, "a fresh nonce every time"
    assert unseal(seal("Zoë Ñúñez", key, CLINIC, person), key, CLINIC) == "Zoë Ñúñez"


def test_a_value_sealed_for_one_clinic_never_opens_for_another() -> None:
    person, key = uuid4(), new_person_key()
    sealed = seal(EMAIL, key, CLINIC, person)
    with pytest.raises(SealingError) as refused:
        unseal(sealed, key, OTHER_CLINIC)
    assert EMAIL not in str(refused.value)


def test_a_value_moved_to_another_person_or_altered_does_not_open() -> None:
    person, key = uuid4(), new_person_key()
    sealed = seal(EMAIL, key, CLINIC, person)
    # The same ciphertext presented as someone else's: the person is bound in.
    moved = sealed.replace(str(person), str(uuid4()))
    with pytest.raises(SealingError):
        unseal(moved, key, CLINIC)
    body = sealed.rsplit(".", 1)[1]
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(SealingError):
        unseal(sealed.rsplit(".", 1)[0] + "." + flipped, key, CLINIC)
    with pytest.raises(SealingError):
        unseal(sealed[:-10], key, CLINIC)
    with pytest.raises(SealingError):
        unseal(EMAIL, key, CLINIC)


def test_without_its_key_a_value_is_gone() -> None:
    """Erasure is deleting the key: no other key opens the value, and reading code keeps it
    sealed rather than failing."""
    person, key = uuid4(), new_person_key()
    sealed = seal(EMAIL, key, CLINIC, person)
    with pytest.raises(SealingError):
        unseal(sealed, new_person_key(), CLINIC)
    assert open_data({"email": sealed}, {}, CLINIC) == {"email": sealed}
    assert open_data({"email": sealed}, {person: new_person_key()}, CLINIC) == {"email": sealed}


def test_plain_values_are_told_from_sealed_ones() -> None:
    for plain in (EMAIL, "pd1", "pd1.not-a-uuid.abc", "pd1.", None, 3, "Dr pd1 Smith"):
        assert person_of(plain) is None
        assert not is_sealed(plain)


def test_an_event_is_sealed_field_by_field_contacts_included() -> None:
    client, key = uuid4(), new_person_key()
    contact = Contact(contact_id=uuid4(), display_name="Parent of Grace", email="p@example.org")
    added = ClientAdded(
        client_id=client,
        display_name="Grace Hopper",
        email=EMAIL,
        phone=None,
        linked_accounts=(contact,),
    )
    sealed = seal_model(added, key, CLINIC, client)
    data = sealed.model_dump(mode="json")
    text = str(data)
    for plain in ("Grace", EMAIL, "p@example.org"):
        assert plain not in text
    assert data["client_id"] == str(client), "ids stay plain"
    assert data["phone"] is None
    assert data["linked_accounts"][0]["contact_id"] == str(contact.contact_id)
    assert people_in(data) == {client}
    assert seal_model(sealed, key, CLINIC, client) == sealed, "sealed values are not sealed again"
    # A consumer decodes the sealed event as any other, and opens it with the key.
    decoded = ClientAdded.model_validate(data)
    assert ClientAdded.model_validate(open_data(data, {client: key}, CLINIC)) == added
    assert decoded != added
