"""The install, as a platform engineer does it: `helm install` of chart/ (done by the session
fixture), and the same chart rendered with `helm template` for GitOps, on the real API server."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.e2e.controlplane import RELEASE, RELEASE_NAMESPACE, ROOT, helm_binary
from tests.e2e.kube import Kube, condition

CRD_FILES = sorted((ROOT / "crds").glob("*.yaml"))


def test_every_crd_is_established_with_its_status_subresource(kube: Kube, clean_cluster: None) -> None:
    # kube-apiserver 1.36 refused the Sandbox CRD before (a schema default broke a CEL rule):
    # every CRD of crds/ must be accepted, its names accepted and its status subresource on.
    for path in CRD_FILES:
        source = yaml.safe_load(path.read_text())
        live = kube.core("CustomResourceDefinition", "", source["metadata"]["name"])
        assert live is not None, f"{path.name} not installed"
        assert condition(live, "Established").get("status") == "True", live.get("status")
        assert condition(live, "NamesAccepted").get("status") == "True", live.get("status")
        for version, shipped in zip(live["spec"]["versions"], source["spec"]["versions"]):
            assert version.get("subresources") == shipped.get("subresources"), f"{path.name} {version['name']}"
            if source["spec"]["names"]["kind"] != "WarmPoolOffer":  # a child only, never a parent
                assert version["subresources"]["status"] == {}, f"{path.name} {version['name']}: no status subresource"
        # What the API server stores is what we ship (no field dropped by its own normalisation).
        assert live["spec"]["versions"][0]["schema"] == source["spec"]["versions"][0]["schema"]


def test_every_controller_started_without_warnings(kube: Kube, clean_cluster: None) -> None:
    ours = {yaml.safe_load(p.read_text())["metadata"]["name"] for p in (ROOT / "metacontroller").glob("*.yaml")}
    live = {o["metadata"]["name"] for kind in ("CompositeController", "DecoratorController") for o in kube.list(kind)}
    assert live == ours
    # Until its next discovery Metacontroller cannot find CRDs installed after it started, and says
    # so in an event; anything else (a parent CRD without the status subresource, a bad hook) is ours.
    install_noise = re.compile(r"^Cannot create new controller: discovery: can't find resource \w+ in apiVersion llmsafespace.dev/v1$")
    warnings = [f"{e['involvedObject']['name']}: {e.get('message')}" for e in kube.list("Event")
                if e.get("involvedObject", {}).get("kind") in ("CompositeController", "DecoratorController")
                and e.get("type") == "Warning" and not install_noise.match(e.get("message") or "")]
    assert not warnings


def _render(kube: Kube) -> list[dict]:
    proc = subprocess.run(
        [helm_binary(), "template", RELEASE, str(ROOT / "chart"), "--namespace", RELEASE_NAMESPACE, "--include-crds",
         "--set", f"externalHookServer.url={kube.cp.hook_url}", "--set", f"hookAuth.token={kube.cp.token}"],
        capture_output=True, text=True, check=True, timeout=120)
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_gitops_render_is_accepted_by_the_api_server(kube: Kube, clean_cluster: None, tmp_path: Path) -> None:
    """`helm template | kubectl apply`: every object passes the API server's validation and
    admission (server-side dry run, so the installed release stays as it is), and the token
    Secret comes before the controllers that read it (Metacontroller reads it when a controller
    starts)."""
    docs = _render(kube)
    kinds = [d["kind"] for d in docs]
    assert kinds.index("Secret") < kinds.index("CompositeController") and kinds.index("Secret") < kinds.index("DecoratorController")
    assert kinds[:5] == ["CustomResourceDefinition"] * 5, "CRDs first"
    rendered = tmp_path / "render.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    out = kube.kubectl("apply", "--dry-run=server", "--server-side", "--force-conflicts", "-f", str(rendered))
    assert out.count("(server dry run)") == len(docs), out
