"""The services that exist, by name. The only place that imports every service."""

import importlib

from runtime.service import ServiceDefinition

SERVICES = ("scheduling", "links", "signaling", "media", "notify")


def definition(name: str) -> ServiceDefinition:
    if name not in SERVICES:
        raise SystemExit(f"unknown service {name!r}; the services are: {', '.join(SERVICES)}")
    module = importlib.import_module(f"services.{name}.app")
    found: ServiceDefinition = module.definition
    return found


def definitions() -> list[ServiceDefinition]:
    return [definition(name) for name in SERVICES]
