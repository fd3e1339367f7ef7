"""Phone numbers: search the carrier's inventory, hold, purchase or import, assign to an agent, release."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from control_api import idempotency
from control_api.http.envelope import PageParams, ok, page
from control_api.http.routing import API_PREFIX, ApiRoute, principal_of, scope, services_of
from control_api.numbers import repository as numbers_repo
from control_api.numbers import service
from control_api.numbers.carrier import SearchQuery
from control_api.numbers.schemas import (
    AssignRequest,
    ImportRequest,
    PurchaseRequest,
    ReserveRequest,
    keypad_digits,
    offer_resource,
    parse_e164,
    parse_features,
)

router = APIRouter(prefix=API_PREFIX, route_class=ApiRoute, tags=["Numbers"])

READ, WRITE = scope("numbers:read"), scope("numbers:write")


def _respond(outcome: idempotency.Outcome) -> JSONResponse:
    headers = {idempotency.REPLAYED_HEADER: "true"} if outcome.replayed else {}
    return JSONResponse(outcome.body, status_code=outcome.status, headers=headers)


async def _caller(request: Request, key: str | None) -> service.Caller:
    fingerprint = idempotency.fingerprint(request.method, request.url.path, await request.body())
    return service.Caller(principal_of(request).org_id, key, fingerprint)


@router.get(
    "/numbers/search",
    openapi_extra=READ,
    summary="Search available numbers",
    description="All filters are optional. A too-narrow filter is widened to nearby matches (same state, "
    "then neighbouring area codes, then a shorter vanity pattern) unless bestEffort=false; widened results "
    "say so in `widened` / `widenedBy`.",
)
async def search_numbers(
    request: Request,
    area_code: str | None = Query(None, alias="areaCode", pattern=r"^[2-9][0-9]{2}$"),
    locality: str | None = Query(None, min_length=1, max_length=100, description="City, e.g. Denver."),
    administrative_area: str | None = Query(
        None, alias="administrativeArea", pattern=r"^[A-Za-z]{2}$", description="State, e.g. CO."
    ),
    number_type: Literal["local", "toll_free"] | None = Query(None, alias="numberType"),
    features: str | None = Query(None, max_length=100, description="Comma-separated, all required."),
    contains: str | None = Query(None, max_length=12, description="Digits or vanity letters, anywhere."),
    ends_with: str | None = Query(None, alias="endsWith", max_length=12, description="Last digits or letters."),
    best_effort: bool = Query(True, alias="bestEffort"),
    limit: int = Query(20, ge=1, le=100),
) -> dict[str, Any]:
    query = SearchQuery(
        viewer_org_id=principal_of(request).org_id,
        area_code=area_code,
        locality=locality.strip() if locality else None,
        administrative_area=administrative_area.upper() if administrative_area else None,
        number_type=number_type,
        features=parse_features(features),
        contains=keypad_digits(contains, "contains"),
        ends_with=keypad_digits(ends_with, "endsWith"),
        best_effort=best_effort,
        limit=limit,
    )
    found = await service.search(services_of(request), query)
    return ok([offer_resource(n) for n in found])


@router.get("/numbers/available/{e164}", openapi_extra=READ, summary="Check one available number")
async def check_number(e164: str, request: Request) -> dict[str, Any]:
    offer = await service.available(services_of(request), principal_of(request).org_id, parse_e164(e164))
    return ok(offer_resource(offer))


@router.post(
    "/numbers/reserve",
    status_code=201,
    openapi_extra=WRITE,
    summary="Reserve a number before buying",
    description="Holds the number for 30 minutes at no charge. If you already hold it, returns that hold (200).",
)
async def reserve_number(body: ReserveRequest, request: Request) -> JSONResponse:
    status, hold = await service.reserve(services_of(request), principal_of(request).org_id, body.e164)
    return JSONResponse(ok(hold), status_code=status)


@router.delete("/numbers/reserve/{reservation_id}", openapi_extra=WRITE, summary="Release a number hold")
async def release_hold(reservation_id: str, request: Request) -> dict[str, Any]:
    return ok(await service.release_hold(services_of(request), principal_of(request).org_id, reservation_id))


@router.post(
    "/numbers/purchase",
    status_code=201,
    openapi_extra=WRITE,
    summary="Buy a phone number",
    description="Debits the wallet the setup cost and the first month (402 when it cannot pay, and then "
    "nothing changes). Send an Idempotency-Key so a retry never buys or charges twice.",
)
async def purchase_number(
    body: PurchaseRequest,
    request: Request,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> JSONResponse:
    caller = await _caller(request, idempotency_key)
    return _respond(await service.purchase(services_of(request), caller, body.e164, body.reservation_id))


@router.post(
    "/numbers/import",
    status_code=201,
    openapi_extra=WRITE,
    summary="Import a number you own",
    description="Brings a number you hold at your own carrier (provider `byoc`) with no wallet charge.",
)
async def import_number(
    body: ImportRequest,
    request: Request,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> JSONResponse:
    caller = await _caller(request, idempotency_key)
    return _respond(await service.import_number(services_of(request), caller, body.e164, body.agent_id))


@router.get("/numbers", openapi_extra=READ, summary="List your phone numbers")
async def list_numbers(request: Request, paging: PageParams = Depends()) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        rows, cursor = await numbers_repo.list_page(conn, principal.org_id, limit=paging.limit, cursor=paging.cursor)
    return page([numbers_repo.resource(r) for r in rows], cursor, paging.limit)


@router.get("/numbers/{number_id}", openapi_extra=READ, summary="Get a phone number")
async def get_number(number_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        row = await numbers_repo.get(conn, principal.org_id, number_id)
    return ok(numbers_repo.resource(row))


@router.post("/numbers/{number_id}/assign", openapi_extra=WRITE, summary="Assign a number to an agent")
async def assign_number(number_id: str, body: AssignRequest, request: Request) -> dict[str, Any]:
    org_id = principal_of(request).org_id
    return ok(await service.assign(services_of(request), org_id, number_id, body.agent_id))


@router.delete(
    "/numbers/{number_id}/assign",
    openapi_extra=WRITE,
    summary="Unassign a number",
    description="Back to your pool: still owned and billed, reassign any time.",
)
async def unassign_number(number_id: str, request: Request) -> dict[str, Any]:
    return ok(await service.assign(services_of(request), principal_of(request).org_id, number_id, None))


@router.delete(
    "/numbers/{number_id}",
    openapi_extra=WRITE,
    summary="Release a number",
    description="Permanently gives the number back to the carrier and stops billing. Cannot be undone.",
)
async def release_number(number_id: str, request: Request) -> dict[str, Any]:
    return ok(await service.release(services_of(request), principal_of(request).org_id, number_id))
