"""Request bodies of the knowledge API, and how a source row reads on the wire."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import Field

from control_api.clock import iso
from control_api.errors import field_error
from control_api.net_guard import BlockedAddress, check_url, is_public, literal_address
from control_api.schemas.common import ApiModel, ShortText

SourceKind = Literal["text", "faq", "url", "file"]
RefreshHours = Annotated[int, Field(ge=24, le=24 * 365, description="Re-crawl cadence; at least 24 hours.")]
_KIND_FIELDS: dict[str, str] = {"text": "text", "faq": "items", "url": "url", "file": "fileId"}


class FaqItem(ApiModel):
    question: str = Field(min_length=1, max_length=1000)
    answer: str = Field(min_length=1, max_length=20_000)


class SourceCreate(ApiModel):
    kind: SourceKind
    label: ShortText
    text: str | None = Field(None, min_length=1, max_length=500_000, description="kind text: the content.")
    items: list[FaqItem] | None = Field(None, min_length=1, max_length=1000, description="kind faq.")
    url: str | None = Field(None, min_length=1, max_length=2000, description="kind url: the page to crawl.")
    file_id: str | None = Field(None, min_length=1, max_length=40, description="kind file: from POST /uploads.")
    auto_refresh: bool | None = Field(None, description="kind url: re-crawl on a cadence (off by default).")
    refresh_interval_hours: RefreshHours | None = None

    def check(self, allow_hosts: frozenset[str]) -> None:
        """Each kind needs its own field and takes no other kind's; a URL must be public http(s)."""
        wanted = _KIND_FIELDS[self.kind]
        given = {"text": self.text, "items": self.items, "url": self.url, "fileId": self.file_id}
        if given[wanted] is None:
            raise field_error(wanted, f"is required for a {self.kind} source")
        for name, value in given.items():
            if name != wanted and value is not None:
                raise field_error(name, f"is not used by a {self.kind} source")
        if self.kind != "url" and (self.auto_refresh or self.refresh_interval_hours is not None):
            raise field_error("autoRefresh", "applies to url sources only")
        if self.url is not None:
            check_public_url(self.url, allow_hosts)

    def spec(self) -> dict[str, Any]:
        if self.kind == "text":
            return {"text": self.text}
        if self.kind == "faq":
            return {"items": [i.model_dump() for i in self.items or []]}
        if self.kind == "url":
            return {"url": self.url}
        return {"fileId": self.file_id}


def check_public_url(url: str, allow_hosts: frozenset[str]) -> None:
    """What can be refused without DNS: a bad scheme, an internal name, a private IP literal. The fetch
    itself checks the resolved addresses (control_api.net_guard)."""
    try:
        _, host, _ = check_url(url)
    except BlockedAddress as error:
        raise field_error("url", str(error)) from None
    if host in allow_hosts:
        return
    literal = literal_address(host)
    if (literal is not None and not is_public(literal)) or host == "localhost" or host.endswith(
        (".localhost", ".internal", ".local")
    ):
        raise field_error("url", "must point at a public address, not a private, loopback or link-local one")


class SourceUpdate(ApiModel):
    label: ShortText | None = None
    auto_refresh: bool | None = Field(None, description="Opt in to (or out of) automatic re-crawl; url only.")
    refresh_interval_hours: RefreshHours | None = Field(None, description="Default 168 (weekly).")


class PreviewRequest(ApiModel):
    query: str = Field(min_length=1, max_length=2000)
    top_k: int = Field(5, ge=1, le=20)
    source_ids: list[Annotated[str, Field(min_length=1, max_length=40)]] | None = Field(None, max_length=100)


class GapUpdate(ApiModel):
    status: Literal["open", "in_progress", "dismissed"]


def source_resource(row: sa.Row[Any], *, with_content: bool) -> dict[str, Any]:
    spec: dict[str, Any] = dict(row.spec)
    resource: dict[str, Any] = {
        "id": row.id,
        "agentId": row.agent_id,
        "kind": row.kind,
        "label": row.label,
        "status": row.status,
        "error": row.error,
        "chunkCount": int(row.chunk_count),
        "generation": row.generation,
        "contentHash": row.content_hash,
    }
    if row.kind == "url":
        resource["url"] = spec.get("url")
        resource["autoRefresh"] = bool(row.auto_refresh)
        resource["refreshIntervalHours"] = int(row.refresh_interval_hours)
        resource["nextRefreshAt"] = iso(row.next_refresh_at)
    elif row.kind == "file":
        resource.update({k: spec.get(k) for k in ("fileId", "filename", "contentType", "size")})
    resource["lastCheckedAt"] = iso(row.last_checked_at)
    resource["lastChangedAt"] = iso(row.last_changed_at)
    resource["createdAt"] = iso(row.created_at)
    resource["updatedAt"] = iso(row.updated_at)
    if with_content:
        if row.kind == "faq":
            resource["items"] = spec.get("items", [])
        content = row.content if row.content is not None else spec.get("text")
        resource["content"] = content
    return resource

