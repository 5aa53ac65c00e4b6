"""CRD checks for tests: the checks themselves live in hooks/crdschema.py (the `llmsafespace
validate` command uses them too); this module re-exports them and adds test assertions."""
from __future__ import annotations

from typing import Any

from hooks.crdschema import (  # noqa: F401
    CRD_DIR, FORMAT_CHECKER, GROUP, ROOT, CRValidationError, apply_defaults, cel_errors, cel_program, cel_rules, crd,
    crd_schema, eval_rule, is_transition_rule, kind_of, load_crds, nodes, schema_errors, unknown_fields, validate_cr,
)


def assert_status_fits(kind: str, status: dict[str, Any]) -> None:
    """The status as the API server would store it: right types, nothing it would prune (the
    parent itself may be one the API server would reject, as in the invalid-spec cases)."""
    schema = crd_schema(kind)["properties"]["status"]
    full = {**status, "observedGeneration": 1}
    assert not schema_errors(schema, full), schema_errors(schema, full)
    assert not unknown_fields(schema, full), unknown_fields(schema, full)
