"""An agent's guardrail policies and caller-verification methods: read, and replace the whole list.

`PUT` takes a JSON array and overwrites the stored list with it (anything omitted is removed). Skill
references must name skills of this same agent: `appliesToSkillId` of a policy, `verifierSkillId` of a
verification method. Like skills, both lists are part of the draft and apply at the next publish.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from control_api.http.envelope import ok
from control_api.http.problem import validation_failure
from control_api.http.routing import API_PREFIX, ApiRoute, principal_of, scope, services_of
from control_api.repositories import agents as agents_repo
from control_api.repositories import skills as skills_repo
from control_api.schemas.guardrails import (
    MAX_POLICIES,
    MAX_VERIFICATION_METHODS,
    GuardrailPolicy,
    VerificationMethod,
)

router = APIRouter(prefix=API_PREFIX, route_class=ApiRoute, tags=["Guardrails"])

Policies = Annotated[
    list[GuardrailPolicy], Body(max_length=MAX_POLICIES, description="The complete list of policies.")
]
Methods = Annotated[
    list[VerificationMethod],
    Body(max_length=MAX_VERIFICATION_METHODS, description="The complete list of verification methods."),
]


def _error(index: int, field: str, message: str) -> dict[str, Any]:
    return {"loc": (index, field), "msg": message, "type": "value_error"}


def _check(errors: Iterable[Mapping[str, Any]]) -> None:
    found = list(errors)
    if found:
        raise validation_failure(found)


def _unknown_skill(skill_id: str) -> str:
    return f"{skill_id} is not a skill of this agent"


@router.get(
    "/agents/{agent_id}/guardrails", openapi_extra=scope("guardrails:read"), summary="Get guardrail policies"
)
async def get_guardrails(agent_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        agent = await agents_repo.get(conn, principal.org_id, agent_id)
    return ok(agent.guardrails)


@router.put(
    "/agents/{agent_id}/guardrails",
    openapi_extra=scope("guardrails:write"),
    summary="Replace guardrail policies",
)
async def replace_guardrails(agent_id: str, body: Policies, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    now = services.clock.now()
    async with services.engine.begin() as conn:
        await skills_repo.lock_agent(conn, principal.org_id, agent_id, now)
        known = await skills_repo.ids(conn, principal.org_id, agent_id)
        _check(
            _error(i, "appliesToSkillId", _unknown_skill(policy.applies_to_skill_id))
            for i, policy in enumerate(body)
            if policy.applies_to_skill_id is not None and policy.applies_to_skill_id not in known
        )
        stored = [policy.stored() for policy in body]
        await agents_repo.set_policies(
            conn, principal.org_id, agent_id, column="guardrails", value=stored, now=now
        )
    return ok(stored)


@router.get(
    "/agents/{agent_id}/caller-verification",
    openapi_extra=scope("guardrails:read"),
    summary="Get caller verification settings",
)
async def get_caller_verification(agent_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        agent = await agents_repo.get(conn, principal.org_id, agent_id)
    return ok(agent.caller_verification)


def _duplicate_methods(methods: list[VerificationMethod]) -> list[dict[str, Any]]:
    first: dict[str, int] = {}
    errors = []
    for i, method in enumerate(methods):
        if method.method in first:
            errors.append(_error(i, "method", f"repeats the method of [{first[method.method]}]"))
        first.setdefault(method.method, i)
    return errors


@router.put(
    "/agents/{agent_id}/caller-verification",
    openapi_extra=scope("guardrails:write"),
    summary="Replace caller verification settings",
)
async def replace_caller_verification(agent_id: str, body: Methods, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    now = services.clock.now()
    async with services.engine.begin() as conn:
        await skills_repo.lock_agent(conn, principal.org_id, agent_id, now)
        known = await skills_repo.ids(conn, principal.org_id, agent_id)
        errors = _duplicate_methods(body)
        errors += [
            _error(i, "verifierSkillId", _unknown_skill(method.verifier_skill_id))
            for i, method in enumerate(body)
            if method.verifier_skill_id is not None and method.verifier_skill_id not in known
        ]
        _check(errors)
        stored = [method.stored() for method in body]
        await agents_repo.set_policies(
            conn, principal.org_id, agent_id, column="caller_verification", value=stored, now=now
        )
    return ok(stored)

