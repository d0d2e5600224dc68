"""Personal values sealed per person, so that deleting one key erases them everywhere.

A value that identifies a person (a field marked with ``contracts.personal.personal_data``)
is appended, published and stored as ``pd1.<person id>.<base64url(nonce | ciphertext)>``:
AES-256-GCM under a random 256-bit key of that person's, with the clinic id and the person id
as associated data, so a value sealed for one clinic (or one person) never opens as another's.
The service that owns the person keeps the key; deleting it erases the value from every
stored event and every stream copy at once, with no history rewritten (crypto-shredding).

The text form is recognisable, so a consumer tells a sealed value from a plain one (an event
appended before sealing began). ``runtime.sealing`` seals join links under one service key;
this module seals under one key per person.
"""

import base64
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel

from contracts.events import Event
from contracts.personal import personal_fields
from runtime.db import Queryable
from runtime.sealing import SealingError

PREFIX = "pd1"
"""The form's version: a future cipher gets ``pd2`` and both stay readable."""
KEY_BYTES = 32
_NONCE = 12
M = TypeVar("M", bound=BaseModel)


def new_person_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _associated(clinic_id: str, person_id: UUID) -> bytes:
    return f"{PREFIX}|{clinic_id}|{person_id}".encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def seal(value: str, key: bytes, clinic_id: str, person_id: UUID) -> str:
    """``value`` in its sealed text form, openable with ``key`` for this clinic alone."""
    nonce = secrets.token_bytes(_NONCE)
    body = AESGCM(key).encrypt(nonce, value.encode(), _associated(clinic_id, person_id))
    return f"{PREFIX}.{person_id}.{_b64(nonce + body)}"


def person_of(value: object) -> UUID | None:
    """The person whose sealed value this is; None for anything else (a plain value)."""
    if not isinstance(value, str) or not value.startswith(PREFIX + "."):
        return None
    person, dot, _ = value[len(PREFIX) + 1 :].partition(".")
    if not dot:
        return None
    try:
        return UUID(person)
    except ValueError:
        return None


def is_sealed(value: object) -> bool:
    return person_of(value) is not None


def unseal(sealed: str, key: bytes, clinic_id: str) -> str:
    """The plain value; :class:`SealingError` for a value this key does not open for this
    clinic (another clinic's, another person's, or altered). Never says what the value was."""
    person = person_of(sealed)
    if person is None:
        raise SealingError("not a sealed personal value")
    body = sealed.rsplit(".", 1)[1]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        plain = AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], _associated(clinic_id, person))
    except (InvalidTag, ValueError) as exc:
        raise SealingError("the sealed value was altered, or is not this clinic's") from exc
    return plain.decode()


# -- whole events ------------------------------------------------------------------------------


def seal_model(model: M, key: bytes, clinic_id: str, person_id: UUID) -> M:
    """A copy of ``model`` with every personal field sealed for ``person_id``, nested models
    (a client's contacts) included. Values already sealed stay as they are."""
    update: dict[str, Any] = {}
    personal = personal_fields(type(model))
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name in personal and isinstance(value, str) and not is_sealed(value):
            update[name] = seal(value, key, clinic_id, person_id)
        elif isinstance(value, BaseModel):
            update[name] = seal_model(value, key, clinic_id, person_id)
        elif isinstance(value, tuple | list) and any(isinstance(v, BaseModel) for v in value):
            sealed = [
                seal_model(v, key, clinic_id, person_id) if isinstance(v, BaseModel) else v
                for v in value
            ]
            update[name] = type(value)(sealed)
    return model.model_copy(update=update) if update else model


def people_in(data: object) -> set[UUID]:
    """The people whose sealed values occur anywhere in ``data`` (an event's JSON payload)."""
    found: set[UUID] = set()
    if isinstance(data, str):
        person = person_of(data)
        if person is not None:
            found.add(person)
    elif isinstance(data, Mapping):
        for value in data.values():
            found |= people_in(value)
    elif isinstance(data, list | tuple):
        for value in data:
            found |= people_in(value)
    return found


def open_data(data: Any, keys: Mapping[UUID, bytes], clinic_id: str) -> Any:
    """``data`` (JSON) with every sealed value that ``keys`` open replaced by its plain value.
    A value whose key is gone (erased) or that does not open stays sealed."""
    if isinstance(data, str):
        person = person_of(data)
        key = keys.get(person) if person is not None else None
        if key is None:
            return data
        try:
            return unseal(data, key, clinic_id)
        except SealingError:
            return data
    if isinstance(data, Mapping):
        return {name: open_data(value, keys, clinic_id) for name, value in data.items()}
    if isinstance(data, list | tuple):
        return [open_data(value, keys, clinic_id) for value in data]
    return data


class PersonKeys(Protocol):
    """What a service that owns people does with their keys around its event store: seal the
    events it appends, open the stored ones it decides on (``runtime.commands``)."""

    async def seal(
        self, conn: Queryable, clinic_id: str, events: Sequence[Event]
    ) -> Sequence[Event]: ...

    async def open(
        self, conn: Queryable, clinic_id: str, payloads: Sequence[dict[str, Any]]
    ) -> Sequence[dict[str, Any]]: ...
