"""What the fuzzers found, pinned down as plain examples (each was a 500 or a bare 400).

Postgres stores neither a NUL character nor half of a surrogate pair, and both are valid in a
JSON string; a request carrying one failed at its INSERT. A download signature with a
non-ASCII character made ``hmac.compare_digest`` raise. A body that is not UTF-8 got FastAPI's
own 400, which no document declared.
"""

import uuid

import httpx
import pytest

from tests.fuzz.platform import Platform
from tests.fuzz.worlds import World, ok, register_clinic
from tests.scheduling.conftest import OPERATOR
from tests.support import assert_problem

NUL_NAME = b'{"name": "River\\u0000side", "slug": "%s"}'


@pytest.fixture(scope="module")
def clinic(platform: Platform) -> World:
    with platform.client("scheduling") as scheduling:
        return register_clinic(scheduling)


def slug() -> bytes:
    return f"c{uuid.uuid4().hex[:10]}".encode()


def post_json(
    client: httpx.Client, path: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return client.post(path, content=body, headers=headers | {"content-type": "application/json"})


def test_nul_and_unpaired_surrogates_are_invalid_not_a_crash(
    platform: Platform, clinic: World
) -> None:
    with platform.client("scheduling") as scheduling:
        response = post_json(scheduling, "/v1/clinics", NUL_NAME % slug(), OPERATOR)
        assert_problem(response, 422)
        assert response.json()["errors"][0]["field"] == "name"

        body = b'{"display_name": "Grace", "linked_accounts": [{"display_name": "x\\udc00", '
        body += b'"email": "g@example.org"}]}'
        response = post_json(scheduling, "/v1/clients", body, clinic.headers)
        assert_problem(response, 422)
        assert response.json()["errors"][0]["field"] == "linked_accounts.0.display_name"

        response = scheduling.get("/v1/clients?cursor=%00", headers=clinic.headers)
        assert_problem(response, 422)
        assert response.json()["errors"][0]["field"] == "query.cursor"


def test_text_that_only_looks_like_it_is_stored(platform: Platform, clinic: World) -> None:
    # An escaped backslash before u0000 is the text "\u0000"; a whole pair is one character.
    body = b'{"display_name": "C:\\\\u0000 \\ud83d\\ude00"}'
    with platform.client("scheduling") as scheduling:
        client = ok(post_json(scheduling, "/v1/clients", body, clinic.headers), 201)
    assert client["display_name"] == "C:\\u0000 \U0001f600"


def test_a_body_that_is_not_utf8_is_invalid(platform: Platform) -> None:
    with platform.client("scheduling") as scheduling:
        response = post_json(scheduling, "/v1/clinics", b'{"name": "\xff"}', OPERATOR)
    assert_problem(response, 422)
    assert response.json()["errors"] == [{"field": "body", "message": "The body is not UTF-8 text"}]


def test_a_signature_with_any_character_is_refused_not_a_crash(platform: Platform) -> None:
    with platform.client("media") as media:
        response = media.get(
            f"/v1/recordings/{uuid.uuid4()}/file", params={"expires": 1, "signature": "\u2b69"}
        )
    assert_problem(response, 403, "bad_signature")
