"""Every key, name and default the hooks and manifests share, defined once."""
from __future__ import annotations

from typing import Final

GROUP: Final = "llmsafespace.dev"
VERSION: Final = "v1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

# Kinds of our API group.
KIND_SANDBOX: Final = "Sandbox"
KIND_PROFILE: Final = "SandboxProfile"
KIND_RUNTIME: Final = "RuntimeEnvironment"
KIND_WARMPOOL: Final = "WarmPool"
KIND_WARMPOD: Final = "WarmPod"

# Metacontroller's map keys for the kinds we see in `children` and `related` (Kind.group/version;
# core kinds are Kind.version).
def gvk_key(kind: str, api_version: str) -> str:
    return f"{kind}.{api_version}"


GVK_POD: Final = gvk_key("Pod", "v1")
GVK_SERVICE: Final = gvk_key("Service", "v1")
GVK_SERVICE_ACCOUNT: Final = gvk_key("ServiceAccount", "v1")
GVK_PVC: Final = gvk_key("PersistentVolumeClaim", "v1")
GVK_NETWORK_POLICY: Final = gvk_key("NetworkPolicy", "networking.k8s.io/v1")
GVK_RESOURCE_QUOTA: Final = gvk_key("ResourceQuota", "v1")
GVK_LIMIT_RANGE: Final = gvk_key("LimitRange", "v1")
GVK_SANDBOX: Final = gvk_key(KIND_SANDBOX, API_VERSION)
GVK_PROFILE: Final = gvk_key(KIND_PROFILE, API_VERSION)
GVK_RUNTIME: Final = gvk_key(KIND_RUNTIME, API_VERSION)
GVK_WARMPOOL: Final = gvk_key(KIND_WARMPOOL, API_VERSION)
GVK_WARMPOD: Final = gvk_key(KIND_WARMPOD, API_VERSION)

# Labels the controller owns. User labels with these keys (or any key under our prefix) are
# dropped before they reach a child, so a tenant cannot steer selectors or isolation.
LABEL_APP: Final = "app"
LABEL_COMPONENT: Final = "component"
APP_NAME: Final = "llmsafespace"
COMPONENT_SANDBOX: Final = "sandbox"
COMPONENT_WARMPOD: Final = "warmpod"
COMPONENT_API: Final = "api"
LABEL_PREFIX: Final = f"{GROUP}/"
LABEL_SANDBOX_ID: Final = f"{GROUP}/sandbox-id"  # the sandbox's (possibly shortened) name
LABEL_SANDBOX_UID: Final = f"{GROUP}/sandbox-uid"  # the identity selectors use
LABEL_WARMPOOL: Final = f"{GROUP}/warmpool"
LABEL_WARMPOD: Final = f"{GROUP}/warmpod"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "llmsafespace-hooks"
LABEL_CONTROLLER_UID: Final = "controller-uid"  # added by Metacontroller (generateSelector)
RESERVED_LABEL_KEYS: Final = frozenset(
    {LABEL_APP, LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_CONTROLLER_UID}
)

# Annotations.
ANNOTATION_USE_WARM_POD: Final = f"{GROUP}/use-warm-pod"
ANNOTATION_CPU_PINNING: Final = "cpu-pinning.llmsafespace.dev/enabled"
ANNOTATION_SANDBOX: Final = f"{GROUP}/sandbox"  # namespace/name of the owning sandbox, informational
ANNOTATION_PRELOAD_HASH: Final = f"{GROUP}/preload-hash"
NODE_SELECTOR_CPU_PINNING: Final = "cpu-pinning"

# Tenant namespaces (DecoratorController over Namespaces).
LABEL_TENANT_NAMESPACE: Final = f"{GROUP}/tenant"
ANNOTATION_QUOTA_PREFIX: Final = f"{GROUP}/quota-"
ANNOTATION_LIMIT_PREFIX: Final = f"{GROUP}/limit-"
ANNOTATION_GVISOR: Final = f"{GROUP}/gvisor"

# The sandbox container's contract (original design).
SANDBOX_CONTAINER: Final = "sandbox"
SANDBOX_PORT: Final = 8080
SANDBOX_PORT_NAME: Final = "http"
LIVENESS_PATH: Final = "/health"
READINESS_PATH: Final = "/ready"
DATA_MOUNT_PATH: Final = "/data"

# Spec defaults of the original design; the CRDs carry the same values (a test compares them).
DEFAULT_SECURITY_LEVEL: Final = "standard"
SECURITY_LEVELS: Final = ("standard", "high", "custom")
DEFAULT_TIMEOUT_SECONDS: Final = 300
MAX_TIMEOUT_SECONDS: Final = 3600
DEFAULT_CPU: Final = "500m"
DEFAULT_MEMORY: Final = "512Mi"
DEFAULT_EPHEMERAL_STORAGE: Final = "1Gi"
DEFAULT_VOLUME_SIZE: Final = "5Gi"
DEFAULT_WRITABLE_PATHS: Final = ("/tmp", "/workspace")
DEFAULT_RUN_AS_USER: Final = 1000
DEFAULT_RUN_AS_GROUP: Final = 1000
SECCOMP_RUNTIME_DEFAULT: Final = "RuntimeDefault"
SECCOMP_LOCALHOST: Final = "Localhost"
PROTOCOLS: Final = ("TCP", "UDP")
RETENTION_DELETE: Final = "Delete"
RETENTION_RETAIN: Final = "Retain"
DEFAULT_SCALE_DOWN_DELAY_SECONDS: Final = 300
DEFAULT_TARGET_UTILIZATION: Final = 80

# Sandbox phases.
PHASE_PENDING: Final = "Pending"
PHASE_CREATING: Final = "Creating"
PHASE_RUNNING: Final = "Running"
PHASE_TERMINATING: Final = "Terminating"
PHASE_TERMINATED: Final = "Terminated"
PHASE_FAILED: Final = "Failed"
SANDBOX_PHASES: Final = (
    PHASE_PENDING, PHASE_CREATING, PHASE_RUNNING, PHASE_TERMINATING, PHASE_TERMINATED, PHASE_FAILED,
)

# Address space for egress rules that only name a domain (original design: public internet,
# never the private ranges where cluster and cloud metadata services live).
PUBLIC_CIDR: Final = "0.0.0.0/0"
PRIVATE_CIDRS: Final = (
    "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16",
)

# Kubernetes name limits.
MAX_DNS_LABEL: Final = 63
MAX_DNS_SUBDOMAIN: Final = 253
MAX_LABEL_VALUE: Final = 63
