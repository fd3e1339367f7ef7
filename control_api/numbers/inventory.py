"""The sandbox carrier's inventory: a realistic, deterministic pool of numbers kept in `sandbox_inventory`.

What it holds, all generated from fixed data and a seeded PRNG (the same rows on every machine, every run):

- local numbers for the NANP area codes in `AREA_CODES` (city, state, and the city's coordinates, which is
  what "nearby" means when a best-effort search widens), `LOCAL_PER_AREA_CODE` each, all in the fictional
  555 exchange; a few lines are fixed (`FIXED_LINES`: the guides' +14155551234 and some vanity words);
- toll-free numbers for every prefix in `TOLL_FREE_PREFIXES`, `TOLL_FREE_PER_PREFIX` each.

Capabilities: most local numbers do voice, SMS and MMS; some are voice-only, a few add fax; toll-free
numbers do voice and SMS. Prices are in credits (1 credit = 1 cent).

`ensure_seeded(conn)` inserts whatever rows are missing (none after the first run) and is safe to run on
every start, even from two processes at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.db.tables import sandbox_inventory

SEED = "flowyte-sandbox-inventory-v1"
EXCHANGE = "555"
LOCAL_PER_AREA_CODE = 40
TOLL_FREE_PER_PREFIX = 50

LOCAL_MONTHLY_CREDITS = 115
TOLL_FREE_MONTHLY_CREDITS = 215
SETUP_CREDITS = 100

LOCAL_FEATURES = "voice sms mms"
VOICE_ONLY = "voice"
WITH_FAX = "voice sms mms fax"
TOLL_FREE_FEATURES = "voice sms"

TOLL_FREE_PREFIXES: tuple[str, ...] = ("800", "833", "844", "855", "866", "877", "888")


@dataclass(frozen=True)
class AreaCode:
    code: str
    city: str
    state: str
    lat: float
    lon: float


def _ac(code: str, city: str, state: str, lat: float, lon: float) -> AreaCode:
    return AreaCode(code, city, state, lat, lon)


AREA_CODES: tuple[AreaCode, ...] = (
    _ac("415", "San Francisco", "CA", 37.77, -122.42),
    _ac("650", "San Mateo", "CA", 37.56, -122.32),
    _ac("408", "San Jose", "CA", 37.34, -121.89),
    _ac("510", "Oakland", "CA", 37.80, -122.27),
    _ac("916", "Sacramento", "CA", 38.58, -121.49),
    _ac("213", "Los Angeles", "CA", 34.05, -118.24),
    _ac("310", "Santa Monica", "CA", 34.02, -118.49),
    _ac("619", "San Diego", "CA", 32.72, -117.16),
    _ac("559", "Fresno", "CA", 36.74, -119.79),
    _ac("206", "Seattle", "WA", 47.61, -122.33),
    _ac("253", "Tacoma", "WA", 47.25, -122.44),
    _ac("509", "Spokane", "WA", 47.66, -117.43),
    _ac("503", "Portland", "OR", 45.52, -122.68),
    _ac("541", "Eugene", "OR", 44.05, -123.09),
    _ac("702", "Las Vegas", "NV", 36.17, -115.14),
    _ac("775", "Reno", "NV", 39.53, -119.81),
    _ac("602", "Phoenix", "AZ", 33.45, -112.07),
    _ac("520", "Tucson", "AZ", 32.22, -110.97),
    _ac("801", "Salt Lake City", "UT", 40.76, -111.89),
    _ac("208", "Boise", "ID", 43.62, -116.20),
    _ac("406", "Billings", "MT", 45.78, -108.50),
    _ac("307", "Cheyenne", "WY", 41.14, -104.82),
    _ac("303", "Denver", "CO", 39.74, -104.99),
    _ac("720", "Denver", "CO", 39.74, -104.99),
    _ac("719", "Colorado Springs", "CO", 38.83, -104.82),
    _ac("505", "Albuquerque", "NM", 35.08, -106.65),
    _ac("512", "Austin", "TX", 30.27, -97.74),
    _ac("214", "Dallas", "TX", 32.78, -96.80),
    _ac("713", "Houston", "TX", 29.76, -95.37),
    _ac("210", "San Antonio", "TX", 29.42, -98.49),
    _ac("817", "Fort Worth", "TX", 32.76, -97.33),
    _ac("915", "El Paso", "TX", 31.76, -106.49),
    _ac("405", "Oklahoma City", "OK", 35.47, -97.52),
    _ac("918", "Tulsa", "OK", 36.15, -95.99),
    _ac("316", "Wichita", "KS", 37.69, -97.34),
    _ac("402", "Omaha", "NE", 41.26, -95.93),
    _ac("701", "Fargo", "ND", 46.88, -96.79),
    _ac("605", "Sioux Falls", "SD", 43.55, -96.73),
    _ac("515", "Des Moines", "IA", 41.59, -93.62),
    _ac("816", "Kansas City", "MO", 39.10, -94.58),
    _ac("314", "St. Louis", "MO", 38.63, -90.20),
    _ac("612", "Minneapolis", "MN", 44.98, -93.27),
    _ac("651", "St. Paul", "MN", 44.95, -93.09),
    _ac("414", "Milwaukee", "WI", 43.04, -87.91),
    _ac("608", "Madison", "WI", 43.07, -89.40),
    _ac("312", "Chicago", "IL", 41.88, -87.63),
    _ac("773", "Chicago", "IL", 41.88, -87.63),
    _ac("317", "Indianapolis", "IN", 39.77, -86.16),
    _ac("313", "Detroit", "MI", 42.33, -83.05),
    _ac("616", "Grand Rapids", "MI", 42.96, -85.67),
    _ac("614", "Columbus", "OH", 39.96, -83.00),
    _ac("216", "Cleveland", "OH", 41.50, -81.69),
    _ac("513", "Cincinnati", "OH", 39.10, -84.51),
    _ac("502", "Louisville", "KY", 38.25, -85.76),
    _ac("615", "Nashville", "TN", 36.16, -86.78),
    _ac("901", "Memphis", "TN", 35.15, -90.05),
    _ac("205", "Birmingham", "AL", 33.52, -86.80),
    _ac("601", "Jackson", "MS", 32.30, -90.18),
    _ac("504", "New Orleans", "LA", 29.95, -90.07),
    _ac("501", "Little Rock", "AR", 34.75, -92.29),
    _ac("404", "Atlanta", "GA", 33.75, -84.39),
    _ac("305", "Miami", "FL", 25.76, -80.19),
    _ac("407", "Orlando", "FL", 28.54, -81.38),
    _ac("813", "Tampa", "FL", 27.95, -82.46),
    _ac("904", "Jacksonville", "FL", 30.33, -81.66),
    _ac("704", "Charlotte", "NC", 35.23, -80.84),
    _ac("919", "Raleigh", "NC", 35.78, -78.64),
    _ac("843", "Charleston", "SC", 32.78, -79.93),
    _ac("804", "Richmond", "VA", 37.54, -77.44),
    _ac("304", "Charleston", "WV", 38.35, -81.63),
    _ac("202", "Washington", "DC", 38.91, -77.04),
    _ac("410", "Baltimore", "MD", 39.29, -76.61),
    _ac("302", "Wilmington", "DE", 39.74, -75.55),
    _ac("215", "Philadelphia", "PA", 39.95, -75.17),
    _ac("412", "Pittsburgh", "PA", 40.44, -80.00),
    _ac("201", "Jersey City", "NJ", 40.73, -74.08),
    _ac("973", "Newark", "NJ", 40.74, -74.17),
    _ac("212", "New York", "NY", 40.71, -74.01),
    _ac("917", "New York", "NY", 40.71, -74.01),
    _ac("718", "Brooklyn", "NY", 40.68, -73.94),
    _ac("716", "Buffalo", "NY", 42.89, -78.88),
    _ac("203", "New Haven", "CT", 41.31, -72.92),
    _ac("860", "Hartford", "CT", 41.77, -72.67),
    _ac("401", "Providence", "RI", 41.82, -71.41),
    _ac("617", "Boston", "MA", 42.36, -71.06),
    _ac("603", "Manchester", "NH", 42.99, -71.46),
    _ac("802", "Burlington", "VT", 44.48, -73.21),
    _ac("207", "Portland", "ME", 43.66, -70.26),
    _ac("907", "Anchorage", "AK", 61.22, -149.90),
    _ac("808", "Honolulu", "HI", 21.31, -157.86),
)

BY_CODE: dict[str, AreaCode] = {a.code: a for a in AREA_CODES}

# Lines every seed contains: the guides' example, and vanity words for keypad searches.
FIXED_LINES: dict[str, tuple[str, ...]] = {
    "415": ("1234",),
    "212": ("4357",),  # HELP
    "303": ("2255",),  # CALL
    "512": ("3569",),  # FLOW
    "617": ("7378",),  # PEST
    "800": ("2255", "4357"),
}


def _lines(prefix: str, count: int) -> list[str]:
    fixed = list(FIXED_LINES.get(prefix, ()))
    rng = random.Random(f"{SEED}:{prefix}")
    pool = [f"{n:04d}" for n in rng.sample(range(10_000), count + len(fixed)) if f"{n:04d}" not in fixed]
    return sorted(fixed + pool[: count - len(fixed)])


def _local_features(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.12:
        return VOICE_ONLY
    if roll < 0.18:
        return WITH_FAX
    return LOCAL_FEATURES


def generate() -> list[dict[str, object]]:
    """Every inventory row, in a stable order."""
    rows: list[dict[str, object]] = []
    for area in AREA_CODES:
        rng = random.Random(f"{SEED}:features:{area.code}")
        for line in _lines(area.code, LOCAL_PER_AREA_CODE):
            rows.append(_row(area.code, line, area.city, area.state, "local", _local_features(rng)))
    for prefix in TOLL_FREE_PREFIXES:
        for line in _lines(prefix, TOLL_FREE_PER_PREFIX):
            rows.append(_row(prefix, line, "", "", "toll_free", TOLL_FREE_FEATURES))
    return rows


def _row(code: str, line: str, locality: str, region: str, number_type: str, features: str) -> dict[str, object]:
    local = number_type == "local"
    return {
        "e164": f"+1{code}{EXCHANGE}{line}",
        "area_code": code,
        "locality": locality,
        "region": region,
        "number_type": number_type,
        "features": features,
        "monthly_cost_credits": LOCAL_MONTHLY_CREDITS if local else TOLL_FREE_MONTHLY_CREDITS,
        "setup_cost_credits": SETUP_CREDITS,
    }


async def ensure_seeded(conn: AsyncConnection) -> int:
    """Insert the inventory rows that are missing; returns how many were inserted (0 once seeded)."""
    rows = generate()
    present = await conn.scalar(sa.select(sa.func.count()).select_from(sandbox_inventory))
    if present == len(rows):
        return 0
    existing = set((await conn.execute(sa.select(sandbox_inventory.c.e164))).scalars())
    missing = [r for r in rows if r["e164"] not in existing]
    if not missing:
        return 0
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    await conn.execute(insert(sandbox_inventory).on_conflict_do_nothing(index_elements=["e164"]), missing)
    return len(missing)
