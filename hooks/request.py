"""A Metacontroller CompositeController request, read once at the edge of a hook.

The sync hooks used to dig `request["children"][gvk]` and `parent["status"]` out of raw dicts in
every layer; SyncRequest is the one place that does it. It changes nothing in how objects are
read: `children_of` / `related_of` are `meta.objects` (sorted by namespace/name, malformed entries
skipped), so a hook answers byte for byte as before."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from .meta import MAPPING, is_deleting, name, namespace, objects, uid
from .response import parent_of


def _section(request: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    # Anything but a map (absent, null, a list) means no objects: meta.objects reads it so too.
    value = request.get(key)
    return value if isinstance(value, MAPPING) else {}


@dataclass  # per call, never edited; not frozen for speed (see conditions.Condition)
class SyncRequest:
    """The parent, what its previous sync wrote, and the observed children and related objects,
    both keyed by group/version kind as Metacontroller sends them (`Pod.v1`, `Sandbox.llmsafespace.dev/v1`)."""

    parent: Mapping[str, Any]
    previous_status: Mapping[str, Any]  # {} when the parent has no status (yet)
    children: Mapping[str, Any]  # gvk -> {key: object}; read through children_of, never by key
    related: Mapping[str, Any]  # likewise, for related_of
    finalizing: bool  # Metacontroller says so, or the parent is being deleted
    # objects() sorts a whole group; a hook reads some groups several times, so each is read once.
    _parsed: dict[tuple[str, str], tuple[dict[str, Any], ...]] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def of(request: Mapping[str, Any]) -> "SyncRequest":
        """Raises response.BadRequest (HTTP 400) when the request has no parent with metadata."""
        parent = parent_of(request)
        status = parent.get("status")
        return SyncRequest(
            parent=parent,
            previous_status=status if isinstance(status, MAPPING) else {},
            children=_section(request, "children"),
            related=_section(request, "related"),
            finalizing=bool(request.get("finalizing")) or is_deleting(parent),
        )

    @property
    def name(self) -> str:
        return name(self.parent)

    @property
    def namespace(self) -> str:
        return namespace(self.parent)

    @property
    def uid(self) -> str:
        return uid(self.parent)

    def children_of(self, gvk: str) -> list[dict[str, Any]]:
        """Observed children of one kind, sorted by namespace/name (a fresh list: callers may edit it)."""
        return list(self._group("children", gvk))

    def child(self, gvk: str, child_name: str) -> Optional[dict[str, Any]]:
        """The first observed child of this kind and name (the object itself, not a copy), or None."""
        return next((o for o in self._group("children", gvk) if name(o) == child_name), None)

    def observed_names(self, gvks: tuple[str, ...]) -> set[tuple[Any, str]]:
        """(kind, name) of every observed child of these kinds (no list copied per kind)."""
        return {(o.get("kind"), name(o)) for gvk in gvks for o in self._group("children", gvk)}

    def related_of(self, gvk: str) -> list[dict[str, Any]]:
        """Related objects of one kind, sorted by namespace/name."""
        return list(self._group("related", gvk))

    def _group(self, section: str, gvk: str) -> tuple[dict[str, Any], ...]:
        key = (section, gvk)
        if key not in self._parsed:
            self._parsed[key] = tuple(objects(self.children if section == "children" else self.related, gvk))
        return self._parsed[key]
