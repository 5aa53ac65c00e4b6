"""Nodes without a kubelet: kwok runs them from the Stages below, and the cluster objects a real
cluster of our users would have (RuntimeClass, StorageClasses).

Stages (kwok.x-k8s.io/v1alpha1, our own): a fake node becomes Ready; a pod bound to it goes
Pending -> Running + Ready with realistic status fields (conditions, containerStatuses,
startTime, podIP); a pod being deleted is removed shortly after; and a test can make a pod fail
by annotating it `e2e.llmsafespace.dev/fail` with one of FAILURES, as a kubelet would report it."""
from __future__ import annotations

import json
from pathlib import Path

FAIL_ANNOTATION = "e2e.llmsafespace.dev/fail"
FAILURES = ("ImagePullBackOff", "OOMKilled", "Evicted")
NODE = "kwok-node-0"
PINNED_NODE = "kwok-pinned-0"  # labelled cpu-pinning=true, for sandboxes with spec.resources.cpuPinning
RUNTIME_CLASS = "gvisor"  # securityLevel: high (the chart's default config.highSecurityRuntimeClass)
STORAGE_CLASS = "standard"  # the default class
RETAIN_STORAGE_CLASS = "retained"  # reclaimPolicy Retain

_FAIL_KEY = f'.metadata.annotations["{FAIL_ANNOTATION}"]'

_NODE_READY = """
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: e2e-node-ready}
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ["True"]
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      {{ range NodeConditions }}
      - lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $now | Quote }}
        message: {{ .message | Quote }}
        reason: {{ .reason | Quote }}
        status: {{ .status | Quote }}
        type: {{ .type | Quote }}
      {{ end }}
      addresses:
      - {address: {{ NodeIP | Quote }}, type: InternalIP}
      - {address: {{ NodeName | Quote }}, type: Hostname}
      allocatable: {{ YAML .status.allocatable 1 }}
      capacity: {{ YAML .status.capacity 1 }}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        kubeletVersion: fake
        containerRuntimeVersion: kwok
      # What a kubelet on containerd >= 2.0 with runc >= 1.2 reports: the RuntimeEnvironment hook
      # reads it to decide hostUsers (hooks/runtime_sync.py).
      runtimeHandlers:
      - name: ""
        features: {recursiveReadOnlyMounts: true, userNamespaces: true}
      - name: runc
        features: {recursiveReadOnlyMounts: true, userNamespaces: true}
      phase: Running
"""

_POD_RUNNING = f"""
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {{name: e2e-pod-running}}
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
    - {{key: '.metadata.deletionTimestamp', operator: DoesNotExist}}
    - {{key: '.spec.nodeName', operator: Exists}}
    - {{key: '.status.phase', operator: In, values: [Pending]}}
    - {{key: '{_FAIL_KEY}', operator: DoesNotExist}}
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      - {{type: PodReadyToStartContainers, status: "True", lastTransitionTime: {{{{ $now | Quote }}}}}}
      - {{type: Initialized, status: "True", lastTransitionTime: {{{{ $now | Quote }}}}}}
      - {{type: ContainersReady, status: "True", lastTransitionTime: {{{{ $now | Quote }}}}}}
      - {{type: Ready, status: "True", lastTransitionTime: {{{{ $now | Quote }}}}}}
      - {{type: PodScheduled, status: "True", lastTransitionTime: {{{{ $now | Quote }}}}}}
      initContainerStatuses:
      {{{{ range .spec.initContainers }}}}
      - name: {{{{ .name | Quote }}}}
        image: {{{{ .image | Quote }}}}
        imageID: {{{{ printf "kwok://%s" .image | Quote }}}}
        ready: true
        restartCount: 0
        state:
          terminated: {{exitCode: 0, reason: Completed, startedAt: {{{{ $now | Quote }}}}, finishedAt: {{{{ $now | Quote }}}}}}
      {{{{ end }}}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - name: {{{{ .name | Quote }}}}
        image: {{{{ .image | Quote }}}}
        imageID: {{{{ printf "kwok://%s" .image | Quote }}}}
        containerID: {{{{ printf "kwok://%s" .name | Quote }}}}
        ready: true
        started: true
        restartCount: 0
        state:
          running: {{startedAt: {{{{ $now | Quote }}}}}}
      {{{{ end }}}}
      hostIP: {{{{ NodeIPWith .spec.nodeName | Quote }}}}
      podIP: {{{{ PodIPWith .spec.nodeName false .metadata.uid .metadata.name .metadata.namespace | Quote }}}}
      phase: Running
      startTime: {{{{ $now | Quote }}}}
"""

# Deleted pods go after a short delay: a well-behaved container exits on SIGTERM well within its
# grace period (a sandbox's is its `timeout`, 300 s by default).
_POD_DELETE = """
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: e2e-pod-delete}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: Exists}
  delay: {durationMilliseconds: 300}
  next:
    finalizers: {empty: true}
    delete: true
"""

# What a kubelet reports for each failure a test can ask for.
_FAILURE_STATUS = {
    "ImagePullBackOff": """
      phase: Pending
      conditions:
      - {type: Ready, status: "False", reason: ContainersNotReady, lastTransitionTime: {{ $now | Quote }}}
      - {type: PodScheduled, status: "True", lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        imageID: ""
        ready: false
        started: false
        restartCount: 0
        state:
          waiting: {reason: ImagePullBackOff, message: {{ printf "Back-off pulling image %q" .image | Quote }}}
      {{ end }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      startTime: {{ $now | Quote }}""",
    "OOMKilled": """
      phase: Running
      conditions:
      - {type: Ready, status: "False", reason: ContainersNotReady, lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "False", reason: ContainersNotReady, lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        imageID: {{ printf "kwok://%s" .image | Quote }}
        ready: false
        started: false
        restartCount: 1
        lastState:
          terminated: {exitCode: 137, reason: OOMKilled, startedAt: {{ $now | Quote }}, finishedAt: {{ $now | Quote }}}
        state:
          waiting: {reason: CrashLoopBackOff, message: "back-off 10s restarting failed container"}
      {{ end }}""",
    "Evicted": """
      phase: Failed
      reason: Evicted
      message: "The node was low on resource: memory."
      conditions:
      - {type: Ready, status: "False", reason: PodFailed, lastTransitionTime: {{ $now | Quote }}}
      - {type: DisruptionTarget, status: "True", reason: TerminationByKubelet, lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        imageID: {{ printf "kwok://%s" .image | Quote }}
        ready: false
        started: false
        restartCount: 0
        state:
          terminated: {exitCode: 137, reason: ContainerStatusUnknown, startedAt: {{ $now | Quote }}, finishedAt: {{ $now | Quote }}}
      {{ end }}""",
}
# The status field that says a failure was applied, so its stage matches once.
_FAILURE_MARK = {
    "ImagePullBackOff": '.status.containerStatuses.[0].state.waiting.reason',
    "OOMKilled": '.status.containerStatuses.[0].lastState.terminated.reason',
    "Evicted": '.status.reason',
}


def _failure_stage(failure: str) -> str:
    return f"""
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {{name: e2e-pod-{failure.lower()}}}
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
    - {{key: '.metadata.deletionTimestamp', operator: DoesNotExist}}
    - {{key: '.spec.nodeName', operator: Exists}}
    - {{key: '{_FAIL_KEY}', operator: In, values: [{failure}]}}
    - {{key: '{_FAILURE_MARK[failure]}', operator: NotIn, values: [{failure}]}}
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}{_FAILURE_STATUS[failure]}
"""


def stages() -> str:
    return "---".join([_NODE_READY, _POD_RUNNING, _POD_DELETE, *(_failure_stage(f) for f in FAILURES)])


def write_stages(path: Path) -> Path:
    path.write_text(stages())
    return path


def _node(name: str, labels: dict[str, str]) -> dict:
    quantities = {"cpu": "64", "memory": "512Gi", "pods": "500", "ephemeral-storage": "2Ti"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                     "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                                "type": "kwok", **labels}},
        # Pods need ephemeral-storage capacity: every sandbox container requests it.
        "status": {"allocatable": quantities, "capacity": quantities},
    }


def cluster_objects() -> str:
    """Nodes, the RuntimeClass for securityLevel high, and storage classes whose claims bind
    (kube-controller-manager's hostPath provisioner), as one JSON list for kubectl apply."""
    items = [
        _node(NODE, {}),
        _node(PINNED_NODE, {"cpu-pinning": "true"}),
        {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": RUNTIME_CLASS}, "handler": "runsc"},
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
         "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
         "provisioner": "kubernetes.io/host-path", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"},
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": RETAIN_STORAGE_CLASS},
         "provisioner": "kubernetes.io/host-path", "reclaimPolicy": "Retain", "volumeBindingMode": "Immediate"},
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
