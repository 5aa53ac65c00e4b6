"""The Metacontroller controllers as an egress backend deploys them: metacontroller/*.yaml plus
metacontroller/egress/<backend>.yaml (childResources and attachments appended, hooks added), as
chart/templates/controllers.yaml merges them. Read by the simulated Metacontroller
(hooks/offline/simulate.py, the `llmsafespace` command) and the tests."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from hooks import constants as C

ROOT = Path(__file__).resolve().parent.parent
EGRESS_DIR = ROOT / "metacontroller" / "egress"


def backend_additions(backend: str) -> dict[str, dict[str, Any]]:
    """Controller name -> what the backend adds; {} for networkpolicy (no file)."""
    path = EGRESS_DIR / f"{backend}.yaml"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}


def with_backend(doc: dict[str, Any], backend: str) -> dict[str, Any]:
    added = backend_additions(backend).get(doc["metadata"]["name"]) or {}
    out = copy.deepcopy(doc)
    for key in ("childResources", "attachments"):
        if key in added:
            out["spec"][key] = list(out["spec"].get(key) or []) + copy.deepcopy(added[key])
    if "hooks" in added:
        out["spec"]["hooks"] = {**copy.deepcopy(added["hooks"]), **out["spec"].get("hooks", {})}
    return out


def controller_docs(backend: Optional[str] = None) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(manifest, controller) for every controller; with `backend`, as that backend deploys it."""
    for path in sorted((ROOT / "metacontroller").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                yield path, with_backend(doc, backend) if backend else doc


def all_backend_docs() -> Iterator[tuple[Path, dict[str, Any]]]:
    for backend in C.EGRESS_BACKENDS:
        yield from controller_docs(backend)
