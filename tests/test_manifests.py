"""The Metacontroller manifests and the app agree: every webhook path is served, every route is
used, every hook speaks API v2, and every parent CRD has a status subresource."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import yaml

from hooks.server.routes import ROUTES
from hooks.manifests import all_backend_docs

ROOT = Path(__file__).parent.parent
MANIFESTS = sorted((ROOT / "metacontroller").glob("*.yaml"))


def controllers() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every controller as each egress backend deploys it (metacontroller/egress/)."""
    yield from all_backend_docs()


def hooks_of(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, hook in (doc["spec"].get("hooks") or {}).items():
        yield name, hook


def test_every_webhook_path_is_served_and_every_route_is_used() -> None:
    used = set()
    for path, doc in controllers():
        assert doc["apiVersion"] == "metacontroller.k8s.io/v1alpha1", path
        assert "sync" in doc["spec"]["hooks"], f"{path}: a controller without a sync hook fails every sync (MC #948)"
        for name, hook in hooks_of(doc):
            url_path = urlparse(hook["webhook"]["url"]).path
            assert url_path in ROUTES, f"{path}: {name} hook calls {url_path}, which the app does not serve"
            assert ROUTES[url_path].hook == name, f"{path}: {name} hook points at the {ROUTES[url_path].hook} route"
            assert hook.get("version") == "v2", f"{path}: {name} hook must use hook API v2"
            used.add(url_path)
    assert used == set(ROUTES), f"routes no controller calls: {sorted(set(ROUTES) - used)}"


def test_parent_crds_exist_with_status_subresource() -> None:
    crds = {}
    for path in (ROOT / "crds").glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        crds[f"{doc['spec']['names']['plural']}.{doc['spec']['group']}"] = doc
    for path, doc in controllers():
        if doc["kind"] != "CompositeController":
            continue
        parent = doc["spec"]["parentResource"]
        group = parent["apiVersion"].split("/")[0]
        crd = crds.get(f"{parent['resource']}.{group}")
        assert crd is not None, f"{path}: no CRD for {parent['resource']}.{group} in crds/"
        version = next(v for v in crd["spec"]["versions"] if v["name"] == parent["apiVersion"].split("/")[1])
        assert version.get("subresources", {}).get("status") == {}, f"{path}: Metacontroller ignores parents without a status subresource"
