"""The platform's NATS users: one per service, with the rights its definition implies."""

from pathlib import Path

from antechamber.catalog import definitions
from runtime.nats_auth import NatsAuth
from runtime.nats_permissions import Permissions, service_permissions


def service_rights() -> dict[str, Permissions]:
    return {d.name: service_permissions(d.bus_view()) for d in definitions()}


def platform_auth(folder: Path) -> NatsAuth:
    """The authentication set in ``folder`` (made on first use; service users re-signed)."""
    return NatsAuth.ensure(folder, service_rights())
