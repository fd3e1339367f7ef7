"""Fetching a URL source: the address-guarded client, a timeout, a size cap, and errors worth showing.

    FetchError   the page could not be fetched; the message becomes the source's `error`
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from control_api.net_guard import BlockedAddress, guarded_client

MAX_PAGE_BYTES = 10 * 1024 * 1024
FETCH_TIMEOUT_S = 15.0
ACCEPT = "text/html, application/xhtml+xml, text/markdown, text/plain, application/pdf, */*;q=0.5"


class FetchError(Exception):
    pass


@dataclass(frozen=True)
class Page:
    url: str
    content_type: str | None
    data: bytes


async def fetch(
    url: str, allow_hosts: frozenset[str], *, max_bytes: int = MAX_PAGE_BYTES, timeout_s: float = FETCH_TIMEOUT_S
) -> Page:
    try:
        async with guarded_client(allow_hosts, timeout=timeout_s) as client, client.stream(
            "GET", url, headers={"Accept": ACCEPT}
        ) as response:
            if response.status_code >= 400:
                raise FetchError(f"the page answered HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(f"the page is larger than {max_bytes // (1024 * 1024)} MB")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"the page is larger than {max_bytes // (1024 * 1024)} MB")
                chunks.append(chunk)
            return Page(str(response.url), response.headers.get("content-type"), b"".join(chunks))
    except BlockedAddress as error:
        raise FetchError(f"refused to fetch {url}: {error}") from None
    except httpx.TooManyRedirects:
        raise FetchError("the page redirects too many times") from None
    except httpx.TimeoutException:
        raise FetchError(f"the page did not answer within {timeout_s:g} seconds") from None
    except httpx.HTTPError as error:
        raise FetchError(f"the page could not be fetched: {error}") from None
