"""Names, labels and small accessors on the JSON objects Metacontroller sends."""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone
from collections.abc import Mapping
from typing import Any, Iterable

from . import constants as C

# isinstance(x, MAPPING) is isinstance(x, Mapping) with dict tried first: JSON objects are dicts,
# and the ABC's own check costs ~4x a type check (a hook makes dozens per sync).
MAPPING = (dict, Mapping)

_INVALID_LABEL_CHARS = re.compile(r"[^a-z0-9-]")
# The tail dns_label gives hashed names; a name already ending like this is hashed too, so no
# name can be chosen to equal another name's hashed form (tests/test_fuzz.py).
_HASHED_TAIL = re.compile(r"-[0-9a-f]{10}$")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def dns_label(*parts: str, max_len: int = C.MAX_DNS_LABEL) -> str:
    """A DNS-1035 label (what Service names need) built from parts, deterministic for any input.

    Names that are already valid and short enough are kept as they are; anything else (dots,
    upper case, too long) is cleaned, truncated and given a hash of the original, so two different
    sandboxes can never share a child name."""
    raw = "-".join(parts)
    clean = _INVALID_LABEL_CHARS.sub("-", raw.lower())
    if clean == raw and len(raw) <= max_len and raw[:1].isalpha() and raw[-1:].isalnum() and not _HASHED_TAIL.search(raw):
        return raw
    digest = _digest(raw)
    head = clean[: max_len - len(digest) - 1].strip("-") or "x"
    if not head[0].isalpha():
        head = ("x" + head)[: max_len - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}"


_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
# Kubernetes' name rules (apimachinery validation): object names, label and annotation keys.
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def is_dns_subdomain(text: str) -> bool:
    return len(text) <= C.MAX_DNS_SUBDOMAIN and DNS_SUBDOMAIN.fullmatch(text) is not None


def is_dns_label(text: str) -> bool:
    return len(text) <= C.MAX_DNS_LABEL and DNS_LABEL.fullmatch(text) is not None


def qualified_name_problem(key: str) -> str | None:
    """Why `key` is not a Kubernetes qualified name ([prefix/]name, the form of label and annotation
    keys), or None."""
    prefix, slash, rest = key.rpartition("/")
    if slash and (not prefix or not is_dns_subdomain(prefix)):
        return f"its prefix must be a DNS-1123 subdomain of at most {C.MAX_DNS_SUBDOMAIN} characters"
    if not rest or len(rest) > C.MAX_QUALIFIED_NAME:
        return f"its name part must be 1 to {C.MAX_QUALIFIED_NAME} characters"
    if not _QUALIFIED_NAME.fullmatch(rest):
        return "its name part must be alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a Kubernetes label value, or None."""
    if len(value) > C.MAX_LABEL_VALUE:
        return f"at most {C.MAX_LABEL_VALUE} characters"
    if not _LABEL_VALUE.fullmatch(value):
        return "alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
    return None


def label_value(value: str) -> str:
    """A valid label value (<= 63 chars, alphanumeric at both ends) for any string."""
    if len(value) <= C.MAX_LABEL_VALUE and _LABEL_VALUE.fullmatch(value):
        return value
    return dns_label(value, max_len=C.MAX_LABEL_VALUE)


def name(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def namespace(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("namespace", ""))


def uid(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("uid", ""))


def labels(obj: Mapping[str, Any]) -> dict[str, str]:
    value = obj.get("metadata", {}).get("labels") or {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, MAPPING) else {}


def annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    value = obj.get("metadata", {}).get("annotations") or {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, MAPPING) else {}


def is_deleting(obj: Mapping[str, Any]) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))


def is_reserved_label(key: str) -> bool:
    return key in C.RESERVED_LABEL_KEYS or key.startswith(C.LABEL_PREFIX) or ".llmsafespace.dev/" in key


def user_labels(obj: Mapping[str, Any]) -> dict[str, str]:
    """The parent's labels minus every key the controller owns: they may decorate children but can
    never influence a selector."""
    return {k: v for k, v in labels(obj).items() if not is_reserved_label(k)}


def objects(section: Any, gvk: str) -> list[dict[str, Any]]:
    """Objects of one kind from a `children` or `related` map, sorted by namespace/name.

    Metacontroller hook v2 keys maps by `namespace/name` or `name`; never rely on the key."""
    if not isinstance(section, MAPPING):
        return []
    group = section.get(gvk)
    if not group:  # absent or empty, the usual case for most kinds: nothing to check or sort
        return []
    if not isinstance(group, MAPPING):
        return []
    items = [o for o in group.values() if isinstance(o, MAPPING) and isinstance(o.get("metadata"), MAPPING)]
    if len(items) < 2:  # most groups hold one object: nothing to sort
        return items  # type: ignore[return-value]
    return sorted(items, key=lambda o: (namespace(o), name(o)))  # type: ignore[arg-type, return-value]


def find(items: Iterable[Mapping[str, Any]], obj_name: str) -> dict[str, Any] | None:
    for item in items:
        if name(item) == obj_name:
            return dict(item)
    return None


# Time: all time values are RFC 3339 UTC with second precision, like the API server writes them.

def fmt_time(moment: datetime) -> str:
    utc = moment.astimezone(timezone.utc).replace(microsecond=0, tzinfo=None)
    if utc.year < 1000:  # strftime writes such a year unpadded ("1-01-01T..."): kept as it was
        return utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    # The same text as strftime("%Y-%m-%dT%H:%M:%SZ"), several times faster (every sync stamps times).
    return utc.isoformat() + "Z"


def add_seconds(moment: datetime, seconds: float) -> datetime:
    """moment + seconds, saturating at the ends of the calendar instead of raising OverflowError
    (a creationTimestamp in year 9999 must not fail the hook)."""
    try:
        return moment + timedelta(seconds=seconds)
    except OverflowError:
        return datetime.max.replace(tzinfo=timezone.utc) if seconds > 0 else datetime.min.replace(tzinfo=timezone.utc)


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def created(obj: Mapping[str, Any]) -> datetime | None:
    return parse_time(obj.get("metadata", {}).get("creationTimestamp"))
