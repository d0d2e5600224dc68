"""The base of every domain event and the registry that decodes them, old versions included."""

from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
E = TypeVar("E", bound="Event")


class Event(BaseModel):
    """A fact that happened, named in the past tense (``SessionScheduled``).

    Subclasses are frozen payloads; who and when travel in the envelope. ``schema_version``
    goes up whenever the payload's shape changes, together with an upcaster from the old shape.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: ClassVar[int] = 1

    @classmethod
    def event_type(cls) -> str:
        return cls.__name__


class UnknownEventError(LookupError):
    """An event whose type, or schema version, this registry cannot read."""


class EventRegistry:
    """The events one service publishes, and how to read their older schema versions.

    Decoding applies upcasters one version at a time, so a consumer built today can read an
    event stored by the first release.
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self._types: dict[str, type[Event]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, cls: type[E]) -> type[E]:
        """Class decorator: ``@registry.register``."""
        name = cls.event_type()
        if name in self._types:
            raise ValueError(f"{self.service} already registers an event named {name}")
        self._types[name] = cls
        return cls

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator for a function turning version ``from_version`` into ``from_version + 1``."""

        def decorate(upcast: Upcaster) -> Upcaster:
            self._upcasters[(event_type, from_version)] = upcast
            return upcast

        return decorate

    def __iter__(self) -> Iterator[type[Event]]:
        return iter(self._types.values())

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._types

    def decode(self, event_type: str, schema_version: int, data: Mapping[str, Any]) -> Event:
        """Read a stored or received event payload into its current model."""
        cls = self._types.get(event_type)
        if cls is None:
            raise UnknownEventError(f"{self.service} has no event type {event_type!r}")
        if schema_version > cls.schema_version:
            raise UnknownEventError(
                f"{event_type} v{schema_version} is newer than this build's v{cls.schema_version}"
            )
        payload = dict(data)
        for version in range(schema_version, cls.schema_version):
            upcast = self._upcasters.get((event_type, version))
            if upcast is None:
                raise UnknownEventError(
                    f"no upcaster for {event_type} v{version} -> v{version + 1}"
                )
            payload = upcast(payload)
        return cls.model_validate(payload)
