"""The sandbox Pod. The only place that decides pod security, for cold sandboxes and warm pods
alike: non-root, read-only root filesystem, every capability dropped, no privilege escalation,
seccomp always set, no service-account token, no service links, writable paths as size-limited
emptyDirs, gVisor (or the configured runtime class) for securityLevel high, and a user namespace of
its own (hostUsers: false) where the runtime supports one (LLMSS_USER_NAMESPACES)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .. import constants as C
from ..config import Config


@dataclass  # per call, never edited; not frozen for speed (see conditions.Condition)
class PodShape:
    image: str
    security_level: str
    cpu: str
    memory: str
    ephemeral_storage: str
    writable_paths: tuple[str, ...]
    run_as_user: int = C.DEFAULT_RUN_AS_USER
    run_as_group: int = C.DEFAULT_RUN_AS_GROUP
    seccomp_type: str = C.SECCOMP_RUNTIME_DEFAULT
    seccomp_localhost_profile: Optional[str] = None
    cpu_pinning: bool = False
    termination_grace_seconds: int = C.DEFAULT_TIMEOUT_SECONDS
    persistent_claim: Optional[str] = None
    service_account: Optional[str] = None
    # (name, script) pairs run in order as init containers before the pod becomes Ready.
    preload_scripts: tuple[tuple[str, str], ...] = ()
    # The sandbox container's env and envFrom, as the API wants them (validated, wire form): the
    # spec's, then the egress proxy's variables with the proxy backend (hooks/egress_proxy.py).
    env: tuple[dict[str, Any], ...] = ()
    env_from: tuple[dict[str, Any], ...] = ()
    # What the RuntimeEnvironment reports of its nodes (hooks/runtime_sync.py): with "auto", a pod
    # asks for its own user namespace only where the nodes can give it one.
    user_namespaces_supported: bool = True


def seccomp_profile(shape: PodShape) -> dict[str, Any]:
    profile: dict[str, Any] = {"type": shape.seccomp_type}
    if shape.seccomp_type == C.SECCOMP_LOCALHOST and shape.seccomp_localhost_profile:
        profile["localhostProfile"] = shape.seccomp_localhost_profile
    return profile


def restricted_security_context(user: int, group: int, seccomp: dict[str, Any]) -> dict[str, Any]:
    """A container's securityContext under Pod Security "restricted", read-only root included:
    every pod the hooks build (sandbox, warm and the egress proxy) runs with it."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsGroup": group,
        "runAsNonRoot": True,
        "runAsUser": user,
        "seccompProfile": seccomp,
    }


def container_security_context(shape: PodShape) -> dict[str, Any]:
    return restricted_security_context(shape.run_as_user, shape.run_as_group, seccomp_profile(shape))


def user_namespaces(security_level: str, config: Config, supported: bool = True) -> bool:
    """Whether pods of this level run in their own user namespace (hostUsers: false): "auto" for
    every level without a runtime class (gVisor's runsc refuses hostUsers: false) where the
    runtime's nodes support them (`supported`: a kubelet whose runtime lacks them refuses the pod,
    which would then wait in ContainerCreating until its startup timeout), "on" for every level
    whatever the nodes report, "off" for none."""
    if config.user_namespaces == C.USER_NAMESPACES_ON:
        return True
    return config.user_namespaces == C.USER_NAMESPACES_AUTO and security_level != "high" and supported


def runtime_env(shape: PodShape, config: Config) -> list[dict[str, Any]]:
    """What the runtime in the container needs from the platform (docs/runtime-contract.md): the
    gateway's public keys, its own pod UID (the audience of every signed call; downward API,
    written as the API server stores it) and the writable paths. Last, after the user's env,
    though validators already refuse LLMSS_* names there."""
    return [
        {"name": C.ENV_GATEWAY_PUBLIC_KEYS, "value": ",".join(config.gateway_public_keys)},
        {"name": C.ENV_POD_UID, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.uid"}}},
        {"name": C.ENV_RUNTIME_WRITABLE, "value": ":".join(sorted(shape.writable_paths))},
    ]


def _volumes(shape: PodShape) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for index, path in enumerate(sorted(shape.writable_paths)):
        vol = f"writable-{index}"
        # Each scratch directory is capped at the pod's ephemeral storage; the container's
        # ephemeral-storage limit caps their sum.
        volumes.append({"name": vol, "emptyDir": {"sizeLimit": shape.ephemeral_storage}})
        mounts.append({"name": vol, "mountPath": path})
    if shape.persistent_claim:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": shape.persistent_claim}})
        mounts.append({"name": "data", "mountPath": C.DATA_MOUNT_PATH})
    return volumes, mounts


def build_pod(
    name: str,
    namespace: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    shape: PodShape,
    config: Config,
) -> dict[str, Any]:
    quantities = {"cpu": shape.cpu, "memory": shape.memory, "ephemeral-storage": shape.ephemeral_storage}
    volumes, mounts = _volumes(shape)
    security = container_security_context(shape)
    container: dict[str, Any] = {
        "name": C.SANDBOX_CONTAINER,
        "image": shape.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": C.SANDBOX_PORT_NAME, "containerPort": C.SANDBOX_PORT, "protocol": "TCP"}],
        # requests == limits: Guaranteed QoS, which CPU pinning (static CPU manager) requires.
        "resources": {"limits": dict(quantities), "requests": dict(quantities)},
        "securityContext": security,
        "livenessProbe": {
            "httpGet": {"path": C.LIVENESS_PATH, "port": C.SANDBOX_PORT},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
        },
        "readinessProbe": {
            "httpGet": {"path": C.READINESS_PATH, "port": C.SANDBOX_PORT},
            "initialDelaySeconds": 2,
            "periodSeconds": 5,
        },
        "volumeMounts": mounts,
    }
    # Only the sandbox container gets the environment, not the preload init containers: they run
    # before the pod serves anyone and need no credentials. Secrets appear only as references.
    container["env"] = [dict(e) for e in shape.env] + runtime_env(shape, config)
    if shape.env_from:
        container["envFrom"] = [dict(e) for e in shape.env_from]
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "containers": [container],
        "enableServiceLinks": False,
        # hostNetwork/hostPID/hostIPC are left out, which is false: the API server drops a false
        # value of these plain booleans, and an InPlace child (warm pods) that says it anyway is
        # rewritten by Metacontroller on every sync (measured: 5 PUTs per warm pod).
        "restartPolicy": "Always",
        "securityContext": {
            "fsGroup": shape.run_as_group,
            "fsGroupChangePolicy": "OnRootMismatch",
            "runAsGroup": shape.run_as_group,
            "runAsNonRoot": True,
            "runAsUser": shape.run_as_user,
            "seccompProfile": seccomp_profile(shape),
        },
        # Bounded by the operator: the grace period is how long a deleted sandbox's code may
        # keep running, and spec.timeout (the original mapping) reaches an hour.
        "terminationGracePeriodSeconds": min(shape.termination_grace_seconds, config.max_termination_grace_seconds),
        "volumes": volumes,
    }
    if shape.service_account:
        spec["serviceAccountName"] = shape.service_account
    if shape.preload_scripts:
        spec["initContainers"] = [
            {
                "name": f"preload-{script_name}",
                "image": shape.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/sh", "-c", script],
                "resources": {"limits": dict(quantities), "requests": dict(quantities)},
                "securityContext": dict(security),
                "volumeMounts": mounts,
            }
            for script_name, script in shape.preload_scripts
        ]
    if shape.security_level == "high":
        spec["runtimeClassName"] = config.high_security_runtime_class
    if user_namespaces(shape.security_level, config, shape.user_namespaces_supported):
        # The pod's root, and its uid 1000, are unprivileged ids on the node (docs/install.md,
        # "User namespaces"). hostUsers is a pointer: the API server keeps false as written.
        spec["hostUsers"] = False
    annotations = dict(annotations)
    if shape.cpu_pinning:
        spec["nodeSelector"] = {C.NODE_SELECTOR_CPU_PINNING: "true"}
        annotations[C.ANNOTATION_CPU_PINNING] = "true"
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(sorted(labels.items()))}
    if annotations:
        metadata["annotations"] = dict(sorted(annotations.items()))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
