"""Who is calling: a clinic API key, vouched for by the scheduling service over NATS.

Services other than scheduling never see the keys' table; they send the key's SHA-256 to
``AUTHENTICATE_SUBJECT`` and scope every query of the request to the clinic it names.
"""

from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import HTTPAuthorizationCredentials

from contracts.scheduling import AUTHENTICATE_SUBJECT, KeyCheck, KeyOwner
from runtime.context import ServiceContext
from runtime.http import CLINIC_KEY, Problem, bearer_credential, problems
from runtime.rpc import RpcError, call
from runtime.sealing import secret_digest
from runtime.service import context_of

Context = Annotated[ServiceContext, Depends(context_of)]


async def clinic_of(
    ctx: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(CLINIC_KEY)],
) -> str:
    """The caller's clinic, from a clinic API key that the scheduling service vouches for."""
    key = bearer_credential(credentials, "clinic API key")
    check = KeyCheck(key_sha256=secret_digest(key).hex())
    try:
        owner = await call(ctx.nats, AUTHENTICATE_SUBJECT, check, KeyOwner)
    except RpcError as exc:
        raise Problem(503, "Keys cannot be checked right now; try again shortly.") from exc
    if not owner.known or owner.clinic_id is None:
        raise Problem(401, "This API key is unknown or was revoked.", code="unauthenticated")
    if owner.suspended:
        raise Problem(403, "This clinic is suspended.", code="clinic_suspended")
    return owner.clinic_id


ClinicId = Annotated[str, Depends(clinic_of)]
CLINIC_KEY_PROBLEMS = problems(401, 403, 503)
"""What ``clinic_of`` may answer instead: declare them on every route that takes a ClinicId."""
