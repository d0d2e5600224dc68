"""Schemathesis against every service's OpenAPI document: no 5xx, and no answer that the
document does not describe (status, content type, body, headers, auth), every error an
RFC 9457 problem body.

Each operation gets schema-valid cases (half of them naming a furnished clinic's real objects,
so they reach the handlers rather than a 404) and schema-invalid ones, sent with the key the
operation's ``security`` names. Generation is derandomized, so a run is reproducible. Failures
are collected, not raised one by one, so one run reports them all, summed up per service.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup

from runtime.http import PROBLEM_JSON
from tests.fuzz.conftest import SUMMARY
from tests.fuzz.platform import SERVICES, Platform
from tests.fuzz.worlds import World, furnish, register_clinic
from tests.scheduling.conftest import OPERATOR

# The services run in this process, on their own thread, and draw trace ids from `random`
# while hypothesis generates; it takes that for a strategy using `random`.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)
EXAMPLES = {GenerationMode.POSITIVE: 24, GenerationMode.NEGATIVE: 12}
"""Cases per operation and mode; the whole package stays within about a minute on 2 cores."""
CONFIG = {
    # The key goes in from the operation's `security`, not generated: invalid keys are the
    # ignored_auth check's part (it re-sends each request without the key, and with a wrong one).
    "generation": {"deterministic": True, "database": "none", "with-security-parameters": False},
    "checks": {
        # A schema-valid request may still be refused by the domain (an end before its start,
        # a zone that is not IANA's, a cursor this API did not issue): a documented 4xx
        # problem, which status_code_conformance holds to the document.
        "positive_data_acceptance": {"enabled": False},
    },
}
SERVER_ERROR = "Server error"


@dataclass
class Tally:
    """What fuzzing one service found."""

    operations: list[str] = field(default_factory=list)
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: dict[str, str] = field(default_factory=dict)
    violations: dict[str, str] = field(default_factory=dict)
    """``operation: check`` -> the first failing case (curl) and what was wrong."""
    without_invalid_cases: list[str] = field(default_factory=list)

    def line(self, service: str) -> str:
        none_invalid = (
            f"  no invalid case exists for {self.without_invalid_cases}"
            if self.without_invalid_cases
            else ""
        )
        return (
            f"{service:<10} {len(self.operations):>3} operations {self.cases:>5} cases "
            f"5xx {sum(n for s, n in self.statuses.items() if s >= 500):>3} "
            f"violations {len(self.violations):>3}  statuses {dict(sorted(self.statuses.items()))}"
            + none_invalid
        )


TALLIES: dict[str, Tally] = {}


def problem_body(ctx: Any, response: Any, case: Any) -> None:
    """Every error is an RFC 9457 problem body whose ``status`` is the response's."""
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type == PROBLEM_JSON, f"an error answered as {content_type!r}"
    body = response.json()
    assert isinstance(body, dict), "an error whose body is not a problem object"
    assert body.get("status") == response.status_code, f"problem status {body.get('status')}"
    for member in ("type", "title", "detail", "instance"):
        assert isinstance(body.get(member), str), f"a problem without a string {member!r}"


def credential(operation: dict[str, Any], fuzzed: World) -> dict[str, str]:
    """The header the operation's ``security`` asks for (the fuzzed clinic's key or the
    operator's), or none for an open operation."""
    schemes = {name for requirement in operation.get("security", []) for name in requirement}
    if schemes == {"clinicKey"}:
        return fuzzed.headers
    if schemes == {"operatorKey"}:
        return OPERATOR
    assert not schemes, f"no credential known for the security schemes {schemes}"
    return {}


def known_values(operation: Any, ids: dict[str, str]) -> dict[str, dict[str, str]]:
    """The fuzzed world's ids for the operation's path and query parameters, by location."""
    found: dict[str, dict[str, str]] = {"path": {}, "query": {}}
    for parameter in operation.definition.raw.get("parameters", []):
        name, where = parameter["name"], parameter["in"]
        if where in found and name in ids:
            found[where][name] = ids[name]
    return found


def fuzz_operation(platform: Platform, service: str, operation: Any, fuzzed: World) -> None:
    tally = TALLIES[service]
    url = platform.urls[service]
    headers = credential(operation.definition.raw, fuzzed)
    # The operator's routes get another clinic's ids: fuzzing them suspends clinics and
    # revokes keys, which must not lock the fuzzed clinic out.
    ids = fuzzed.ids if headers is not OPERATOR else fuzzed.operator_target
    known = known_values(operation, ids)
    has_input = bool(operation.definition.raw.get("parameters")) or operation.body

    def check(case: Any) -> None:
        response = case.call(base_url=url, headers=headers, timeout=30)
        tally.cases += 1
        tally.statuses[response.status_code] += 1
        try:
            case.validate_response(
                response,
                headers=headers,
                additional_checks=[problem_body],
                transport_kwargs={"base_url": url, "headers": headers},
            )
        except FailureGroup as group:
            for failure in group.exceptions:
                seen = tally.server_errors if failure.title == SERVER_ERROR else tally.violations
                seen.setdefault(
                    f"{operation.label}: {failure.title}",
                    f"{case.as_curl_command(headers=headers)}\n  -> {response.status_code} "
                    f"{response.text[:300]}\n  {failure.message[:300]}",
                )

    for mode, examples in EXAMPLES.items():
        if mode is GenerationMode.NEGATIVE and not has_input:
            continue  # nothing of it can be made invalid
        strategy = operation.as_strategy(generation_mode=mode)
        if mode is GenerationMode.POSITIVE and (known["path"] or known["query"]):
            strategy = st.one_of(
                strategy,
                operation.as_strategy(
                    generation_mode=mode, path_parameters=known["path"], query=known["query"]
                ),
            )

        @settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            check(case)

        try:
            run()
        except Unsatisfiable:
            # Only an operation whose every input is unconstrained (a free-text path segment)
            # has no invalid case; a valid one always exists.
            assert mode is GenerationMode.NEGATIVE, f"{operation.label}: no valid case"
            tally.without_invalid_cases.append(operation.label)


@pytest.fixture(scope="module")
def fuzzed(platform: Platform) -> World:
    """The clinic the fuzzers work in, and another one for the operator's routes."""
    with platform.client("scheduling") as scheduling:
        world = register_clinic(scheduling)
        target = register_clinic(scheduling)
        keys = scheduling.get(f"/v1/clinics/{target.clinic_id}/api-keys", headers=OPERATOR)
    world.operator_target = {"clinic_id": target.clinic_id, "key_id": keys.json()[0]["key_id"]}
    return furnish(platform, world)


@pytest.mark.parametrize("service", SERVICES)
def test_every_operation_answers_as_documented(
    platform: Platform, fuzzed: World, service: str
) -> None:
    app = platform.apps[service]
    document = app.openapi()
    with platform.client(service) as client:
        assert client.get("/openapi.json").json() == document  # what is fuzzed is what is served
    config = SchemathesisConfig.from_dict(CONFIG)
    schema = schemathesis.openapi.from_dict(document, config=config)
    tally = TALLIES[service] = Tally()
    for result in schema.get_all_operations():
        operation = result.ok()
        tally.operations.append(operation.label)
        fuzz_operation(platform, service, operation, fuzzed)
    documented = sum(len(item) for item in document["paths"].values())
    assert len(tally.operations) == documented, tally.operations
    found = {**tally.server_errors, **tally.violations}
    assert not found, (
        tally.line(service)
        + "\n\n"
        + "\n\n".join(f"{what}\n  {example}" for what, example in sorted(found.items()))
    )


def test_totals() -> None:
    """Every service was fuzzed, and all of it answered as documented."""
    assert set(TALLIES) == set(SERVICES), f"fuzzed only {sorted(TALLIES)}"
    summary = "\n".join(TALLIES[s].line(s) for s in SERVICES)
    operations = sum(len(t.operations) for t in TALLIES.values())
    cases = sum(t.cases for t in TALLIES.values())
    server_errors = sum(n for t in TALLIES.values() for s, n in t.statuses.items() if s >= 500)
    violations = sum(len(t.violations) for t in TALLIES.values())
    SUMMARY.extend(["schemathesis, per service:", *summary.splitlines()])
    SUMMARY.append(
        f"total: {operations} operations, {cases} cases, 5xx {server_errors}, "
        f"violations {violations}"
    )
    assert operations >= 50, summary
    assert cases >= operations * EXAMPLES[GenerationMode.POSITIVE], summary
    assert (server_errors, violations) == (0, 0), summary
