"""Every HTTP error is an RFC 9457 problem body with a reason a person understands."""

from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI, Security
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from runtime.http import (
    CLINIC_KEY,
    NO_STORE,
    PROBLEM_JSON,
    Problem,
    bearer_credential,
    create_http_app,
    problems,
)


class Booking(BaseModel):
    minutes: int = Field(ge=5, le=240)


@pytest.fixture
def client() -> httpx.AsyncClient:
    app: FastAPI = create_http_app("demo", readiness=[])

    @app.post("/bookings")
    async def book(booking: Booking) -> dict[str, int]:
        return {"minutes": booking.minutes}

    @app.get("/full")
    async def full() -> None:
        raise Problem(409, "The room is full (16 of 16 seats taken).", title="Room full", seats=16)

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("secret internals")

    @app.get("/keyed", responses=problems(401))
    async def keyed(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(CLINIC_KEY)],
    ) -> None:
        bearer_credential(credentials)
        raise Problem(401, "This API key is unknown or was revoked.", code="unauthenticated")

    @app.get("/join-link", dependencies=[NO_STORE])
    async def join_link() -> dict[str, str]:
        return {"url": "https://example.org/j/secret"}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_unknown_path_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "There is nothing at /nowhere.",
        "instance": "/nowhere",
    }


async def test_wrong_method_says_so(client: httpx.AsyncClient) -> None:
    response = await client.delete("/bookings")
    assert response.status_code == 405
    assert response.json()["detail"] == "DELETE is not allowed on /bookings."


async def test_invalid_body_names_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/bookings", json={"minutes": 1})
    body = response.json()
    assert response.status_code == 422
    assert (
        body["detail"]
        == "The request is not valid: 'minutes': Input should be greater than or equal to 5."
    )
    assert body["errors"] == [
        {"field": "minutes", "message": "Input should be greater than or equal to 5"}
    ]


async def test_malformed_json_is_a_422_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/bookings", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["detail"].startswith("The body is not valid JSON")


async def test_malformed_json_says_where_not_which_field(client: httpx.AsyncClient) -> None:
    """A decoding error is at a line and column of the body, not in a field named by an offset."""
    body = b'{\n  "minutes": 30,\n  "note": "x" oops\n}'
    response = await client.post(
        "/bookings", content=body, headers={"content-type": "application/json"}
    )
    problem = response.json()
    assert response.status_code == 422
    assert problem["code"] == "malformed_json"
    assert problem["detail"] == (
        "The body is not valid JSON: Expecting ',' delimiter at line 3, column 15."
    )
    assert problem["errors"] == [
        {
            "field": "body",
            "message": "Expecting ',' delimiter at line 3, column 15",
            "line": 3,
            "column": 15,
        }
    ]


async def test_every_401_says_how_to_authenticate(client: httpx.AsyncClient) -> None:
    """RFC 6750: no credential gets the scheme alone, a refused one ``invalid_token``."""
    missing = await client.get("/keyed")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="antechamber"'
    wrong = await client.get("/keyed", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == (
        'Bearer realm="antechamber", error="invalid_token"'
    )
    assert wrong.json()["detail"] == "This API key is unknown or was revoked."


async def test_the_openapi_documents_the_401_challenge(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    answer = document["paths"]["/keyed"]["get"]["responses"]["401"]
    assert "WWW-Authenticate" in answer["headers"]


async def test_a_route_that_answers_a_link_forbids_caching_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/join-link")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert "cache-control" not in (await client.get("/full")).headers


async def test_domain_problem_keeps_its_title_and_extras(client: httpx.AsyncClient) -> None:
    response = await client.get("/full")
    assert response.status_code == 409
    assert response.json()["title"] == "Room full"
    assert response.json()["seats"] == 16


async def test_a_crash_is_a_500_problem_without_internals(client: httpx.AsyncClient) -> None:
    response = await client.get("/crash")
    body = response.json()
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_JSON
    assert "secret internals" not in response.text
    assert len(body["trace_id"]) == 32
