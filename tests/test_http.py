"""Every HTTP error is an RFC 9457 problem body with a reason a person understands."""

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field

from runtime.http import PROBLEM_JSON, Problem, create_http_app


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
    assert response.json()["detail"].startswith("The request is not valid")


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
