"""Searching the sandbox inventory: each filter, vanity letters, best-effort widening versus strict.

These tests only read (nobody in the session buys from 303, 720, 719, 307, 212 or 512), so they can
assert exact inventory facts.
"""

from __future__ import annotations

import pytest

from control_api.numbers import sandbox_search
from control_api.numbers.carrier import SearchQuery
from control_api.numbers.inventory import TOLL_FREE_PREFIXES
from tests.conftest import Tenant
from tests.test_numbers_support import search


async def test_area_code_filter_and_the_result_shape(tenant: Tenant) -> None:
    found = await search(tenant, areaCode="303", bestEffort="false", limit=100)
    assert len(found) == 40
    assert [n["e164"] for n in found] == sorted(n["e164"] for n in found)
    first = found[0]
    assert set(first) == {
        "e164", "locality", "region", "numberType", "features", "monthlyCost", "monthlyCostCredits",
        "setupCost", "setupCostCredits", "provider", "widened", "widenedBy",
    }
    for number in found:
        assert number["e164"].startswith("+1303555")
        assert (number["locality"], number["region"], number["numberType"]) == ("Denver", "CO", "local")
        assert (number["monthlyCost"], number["monthlyCostCredits"]) == (1.15, 115)
        assert (number["setupCost"], number["setupCostCredits"]) == (1.0, 100)
        assert number["provider"] == "sandbox" and number["widened"] is False and number["widenedBy"] is None
        assert "voice" in number["features"]


async def test_locality_state_type_and_features_filters(tenant: Tenant) -> None:
    denver = await search(tenant, locality="denver", bestEffort="false", limit=100)
    assert {n["e164"][2:5] for n in denver} == {"303", "720"} and len(denver) == 80
    texas = await search(tenant, administrativeArea="tx", bestEffort="false", limit=100)
    assert len(texas) == 100 and {n["region"] for n in texas} == {"TX"}
    toll_free = await search(tenant, numberType="toll_free", limit=100)
    assert len(toll_free) == 100
    for number in toll_free:
        assert number["numberType"] == "toll_free" and number["e164"][2:5] in TOLL_FREE_PREFIXES
        assert number["features"] == ["voice", "sms"] and number["monthlyCostCredits"] == 215
        assert number["locality"] is None and number["region"] is None
    messaging = await search(tenant, areaCode="512", features="mms,voice", bestEffort="false", limit=100)
    everything = await search(tenant, areaCode="512", bestEffort="false", limit=100)
    assert 0 < len(messaging) < len(everything)  # some Austin numbers are voice-only
    assert all({"voice", "mms"} <= set(n["features"]) for n in messaging)
    fax = await search(tenant, features="fax", bestEffort="false", limit=30)
    assert fax and all("fax" in n["features"] for n in fax)
    assert len(await search(tenant, limit=7)) == 7


async def test_vanity_letters_map_to_keypad_digits(tenant: Tenant) -> None:
    calls = await search(tenant, contains="CALL", bestEffort="false", limit=100)
    e164s = {n["e164"] for n in calls}
    assert {"+13035552255", "+18005552255"} <= e164s
    assert all("2255" in n["e164"][2:] for n in calls)
    help_line = await search(tenant, endsWith="help", bestEffort="false")
    assert "+12125554357" in {n["e164"] for n in help_line}
    assert all(n["e164"].endswith("4357") for n in help_line)
    flow = await search(tenant, areaCode="512", endsWith="FLOW", bestEffort="false")
    assert [n["e164"] for n in flow] == ["+15125553569"]
    assert [n["e164"] for n in await search(tenant, areaCode="512", endsWith="3569", bestEffort="false")] == [
        "+15125553569"
    ]


async def test_best_effort_widens_to_the_same_state_then_marks_it(tenant: Tenant) -> None:
    strict = await search(tenant, areaCode="303", bestEffort="false", limit=50)
    assert len(strict) == 40
    widened = await search(tenant, areaCode="303", limit=50)
    assert len(widened) == 50
    assert widened[:40] == strict  # exact matches first, unmarked
    for number in widened[40:]:
        assert number["widened"] is True and number["widenedBy"] == "same_region"
        assert number["region"] == "CO" and number["e164"][2:5] in {"720", "719"}


async def test_best_effort_reaches_neighbouring_area_codes_nearest_first(tenant: Tenant) -> None:
    # Cheyenne (307) is Wyoming's only stocked area code: past it, the nearest are Denver's 303 and 720.
    widened = await search(tenant, areaCode="307", limit=100)
    assert [n["widened"] for n in widened[:40]] == [False] * 40
    nearby = widened[40:]
    assert len(nearby) == 60 and {n["widenedBy"] for n in nearby} == {"nearby"}
    assert {n["e164"][2:5] for n in nearby} <= {"303", "720"}
    assert len(await search(tenant, areaCode="307", limit=100, bestEffort="false")) == 40


async def test_best_effort_shortens_a_vanity_pattern_and_strict_does_not(tenant: Tenant) -> None:
    strict = await search(tenant, areaCode="303", endsWith="CALL", bestEffort="false")
    assert [n["e164"] for n in strict] == ["+13035552255"]
    loose = await search(tenant, areaCode="303", endsWith="CALL", limit=10)
    assert loose[0]["e164"] == "+13035552255" and loose[0]["widened"] is False
    assert len(loose) > 1  # fewer than the limit: a pattern is never cut below two digits
    for number in loose[1:]:
        assert number["widened"] is True
        if number["widenedBy"] == "partial_match":
            assert number["e164"].endswith("55")
        else:
            assert number["widenedBy"] in ("same_region", "nearby") and number["e164"].endswith("2255")


async def test_a_toll_free_prefix_widens_to_the_other_prefixes(tenant: Tenant) -> None:
    found = await search(tenant, areaCode="888", numberType="toll_free", limit=60)
    assert {n["e164"][2:5] for n in found[:50]} == {"888"} and len(found) == 60
    assert {n["widenedBy"] for n in found[50:]} == {"same_region"}
    assert all(n["numberType"] == "toll_free" for n in found)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"areaCode": "12"}, "areaCode"),
        ({"areaCode": "123"}, "areaCode"),
        ({"numberType": "mobile"}, "numberType"),
        ({"features": "voice,teleport"}, "features"),
        ({"contains": "CA LL!"}, "contains"),
        ({"endsWith": "12.3"}, "endsWith"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"administrativeArea": "Colorado"}, "administrativeArea"),
        ({"bestEffort": "maybe"}, "bestEffort"),
    ],
)
async def test_bad_filters_are_400_naming_the_parameter(tenant: Tenant, params: dict[str, str], field: str) -> None:
    response = await tenant.get("/numbers/search", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == field


def test_the_plan_is_exact_only_when_strict() -> None:
    query = SearchQuery(viewer_org_id="org", area_code="415", ends_with="1234", best_effort=False)
    assert [s.reason for s in sandbox_search.plan(query)] == [None]
    loose = sandbox_search.plan(SearchQuery(viewer_org_id="org", area_code="415", ends_with="1234"))
    assert [s.reason for s in loose] == [None, "same_region", "nearby"] + ["partial_match"] * 6
    assert [s.ends_with for s in loose[3:]] == ["234"] * 3 + ["34"] * 3
    assert [s.area_codes for s in loose[3:6]] == [None, loose[1].area_codes, loose[2].area_codes]
    assert loose[1].area_codes is not None and loose[1].area_codes[0] in ("510", "650")  # SF's neighbours
    assert loose[2].area_codes is not None and loose[2].area_codes[0] == "775"  # Reno: nearest across a border
