"""What changed between two compiled configs, as `{field, before, after, kind}` entries.

Paths read like the API's field errors: `handoffConfig.transferRules[0].destination`. Lists whose items
carry an `id` (skills) are matched by id, so reordering is not a change and an added skill is one entry
(`skills[skl_…]`), not one per field. Lists of plain values (goals, languages) compare whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["added", "removed", "changed"]


@dataclass(frozen=True)
class Change:
    field: str
    before: Any
    after: Any
    kind: Kind

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "before": self.before, "after": self.after, "kind": self.kind}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _keyed(items: Any) -> bool:
    return isinstance(items, list) and all(isinstance(i, dict) and "id" in i for i in items)


def _leaf(path: str, before: Any, after: Any) -> list[Change]:
    kind: Kind = "added" if before is None else "removed" if after is None else "changed"
    return [Change(path or "(root)", before, after, kind)]


def diff(before: Any, after: Any, path: str = "") -> list[Change]:
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[Change] = []
        for key in list(after) + [k for k in before if k not in after]:
            sub = _join(path, key)
            if key not in before:
                changes.append(Change(sub, None, after[key], "added"))
            elif key not in after:
                changes.append(Change(sub, before[key], None, "removed"))
            else:
                changes.extend(diff(before[key], after[key], sub))
        return changes
    if _keyed(before) and _keyed(after) and (before or after):
        old = {i["id"]: i for i in before}
        new = {i["id"]: i for i in after}
        changes = []
        for item_id in list(new) + [k for k in old if k not in new]:
            sub = f"{path}[{item_id}]"
            if item_id not in old:
                changes.append(Change(sub, None, new[item_id], "added"))
            elif item_id not in new:
                changes.append(Change(sub, old[item_id], None, "removed"))
            else:
                changes.extend(diff(old[item_id], new[item_id], sub))
        return changes
    both_object_lists = (
        isinstance(before, list)
        and isinstance(after, list)
        and all(isinstance(i, dict) for i in before + after)
        and before
        and after
    )
    if both_object_lists:
        changes = []
        for index in range(max(len(before), len(after))):
            sub = f"{path}[{index}]"
            if index >= len(before):
                changes.append(Change(sub, None, after[index], "added"))
            elif index >= len(after):
                changes.append(Change(sub, before[index], None, "removed"))
            else:
                changes.extend(diff(before[index], after[index], sub))
        return changes
    return _leaf(path, before, after)
