"""Where things are, offline: coordinates, US ZIP codes, and the great-circle distance between two points.

There is no street-address geocoder here (it would need a network service). A location is either

    latitude + longitude           taken as given
    an address holding a US ZIP    the ZIP's centroid, from the `zipcodes` package's bundled table
                                   (the last 5-digit group of the address, ZIP+4 allowed)

and anything else raises `LocationError` with a message the model can pass on ("give me the ZIP code").
A ZIP centroid is approximate (a ZIP spans a few miles), which is the accuracy a delivery-radius check
needs and no more.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

EARTH_RADIUS_MILES = 3958.7613
_ZIP = re.compile(r"(?<!\d)(\d{5})(?:-\d{4})?(?!\d)")


class LocationError(ValueError):
    """The location cannot be placed on the map; the message says what to ask for instead."""


@dataclass(frozen=True)
class Point:
    lat: float
    lng: float
    source: str  # "coordinates" or "zip 80302"


def haversine_miles(a: Point, b: Point) -> float:
    """Great-circle distance on a spherical Earth (mean radius), in statute miles."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat = lat2 - lat1
    dlng = math.radians(b.lng - a.lng)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlng / 2) ** 2
    return 2 * EARTH_RADIUS_MILES * math.asin(min(1.0, math.sqrt(h)))


def from_coordinates(lat: Any, lng: Any) -> Point:
    try:
        point = Point(float(lat), float(lng), "coordinates")
    except (TypeError, ValueError):
        raise LocationError("latitude and longitude must be numbers") from None
    if not (-90 <= point.lat <= 90 and -180 <= point.lng <= 180):
        raise LocationError("latitude must be within -90..90 and longitude within -180..180")
    return point


def zip_in(address: str) -> str | None:
    """The last 5-digit group of `address` (ZIPs come after the street number), if any."""
    found = _ZIP.findall(address)
    return found[-1] if found else None


def from_zip(code: str) -> Point:
    import zipcodes  # a bundled table: no network; imported on first use (it takes a moment)

    matches: list[dict[str, Any]] = zipcodes.matching(code)  # type: ignore[no-untyped-call]
    if not matches:
        raise LocationError(f"{code} is not a US ZIP code I know; please check it")
    entry = matches[0]
    return Point(float(entry["lat"]), float(entry["long"]), f"zip {code}")


def from_address(address: str) -> Point:
    code = zip_in(address)
    if code is None:
        raise LocationError(
            "I can only place an address by its 5-digit US ZIP code: ask for the ZIP code, or for the "
            "latitude and longitude"
        )
    return from_zip(code)


def locate(arguments: Mapping[str, Any]) -> Point:
    """The caller's location from geo tool arguments: latitude/longitude first, else the address's ZIP."""
    lat, lng = arguments.get("latitude"), arguments.get("longitude")
    if lat is not None and lng is not None:
        return from_coordinates(lat, lng)
    address = str(arguments.get("address") or "").strip()
    if not address:
        raise LocationError("ask for the address with its ZIP code, or for the latitude and longitude")
    return from_address(address)


def origin_of(config: Mapping[str, Any]) -> Point:
    """The business's location from a geo executionConfig: `origin` {lat, lng}, else `originAddress`."""
    origin = config.get("origin")
    if isinstance(origin, Mapping) and origin.get("lat") is not None and origin.get("lng") is not None:
        return from_coordinates(origin["lat"], origin["lng"])
    address = str(config.get("originAddress") or "")
    if not address:
        raise LocationError("the skill has no origin: set origin {lat, lng} or an originAddress with a ZIP")
    try:
        return from_address(address)
    except LocationError:
        raise LocationError(
            "the skill's originAddress has no US ZIP code: set origin {lat, lng} or add the ZIP"
        ) from None
