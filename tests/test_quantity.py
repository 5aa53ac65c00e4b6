"""Our small quantity parser agrees with the kubernetes client's."""
from __future__ import annotations

import pytest
from kubernetes.utils import parse_quantity as reference

from hooks.quantity import parse_quantity

SAMPLES = ["500m", "1", "1.5", "2000m", "512Mi", "1Gi", "5Gi", "1Ti", "100k", "1M", "1e3", "2E2", ".5", "0.25", "128974848", "129e6", "123Mi", "1n", "7u"]


@pytest.mark.parametrize("text", SAMPLES)
def test_agrees_with_kubernetes_client(text: str) -> None:
    assert parse_quantity(text) == reference(text)


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "5 Gi", "Mi", "1Qi", "--1"])
def test_rejects_what_is_not_a_quantity(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)
