"""Why a command was not carried out: a machine code and a sentence for a person.

Domains raise these (they are plain exceptions, no I/O); every service's HTTP app answers them
as RFC 9457 problem bodies with the class's status and ``code``.
"""

from typing import ClassVar


class Refused(Exception):
    """A command that cannot be carried out; nothing was changed."""

    status: ClassVar[int] = 422

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class NotFound(Refused):
    status = 404


class Conflict(Refused):
    status = 409


class Invalid(Refused):
    status = 422


class Forbidden(Refused):
    status = 403


class Gone(Refused):
    """It existed and was removed for good (an erased client)."""

    status = 410


def not_found(what: str) -> NotFound:
    """``<what>_not_found``: used alike for an unknown id and for another clinic's."""
    return NotFound(f"{what}_not_found", f"There is no {what.replace('_', ' ')} with that id.")
