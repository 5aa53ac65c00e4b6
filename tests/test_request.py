"""hooks/request.py: the typed view reads a request exactly as meta.objects and parent_of did."""
from __future__ import annotations

from typing import Any

import pytest

from hooks import constants as C
from hooks.meta import objects
from hooks.request import SyncRequest
from hooks.response import BadRequest
from tests.factory import runtime, sandbox, sync_request

POD = {"apiVersion": "v1", "kind": "Pod"}


def _pod(name: str, ns: str = "demo") -> dict[str, Any]:
    return {**POD, "metadata": {"name": name, "namespace": ns}}


def test_children_and_related_by_kind_sorted_like_objects() -> None:
    request = sync_request(sandbox("a"), children=[_pod("b"), _pod("a"), _pod("a", "other")],
                           related=[runtime("z"), runtime("y")])
    request["children"][C.GVK_POD]["junk"] = {"metadata": "not a map"}  # skipped, as objects() skips it
    req = SyncRequest.of(request)
    assert req.children_of(C.GVK_POD) == objects(request["children"], C.GVK_POD)
    assert [p["metadata"]["name"] for p in req.children_of(C.GVK_POD)] == ["a", "b", "a"]
    assert [r["metadata"]["name"] for r in req.related_of(C.GVK_RUNTIME)] == ["y", "z"]
    assert req.children_of(C.GVK_SERVICE) == [] and req.related_of("Nothing.v1") == []


def test_child_is_the_observed_object_and_lists_are_fresh() -> None:
    request = sync_request(sandbox("a"), children=[_pod("b"), _pod("a")])
    req = SyncRequest.of(request)
    assert req.child(C.GVK_POD, "b") is request["children"][C.GVK_POD]["demo/b"]
    assert req.child(C.GVK_POD, "missing") is None
    req.children_of(C.GVK_POD).clear()  # a caller editing its list changes nothing for the next one
    assert len(req.children_of(C.GVK_POD)) == 2


@pytest.mark.parametrize("children", [None, [], "x", 3])
def test_sections_that_are_not_maps_hold_nothing(children: Any) -> None:
    request = {"parent": sandbox("a"), "children": children, "related": children}
    req = SyncRequest.of(request)
    assert req.children_of(C.GVK_POD) == [] and req.related_of(C.GVK_RUNTIME) == []
    assert req.children == {} and req.related == {}


def test_parent_status_and_finalizing() -> None:
    plain = SyncRequest.of(sync_request(sandbox("a")))
    assert plain.previous_status == {} and plain.finalizing is False
    assert (plain.name, plain.namespace) == ("a", "demo") and plain.uid
    with_status = SyncRequest.of(sync_request(sandbox("a", status={"phase": "Running"})))
    assert with_status.previous_status == {"phase": "Running"}
    assert SyncRequest.of({"parent": {**sandbox("a"), "status": [1]}}).previous_status == {}
    assert SyncRequest.of(sync_request(sandbox("a"), finalizing=True)).finalizing is True
    assert SyncRequest.of(sync_request(sandbox("a", deleting=True))).finalizing is True


@pytest.mark.parametrize("request_", [{}, {"parent": None}, {"parent": {"spec": {}}}, {"parent": {"metadata": 1}}])
def test_a_request_without_a_parent_is_a_bad_request(request_: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        SyncRequest.of(request_)
