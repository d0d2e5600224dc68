"""Marking fields that carry personal data.

A field declared with :func:`personal_data` gets ``"x-personal-data": true`` in its JSON schema
(and so in the AsyncAPI document), so integrators and operators can see what to protect, and
the runtime can keep such values out of logs. A field declared ``sealed=True`` also gets
``"x-sealed": true``: in events its value travels sealed per person (``pd1.<person id>.<…>``,
see ``runtime.personal_data``), and erasing the person makes it unreadable everywhere.
"""

from typing import Any

from pydantic import BaseModel, Field

PERSONAL_DATA_KEY = "x-personal-data"
SEALED_KEY = "x-sealed"


def personal_data(*, description: str, sealed: bool = False, **kwargs: Any) -> Any:
    """A pydantic ``Field`` for a value that identifies a person (name, email, phone);
    ``sealed`` when events carry it sealed for its person."""
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    extra[PERSONAL_DATA_KEY] = True
    if sealed:
        extra[SEALED_KEY] = True
    return Field(description=description, json_schema_extra=extra, **kwargs)


def personal_fields(model: type[BaseModel]) -> frozenset[str]:
    """Names of the fields of ``model`` that are marked as personal data."""
    return frozenset(
        name
        for name, field in model.model_fields.items()
        if isinstance(field.json_schema_extra, dict)
        and field.json_schema_extra.get(PERSONAL_DATA_KEY) is True
    )


ACCESS_MARK = "x-secret"


def secret(*, description: str, **kwargs: Any) -> Any:
    """A pydantic ``Field`` for a value that grants access (a join link with its token).

    Marked ``"x-secret": true``: it travels only to the services and integrators that deliver
    it to its holder, and is never logged.
    """
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    extra[ACCESS_MARK] = True
    return Field(description=description, json_schema_extra=extra, **kwargs)
