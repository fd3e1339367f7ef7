"""How the sandbox carrier searches its inventory, and how best-effort widening works.

A search runs as a list of stages, each one SQL query that fills what the earlier stages left of `limit`:

    exact          the filters as given
    same_region    (best effort) other area codes in the same state(s) as the requested area code or city,
                   nearest first; for a toll-free prefix, the other toll-free prefixes
    nearby         (best effort) area codes in other states within NEARBY_KM of the requested place,
                   nearest first
    partial_match  (best effort) a shorter vanity pattern: `contains` keeps its first digits, `endsWith`
                   its last (never fewer than MIN_PATTERN); longest first, each over the requested
                   place, then the same region, then the nearby area codes

Number type and required features are never relaxed. With `bestEffort=false` only the exact stage runs.
Every stage sees only sellable numbers (not owned, not in quarantine, not held by another organization)
and skips what an earlier stage returned. `plan()` is pure; `statement()` turns one stage into SQL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from control_api.db.tables import phone_numbers, sandbox_inventory
from control_api.numbers.availability import held_by_other
from control_api.numbers.inventory import AREA_CODES, TOLL_FREE_PREFIXES

if TYPE_CHECKING:
    from control_api.numbers.carrier import SearchQuery

NEARBY_KM = 1000.0
MIN_PATTERN = 2


@dataclass(frozen=True)
class Place:
    code: str
    city: str
    state: str
    number_type: str
    coords: tuple[float, float] | None


PLACES: tuple[Place, ...] = (
    *(Place(a.code, a.city, a.state, "local", (a.lat, a.lon)) for a in AREA_CODES),
    *(Place(p, "", "", "toll_free", None) for p in TOLL_FREE_PREFIXES),
)


@dataclass(frozen=True)
class Stage:
    reason: str | None  # None for the exact stage
    area_codes: tuple[str, ...] | None  # None: the query's own place filters; else these, in this order
    contains: str | None
    ends_with: str | None


def plan(query: SearchQuery) -> list[Stage]:
    exact = Stage(None, None, query.contains, query.ends_with)
    if not query.best_effort:
        return [exact]
    anchor = _anchor(query)
    places = _widen_place(query, anchor) if anchor else []
    scopes = [None, *(p.area_codes for p in places)]
    shorter = [
        Stage("partial_match", scope, contains, ends_with)
        for contains, ends_with in _shorter_patterns(query.contains, query.ends_with)
        for scope in scopes
    ]
    return [exact, *places, *shorter]


def _anchor(query: SearchQuery) -> list[Place]:
    """The places the query's place filters name (empty when it names none)."""
    if not (query.area_code or query.locality or query.administrative_area):
        return []
    return [
        p
        for p in _typed_places(query)
        if (query.area_code is None or p.code == query.area_code)
        and (query.locality is None or p.city.lower() == query.locality.lower())
        and (query.administrative_area is None or p.state == query.administrative_area)
    ]


def _typed_places(query: SearchQuery) -> list[Place]:
    return [p for p in PLACES if query.number_type is None or p.number_type == query.number_type]


def _widen_place(query: SearchQuery, anchor: list[Place]) -> list[Stage]:
    codes = {p.code for p in anchor}
    states = {p.state for p in anchor}
    center = _centroid([p.coords for p in anchor if p.coords is not None])
    others = [p for p in _typed_places(query) if p.code not in codes]
    region = [p for p in others if p.state in states]
    nearby = [
        p for p in others if p.state not in states and p.coords and center and _km(center, p.coords) <= NEARBY_KM
    ]
    stages = []
    for reason, places in (("same_region", region), ("nearby", nearby)):
        if places:
            ordered = sorted(places, key=lambda p: (_km(center, p.coords) if center and p.coords else 0.0, p.code))
            stages.append(Stage(reason, tuple(p.code for p in ordered), query.contains, query.ends_with))
    return stages


def _shorter_patterns(contains: str | None, ends_with: str | None) -> list[tuple[str | None, str | None]]:
    longest = max(len(contains or ""), len(ends_with or ""))
    steps = []
    for keep in range(longest - 1, MIN_PATTERN - 1, -1):
        steps.append((
            contains[:keep] if contains and len(contains) > keep else contains,
            ends_with[-keep:] if ends_with and len(ends_with) > keep else ends_with,
        ))
    return steps


def _centroid(points: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    if not points:
        return None
    return (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))


def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


# --- SQL ---------------------------------------------------------------------------------------------------


def taken_or_quarantined(e164: sa.ColumnElement[Any], quarantine_cutoff: datetime) -> sa.ColumnElement[bool]:
    """Owned live, or released after `quarantine_cutoff` (still aging before it is sold again)."""
    return sa.exists().where(
        phone_numbers.c.e164 == e164,
        sa.or_(phone_numbers.c.released_at.is_(None), phone_numbers.c.released_at > quarantine_cutoff),
    )


def sellable(viewer_org_id: str, now: datetime, quarantine_cutoff: datetime) -> sa.ColumnElement[bool]:
    e164 = sandbox_inventory.c.e164
    return sa.and_(~taken_or_quarantined(e164, quarantine_cutoff), ~held_by_other(e164, viewer_org_id, now))


def statement(
    stage: Stage, query: SearchQuery, seen: Sequence[str], limit: int, available: sa.ColumnElement[bool]
) -> sa.Select[Any]:
    inv = sandbox_inventory.c
    conditions: list[sa.ColumnElement[bool]] = [available]
    if query.number_type is not None:
        conditions.append(inv.number_type == query.number_type)
    for feature in query.features:
        conditions.append((sa.literal(" ") + inv.features + sa.literal(" ")).like(f"% {feature} %"))
    if stage.contains:
        conditions.append(sa.func.substr(inv.e164, 3).like(f"%{stage.contains}%"))
    if stage.ends_with:
        conditions.append(inv.e164.like(f"%{stage.ends_with}"))
    if seen:
        conditions.append(inv.e164.not_in(list(seen)))
    order: list[sa.ColumnElement[Any]] = []
    if stage.area_codes is None:
        conditions += _place_filters(query)
    else:
        conditions.append(inv.area_code.in_(stage.area_codes))
        order.append(sa.case({code: rank for rank, code in enumerate(stage.area_codes)}, value=inv.area_code))
    return sa.select(sandbox_inventory).where(*conditions).order_by(*order, inv.e164).limit(limit)


def _place_filters(query: SearchQuery) -> list[sa.ColumnElement[bool]]:
    inv = sandbox_inventory.c
    filters: list[sa.ColumnElement[bool]] = []
    if query.area_code is not None:
        filters.append(inv.area_code == query.area_code)
    if query.locality is not None:
        filters.append(sa.func.lower(inv.locality) == query.locality.lower())
    if query.administrative_area is not None:
        filters.append(inv.region == query.administrative_area)
    return filters
