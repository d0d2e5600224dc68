"""Identifiers that appear in NATS subjects, so they must be single subject tokens."""

from typing import Annotated

from pydantic import Field

SUBJECT_PART = r"^[A-Za-z0-9_-]{1,64}$"

ClinicId = Annotated[
    str,
    Field(
        pattern=SUBJECT_PART,
        description="Opaque clinic identifier; one NATS subject token, never a name.",
        examples=["c_5b1f0e3a9d2c4e7f"],
    ),
]
"""A clinic's id. It is part of every subject, so it carries no personal data."""

ServiceName = Annotated[
    str,
    Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="Name of the service that owns an event."),
]
