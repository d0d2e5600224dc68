"""The fuzzers' platform: every service over real HTTP, on a NATS and a Postgres of its own.

Fuzzing fills the databases with thousands of clinics, sessions and mails; on servers of their
own (as notify's tests have) none of it reaches another test's consumers.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.embedded import NatsServer
from tests.fuzz.platform import Platform, running
from tests.support import start_nats, start_postgres

SUMMARY: list[str] = []
"""Lines the tests add: shown at the end of the run."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.section("fuzzing and tenancy")
        for line in SUMMARY:
            terminalreporter.write_line(line)


@pytest.fixture(scope="package")
def nats_server(short_tmp: Path) -> Iterator[NatsServer]:
    server = start_nats(short_tmp / "fuzz-nats")
    yield server
    server.stop()


@pytest.fixture(scope="package")
def postgres_dsn(short_tmp: Path) -> Iterator[str]:
    postgres = start_postgres(short_tmp / "fuzz-pg")
    yield postgres.dsn
    postgres.stop()


@pytest.fixture(scope="package")
def platform(postgres_dsn: str, nats_server: NatsServer) -> Iterator[Platform]:
    with running(postgres_dsn, nats_server.url) as services:
        yield services
