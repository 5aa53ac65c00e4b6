"""Golden desired state for representative sandboxes; every child validated against the real
Kubernetes schemas, every pod checked against the security bar."""
from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any, Callable, Mapping

import kubernetes_validate
import pytest

from hooks import sandbox_sync
from hooks.server import jsonio
from hooks.config import Config
from tests.factory import NOW
from tests.golden import check_golden
from tests.sandbox_cases import BACKEND_CASES, FINALIZE_CASES, SYNC_CASES
from tests.security import assert_pod_hardened

K8S_VERSION = "1.33"
Hook = Callable[[Mapping[str, Any], datetime], dict[str, Any]]
ALL: dict[str, tuple[Callable[[], dict[str, Any]], Hook]] = {
    **{k: (v, sandbox_sync.sync) for k, v in SYNC_CASES.items()},
    **{k: (v, sandbox_sync.finalize) for k, v in FINALIZE_CASES.items()},
    **{k: (v, partial(sandbox_sync.sync, config=Config(egress_backend=backend))) for k, (v, backend) in BACKEND_CASES.items()},
}
# Kinds of other projects' APIs (egress backends): checked against their CRDs in tests/e2e.
FOREIGN_KINDS = ("CiliumNetworkPolicy",)


@pytest.mark.parametrize("case", sorted(ALL))
def test_golden(case: str) -> None:
    build, hook = ALL[case]
    request = build()
    check_golden(f"sandbox/{case}.json", request, hook(request, NOW))


@pytest.mark.parametrize("case", sorted(ALL))
def test_children_validate_strictly(case: str) -> None:
    build, hook = ALL[case]
    for child in hook(build(), NOW)["children"]:
        if child["kind"] not in FOREIGN_KINDS:
            kubernetes_validate.validate(child, K8S_VERSION, strict=True)


@pytest.mark.parametrize("case", sorted(ALL))
def test_pods_are_hardened(case: str) -> None:
    build, hook = ALL[case]
    for child in hook(build(), NOW)["children"]:
        if child["kind"] == "Pod":
            assert_pod_hardened(child)


@pytest.mark.parametrize("case", sorted(ALL))
def test_deterministic(case: str) -> None:
    build, hook = ALL[case]
    assert jsonio.dumps(hook(build(), NOW)) == jsonio.dumps(hook(build(), NOW))


@pytest.mark.parametrize("case", sorted(ALL))
def test_status_fits_the_crd_schema(case: str) -> None:
    """The API server prunes status fields the CRD does not declare (MC #805): every field the
    hook writes must be in the schema, with the right type."""
    from tests.crdutil import validate_cr

    build, hook = ALL[case]
    request = build()
    # Only the status is under test: some cases carry specs the CRD itself would refuse.
    parent = {**request["parent"], "spec": {"runtime": "python:3.11"},
              "status": {**hook(request, NOW)["status"], "observedGeneration": 1}}
    validate_cr(parent)
